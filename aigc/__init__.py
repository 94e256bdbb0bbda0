"""AIGC Functions: AI-generation engines served as OpenFaaS/Knative functions.

`aigc.runtime` (with `aigc.wasm`) is the function runtime every template links
to; faas-cli writes it into each build context. Everything else (CLI, model
builders, gateway, local runner) stays on the developer's machine. Keep this
file import-free: every instance imports it at start.
"""

__version__ = "0.1.0"
