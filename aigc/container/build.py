"""Build a function's image as `faas-cli build -f stack.yml` does, with podman.

The context is faas-cli's (`buildctx.assemble(image=True)`: template, handler
folder, `configuration.copy`, links followed) and the build arguments are the
ones faas-cli passes: the function's `build_args` from stack.yml, and
ADDITIONAL_PACKAGE from its `build_options` as template.yml defines them.
Nothing else is added; what differs on a host without a registry is only how
podman runs (podman.py) and the base image's stand-in (base.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import buildctx
from ..stack import StackFunction
from . import base
from .podman import Podman


@dataclass
class Built:
    name: str
    image: str
    seconds: float
    size: int
    log: Path


def build_args(fn: StackFunction, root: Path) -> dict[str, str]:
    """What faas-cli passes as --build-arg for this function."""
    args = dict(fn.build_args)
    if fn.build_options:
        spec = yaml.safe_load((buildctx.template_dir(root, fn.lang) / "template.yml").read_text()) or {}
        options = {o["name"]: o.get("packages") or [] for o in spec.get("build_options") or []}
        unknown = [o for o in fn.build_options if o not in options]
        if unknown:
            raise ValueError(f"{fn.name}: build_options {unknown} are not in template {fn.lang}'s template.yml")
        packages = [p for o in fn.build_options for p in options[o]]
        args["ADDITIONAL_PACKAGE"] = " ".join(filter(None, [args.get("ADDITIONAL_PACKAGE", ""), *packages]))
    return args


def build(fn: StackFunction, root: Path, podman: Podman, build_dir: Path, log_dir: Path,
          extra_args: dict[str, str] | None = None, tag: str | None = None, no_cache: bool = False) -> Built:
    """Assemble the context and build it; `extra_args` are for experiments, never for the stack's images."""
    context = buildctx.assemble(fn, root, build_dir, image=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{fn.name}.build.log"
    image = tag or fn.image
    started = time.monotonic()
    podman.build(context, image, {**build_args(fn, root), **(extra_args or {})}, log,
                 volumes=base.build_volumes(podman), no_cache=no_cache)
    return Built(fn.name, image, time.monotonic() - started, podman.image_size(image), log)
