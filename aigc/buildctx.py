"""Assemble a function's build context exactly as `faas-cli build` does.

`./template/<lang>/` is copied to `./build/<fn>/`, then the handler folder is
copied over `./build/<fn>/function/`. The result is what a container build
sees and what the local runner starts from. Like the templates' Dockerfiles,
assembly compiles the Python files to bytecode once, so no instance compiles
them at start (PYTHONDONTWRITEBYTECODE would make every start pay again).
"""

from __future__ import annotations

import compileall
import shlex
import shutil
import sys
from pathlib import Path

import yaml

from .stack import StackFunction

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "template")


def template_dir(root: Path, lang: str) -> Path:
    path = root / "template" / lang
    if not (path / "template.yml").is_file():
        raise FileNotFoundError(f"template {lang!r} not found at {path} (faas-cli looks in ./template/)")
    return path


def assemble(fn: StackFunction, root: Path, build_dir: Path | None = None) -> Path:
    build_dir = build_dir or root / "build"
    context = build_dir / fn.name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(template_dir(root, fn.lang), context, ignore=_SKIP)
    if not fn.handler.is_dir():
        raise FileNotFoundError(f"handler folder {fn.handler} of {fn.name!r} does not exist")
    shutil.copytree(fn.handler, context / "function", ignore=_SKIP, dirs_exist_ok=True)
    compile_bytecode(context)
    return context


def compile_bytecode(context: Path) -> None:
    """What the Dockerfiles' `python -m compileall -q index.py aigc function` does. A file that
    does not compile is left to fail at import, where the instance reports it."""
    if (context / "index.py").is_file():
        compileall.compile_file(context / "index.py", quiet=2)
    for folder in ("aigc", "function"):
        if (context / folder).is_dir():
            compileall.compile_dir(context / folder, quiet=2)


def entrypoint(context: Path) -> list[str]:
    """The template's fprocess, with `python` bound to this interpreter."""
    spec = yaml.safe_load((context / "template.yml").read_text())
    argv = shlex.split(spec["fprocess"])
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv
