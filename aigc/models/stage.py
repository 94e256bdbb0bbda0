"""Stage store entries in handler folders, so `faas-cli build` bakes them into the images.

faas-cli builds an image from the template plus the handler folder (plus the
stack-wide `configuration.copy` paths, which every function would receive), so
a function's weights must sit in its own handler folder. The build arg
AIGC_MODELS in stack.yml names the entries each image carries; this links each
one as `<handler>/model-store/<name>` to `$AIGC_MODEL_STORE/<name>`. faas-cli
follows links and writes the files into the build context, where the
Dockerfile's build stage verifies them (aigc.runtime.bake). Links cost no disk,
follow rebuilds of the store, and are git-ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..runtime import remote, store
from ..stack import Stack

FOLDER = "model-store"
BUILD_ARG = "AIGC_MODELS"


def declared(st: Stack) -> dict[Path, set[str]]:
    """Handler folder -> the store entries its functions' images carry."""
    wanted: dict[Path, set[str]] = {}
    for fn in st.functions.values():
        names = {n for n in fn.build_args.get(BUILD_ARG, "").replace(",", " ").split() if n}
        for name in names:
            remote.check_name(name)  # a name becomes a path below the handler folder
        wanted.setdefault(fn.handler, set()).update(names)
    return wanted


def stage(st: Stack, root: Path | None = None) -> list[str]:
    """Link every declared entry into its handler folder; drop links nothing declares. Lines to print."""
    root = Path(root) if root else store.store_root()
    lines = []
    for handler, names in sorted(declared(st).items()):
        folder = handler / FOLDER
        for stale in sorted(folder.iterdir()) if folder.is_dir() else []:
            if stale.is_symlink() and stale.name not in names:
                stale.unlink()
                lines.append(f"unstaged {stale}")
        for name in sorted(names):
            entry = store.open_model(name, root)  # refuses a missing or damaged entry (or pulls it)
            link = folder / name
            if link.is_symlink() and Path(os.readlink(link)) == entry.path.resolve():
                lines.append(f"staged {link} (unchanged)")
                continue
            if link.exists() and not link.is_symlink():
                raise FileExistsError(f"{link} is a real folder, not a staged link; move it away first")
            folder.mkdir(exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(entry.path.resolve())
            lines.append(f"staged {link} -> {entry.path.resolve()}")
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return lines
