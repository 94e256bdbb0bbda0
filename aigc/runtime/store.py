"""The local model store: one directory per model with a manifest.

    $AIGC_MODEL_STORE/<name>/manifest.json
    $AIGC_MODEL_STORE/<name>/<files…>

The manifest records every file's sha256 and size, the PyPI packages (and
versions, licences) it was built from, and the builder. Opening a model checks
sizes only (hashing 20 MB on every cold start would cost ~20 ms);
`verify()` checks hashes, and `aigc models verify` runs it.

Entries are published world-readable (0755 directories, 0644 files): a store
mounted read-only into a container is read by whatever uid the platform picks.
When an entry is missing and AIGC_MODEL_REMOTE is set, `open_model` pulls it
from the remote first (sha256-verified, see remote.py); `pulls` records what
each pull cost, for the instance's metrics and its cold-start log line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from . import errors
from .config import Settings

MANIFEST = "manifest.json"
# an entry is one folder directly in the store: no separators, no "..", nothing hidden
_ENTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,159}")


def check_entry(name: Any) -> str:
    """A store entry's name, or InvalidInput: every path built from a name given over HTTP goes through here."""
    if not isinstance(name, str) or not _ENTRY.fullmatch(name) or ".." in name:
        raise errors.InvalidInput(f"model name {name!r} is not a store entry name: letters, digits, '_', '.' "
                                  "and '-', starting with a letter or digit, no '..'")
    return name
MAX_PULL_RECORDS = 256  # adapters are pulled on demand: keep the record bounded
pulls: dict[str, dict[str, Any]] = {}  # name -> {"seconds", "bytes", "remote"} of this process's pulls
_pull_lock = threading.Lock()  # one pull at a time per process: two requests for one adapter download it once


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


def make_readable(path: Path) -> None:
    """0755 directories and 0644 files below `path` (mkdtemp makes 0700, some writers 0600)."""
    os.chmod(path, 0o755)
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def publish(work: Path, target: Path, replace: bool = True) -> bool:
    """Move a complete entry (manifest written last) into place, world-readable.

    With `replace` off an entry already at `target` wins (another process pulled
    it first) and False is returned; the caller removes `work`.
    """
    make_readable(work)
    if target.exists():
        if not replace:
            return False
        shutil.rmtree(target)
    try:
        work.rename(target)
    except OSError:
        if replace or not target.exists():
            raise
        return False
    return True


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
    path = root / check_entry(name)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file() and not _pull(name, root):
        raise errors.ModelNotFound(f"model {name!r} is not in the store at {root}; build it with "
                                   f"`aigc models build {name}`, set AIGC_MODEL_STORE, or set "
                                   "AIGC_MODEL_REMOTE to pull it")
    manifest = json.loads(manifest_path.read_text())
    for rel, entry in manifest["files"].items():
        file = path / rel
        if not file.is_file() or file.stat().st_size != entry["size"]:
            raise errors.ServerError(f"model {name!r} is damaged: {rel} is missing or has the wrong size; rebuild it")
    return StoredModel(path, manifest)


def _pull(name: str, root: Path) -> bool:
    """Fetch a missing entry from AIGC_MODEL_REMOTE into `root`; False when no remote is set."""
    from . import remote  # remote imports this module; boto3 only loads when a pull really happens

    found = remote.from_env()
    if found is None:
        return False
    with _pull_lock:
        if (root / name / MANIFEST).is_file():  # pulled by another thread meanwhile
            return True
        started = time.perf_counter()
        found.pull(name, root, replace=False)
        if len(pulls) >= MAX_PULL_RECORDS:
            pulls.pop(next(iter(pulls)))
        pulls[name] = {"seconds": time.perf_counter() - started, "bytes": found.last_pull["bytes"],
                       "remote": found.url}
    return True


def list_models(root: Path | None = None) -> list[StoredModel]:
    root = Path(root) if root else store_root()
    if not root.is_dir():
        return []
    return [open_model(p.name, root) for p in sorted(root.iterdir()) if (p / MANIFEST).is_file()]
