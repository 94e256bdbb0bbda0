"""Assemble a function's build context as `faas-cli build` does.

faas-cli (go-sdk `builder.CreateBuildContext`): `./template/<lang>/` is copied
to `./build/<fn>/`; every entry of the handler folder except `build` and
`template` is copied over `./build/<fn>/function/`; then each stack-wide
`configuration.copy` path (inside the project, not the project itself) goes to
`./build/<fn>/function/<path>`. Symlinks are followed: the files they point at
are written, which is how the templates' `aigc/` links to the one runtime and
a handler's `model-store/` links to store entries reach an image.

Two uses, one layout:
- `image=True`: exactly that, for a container build (`aigc images build`).
- default, for a local process (`aigc run`, `aigc up`): symlinks inside the
  handler folder stay links to what they point at, so model weights and the
  fine-tuning corpus are not copied on every deploy (local instances read the
  store in place), and the Python files get their bytecode now, as the
  Dockerfiles' `compileall` step does, so no instance compiles them at start.
Both leave out `__pycache__` and `.pyc` files of the source tree.
"""

from __future__ import annotations

import compileall
import os
import shlex
import shutil
import sys
from pathlib import Path

import yaml

from .stack import StackFunction

_BYTECODE = shutil.ignore_patterns("__pycache__", "*.pyc")
HANDLER_SKIP = ("build", "template")  # faas-cli never copies these entries of a handler folder


def template_dir(root: Path, lang: str) -> Path:
    path = root / "template" / lang
    if not (path / "template.yml").is_file():
        raise FileNotFoundError(f"template {lang!r} not found at {path} (faas-cli looks in ./template/)")
    return path


def copy_path(root: Path, rel: str) -> Path:
    """A configuration.copy entry as faas-cli accepts it: inside the project, not the project itself."""
    source = (root / rel).resolve()
    if source == root.resolve():
        raise ValueError(f"configuration.copy: {rel!r} is the whole project")
    if not source.is_relative_to(root.resolve()):
        raise ValueError(f"configuration.copy: {rel!r} is outside the project at {root}")
    if not source.exists():
        raise FileNotFoundError(f"configuration.copy: {rel!r} does not exist")
    return source


def assemble(fn: StackFunction, root: Path, build_dir: Path | None = None, image: bool = False) -> Path:
    build_dir = build_dir or root / "build"
    context = build_dir / fn.name
    shutil.rmtree(context, ignore_errors=True)
    if not fn.handler.is_dir():
        raise FileNotFoundError(f"handler folder {fn.handler} of {fn.name!r} does not exist")
    shutil.copytree(template_dir(root, fn.lang), context, ignore=_BYTECODE)
    function = context / "function"
    for entry in sorted(fn.handler.iterdir()):
        if entry.name not in HANDLER_SKIP:
            _copy(entry, function / entry.name, keep_links=not image)
    for rel in fn.copy:
        _copy(copy_path(root, rel), function / os.path.normpath(rel), keep_links=not image)
    if not image:
        compile_bytecode(context)
    return context


def _copy(src: Path, dest: Path, keep_links: bool) -> None:
    if keep_links and src.is_symlink():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        dest.symlink_to(src.resolve())  # absolute: the link's relative form would not resolve from here
    elif src.is_dir():
        shutil.copytree(src, dest, ignore=_BYTECODE, dirs_exist_ok=True, symlinks=keep_links)
        if keep_links:
            _absolute_links(src, dest)
    elif src.suffix != ".pyc":
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def _absolute_links(src: Path, dest: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                target = (src / path.relative_to(dest)).resolve()
                path.unlink()
                path.symlink_to(target)


def compile_bytecode(context: Path) -> None:
    """What the Dockerfiles' `python -m compileall -q index.py aigc function` does. A file that
    does not compile is left to fail at import, where the instance reports it. Linked folders
    (store entries, the fine-tuning package) are the source tree's own: left alone."""
    if (context / "index.py").is_file():
        compileall.compile_file(context / "index.py", quiet=2)
    for folder in ("aigc", "function"):
        for dirpath, dirnames, filenames in os.walk(context / folder):
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
            for name in filenames:
                if name.endswith(".py") and not (Path(dirpath) / name).is_symlink():
                    compileall.compile_file(Path(dirpath) / name, quiet=2)


def entrypoint(context: Path) -> list[str]:
    """The template's fprocess, with `python` bound to this interpreter."""
    spec = yaml.safe_load((context / "template.yml").read_text())
    argv = shlex.split(spec["fprocess"])
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv
