"""Keep each template's copy of the runtime identical to `aigc/runtime`.

faas-cli copies only `template/<lang>/` plus the handler into a build context,
so every template carries the runtime itself. This is its one source of
truth: `aigc templates sync` writes the copies, and a test fails on drift.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
# what an instance imports at run time; the CLI, builders and runner stay out of images
RUNTIME_FILES = ["aigc/__init__.py", "aigc/runtime", "aigc/wasm"]
# built by `python wasm/build.py`; -fstrip makes them byte-identical wherever they are built,
# so the committed copies can be checked against a fresh build
WASM_BUILD = REPO / "wasm" / "build"
WASM_MODULES = ["tokenizer.wasm", "image.wasm"]
COPIED_SUFFIXES = ("*.py", "*.wasm")


def runtime_sources() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for entry in RUNTIME_FILES:
        src = REPO / entry
        paths = [src] if src.is_file() else sorted(p for p in src.rglob("*.py"))
        for path in paths:
            files[path.relative_to(REPO).as_posix()] = path
    for name in WASM_MODULES:
        built = WASM_BUILD / name
        if not built.is_file():
            raise FileNotFoundError(f"{built} is missing; run `python wasm/build.py` first")
        files[f"aigc/wasm/modules/{name}"] = built
    return files


def template_dirs() -> list[Path]:
    return sorted(p for p in TEMPLATES.iterdir() if (p / "template.yml").is_file())


def drift(template: Path) -> list[str]:
    """Files of the template's runtime copy that differ from the source, are missing, or are extra."""
    expected = runtime_sources()
    problems = [rel for rel, src in expected.items()
                if not (template / rel).is_file() or not filecmp.cmp(src, template / rel, shallow=False)]
    copy_root = template / "aigc"
    if copy_root.is_dir():
        for pattern in COPIED_SUFFIXES:
            for path in copy_root.rglob(pattern):
                rel = path.relative_to(template).as_posix()
                if rel not in expected:
                    problems.append(rel)
    return sorted(problems)


def sync(template: Path) -> None:
    shutil.rmtree(template / "aigc", ignore_errors=True)
    for rel, src in runtime_sources().items():
        dest = template / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
