"""Bake store entries into an image at build time: `python -m aigc.runtime.bake SRC DEST [NAME…]`.

The templates' Dockerfiles run this in their build stage. faas-cli's build
context is the template plus the handler folder, so a function's weights come
in as `function/model-store/<name>/` (placed there by `aigc models stage`).
Each NAME (the build arg AIGC_MODELS) must be a complete entry there; every
file is checked against its manifest's sha256 and size before the entry moves
to DEST, the image's store. What else SRC holds is dropped, so an image
carries only the models its function declares, and a build without them
fails here, naming the command that stages them, instead of shipping an
image that can never become ready.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from . import errors, remote, store


class BakeError(Exception):
    pass


def bake(src: Path, dest: Path, names: list[str]) -> list[str]:
    """Move the named entries from `src` to `dest`, verified; returns a line per entry baked."""
    done = []
    for name in names:
        try:
            remote.check_name(name)
        except errors.InvalidInput as exc:
            raise BakeError(f"AIGC_MODELS: {exc.message}") from None
        entry = src / name
        if not (entry / store.MANIFEST).is_file():
            raise BakeError(f"AIGC_MODELS names {name!r}, but the build context has no "
                            f"function/{src.name}/{name}/{store.MANIFEST}. Stage the weights first: "
                            f"`aigc models build {name} && aigc models stage` (then faas-cli build), "
                            "or build with --build-arg AIGC_MODELS= and pull or mount the model at start")
        try:
            stored = store.StoredModel(entry, json.loads((entry / store.MANIFEST).read_text()))
            problems = stored.verify()
        except (ValueError, KeyError, TypeError) as exc:
            problems = [f"unreadable manifest: {exc}"]
        if problems:
            raise BakeError(f"model {name!r} in the build context is damaged ({'; '.join(problems)}); "
                            "rebuild it with `aigc models build --force` and stage it again")
        dest.mkdir(parents=True, exist_ok=True)
        if (dest / name).exists():
            shutil.rmtree(dest / name)
        shutil.move(str(entry), dest / name)
        store.make_readable(dest / name)
        size = sum(f["size"] for f in stored.manifest["files"].values())
        done.append(f"baked {name}: {len(stored.manifest['files'])} files, {size / 1e6:.1f} MB, sha256 verified")
    shutil.rmtree(src, ignore_errors=True)
    return done


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m aigc.runtime.bake SRC DEST [NAME...]", file=sys.stderr)
        return 2
    try:
        names = [n for arg in argv[2:] for n in arg.split(",") if n]  # "a b" or "a,b"
        for line in bake(Path(argv[0]), Path(argv[1]), names):
            print(line)
    except BakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
