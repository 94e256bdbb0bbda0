"""AIGC Functions: AI-generation engines served as OpenFaaS/Knative functions.

`aigc.runtime` is the function runtime copied into every template's build
context; everything else (CLI, model builders, local runner) stays on the
developer's machine. Keep this file import-free so the runtime copy stays cheap.
"""

__version__ = "0.1.0"
