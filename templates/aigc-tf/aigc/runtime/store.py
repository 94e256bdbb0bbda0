"""The local model store: one directory per model with a manifest.

    $AIGC_MODEL_STORE/<name>/manifest.json
    $AIGC_MODEL_STORE/<name>/<files…>

The manifest records every file's sha256 and size, the PyPI packages (and
versions, licences) it was built from, and the builder. Opening a model checks
sizes only (hashing 20 MB on every cold start would cost ~20 ms);
`verify()` checks hashes, and `aigc models verify` runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from . import errors
from .config import Settings

MANIFEST = "manifest.json"


def store_root() -> Path:
    return Settings.from_env().model_store


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(model_dir: Path) -> dict[str, dict[str, Any]]:
    entries = {}
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(model_dir).as_posix()
            entries[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return entries


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = dict(manifest, files=file_entries(model_dir))
    tmp = model_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, model_dir / MANIFEST)  # a half-built model never has a manifest
    return manifest


class StoredModel:
    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def file(self, rel: str) -> Path:
        if rel not in self.manifest["files"]:
            raise errors.ServerError(f"model {self.name!r} has no file {rel!r} in its manifest")
        return self.path / rel

    def verify(self) -> list[str]:
        """Problems found by re-hashing every file; empty when the model is intact."""
        problems = []
        for rel, entry in self.manifest["files"].items():
            path = self.path / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(path) != entry["sha256"]:
                problems.append(f"{rel}: sha256 mismatch")
        return problems


def open_model(name: str, root: Path | None = None) -> StoredModel:
    root = Path(root) if root else store_root()
    path = root / name
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise errors.ModelNotFound(f"model {name!r} is not in the store at {root}; build it with "
                                   f"`aigc models build {name}` or set AIGC_MODEL_STORE")
    manifest = json.loads(manifest_path.read_text())
    for rel, entry in manifest["files"].items():
        file = path / rel
        if not file.is_file() or file.stat().st_size != entry["size"]:
            raise errors.ServerError(f"model {name!r} is damaged: {rel} is missing or has the wrong size; rebuild it")
    return StoredModel(path, manifest)


def list_models(root: Path | None = None) -> list[StoredModel]:
    root = Path(root) if root else store_root()
    if not root.is_dir():
        return []
    return [open_model(p.name, root) for p in sorted(root.iterdir()) if (p / MANIFEST).is_file()]
