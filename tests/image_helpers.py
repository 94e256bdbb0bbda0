"""Building function images in tests, as faas-cli builds them (shared by the image and container-runtime tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

from aigc import stack
from aigc.container import base, build
from aigc.container.podman import Podman
from aigc.models import stage

from conftest import REPO


def build_function(name: str, podman: Podman, model_store: Path, tmp: Path) -> build.Built:
    """faas-cli's build of one stack.yml function, its handler copied so staging leaves the checkout alone."""
    fn = stack.load(REPO / "stack.yml").functions[name]
    handler = tmp / "handlers" / fn.handler.name
    if not handler.exists():
        shutil.copytree(fn.handler, handler, ignore=shutil.ignore_patterns(stage.FOLDER, "__pycache__"))
    fn.handler = handler
    stage.stage(stack.Stack(REPO / "stack.yml", "", {name: fn}), model_store)
    base.ensure(podman)
    return build.build(fn, REPO, podman, tmp / "build", tmp / "logs", tag=f"localhost/aigc-test-{name}:ci")
