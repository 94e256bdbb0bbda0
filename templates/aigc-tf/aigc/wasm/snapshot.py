"""Snapshots of a loaded tokenizer: the wasm memory image plus host metadata.

Loading a tokenizer.json the slow way means parsing JSON in Python and then
building the vocabulary and merge tables in wasm.  All of that state lives in
linear memory [0, mem_top) (Zig globals included; the only wasm global is the
stack pointer, which is back at its initial value between calls), so after
the first load it is saved and later cold starts copy it back into a fresh
instance instead.  The key covers the tokenizer.json bytes and the exact
tokenizer.wasm build, whose memory layout the image depends on; files are
checksummed and written atomically like compiled modules (engine.read_blob).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from . import engine

FORMAT = b"aigc-tokenizer-snapshot-1"


def key_for(source: bytes) -> str:
    h = hashlib.sha256(FORMAT)
    h.update(engine.module_digest("tokenizer").encode())
    h.update(hashlib.sha256(source).digest())
    return h.hexdigest()[:40]


def path_for(key: str) -> Path:
    return engine.cache_dir() / f"tokenizer-state-{key}.snap"


def load(key: str) -> tuple[dict, memoryview] | None:
    """(host metadata, memory image); the image is a view of the file's bytes."""
    path = path_for(key)
    if not path.exists():
        return None
    payload = engine.read_blob_view(path, key)
    try:
        if payload is None:
            raise ValueError("bad checksum or key")
        (n,) = struct.unpack_from("<I", payload)
        meta = json.loads(bytes(payload[4:4 + n]))
        image = payload[4 + n:]
        if not image:
            raise ValueError("empty image")
    except (ValueError, struct.error):
        engine.stats["snapshot_rejected"] += 1
        return None
    engine.stats["snapshot_loaded"] += 1
    return meta, image


def save(key: str, meta: dict, image: bytes) -> bool:
    head = json.dumps(meta).encode()
    return engine.write_blob(path_for(key), key, struct.pack("<I", len(head)) + head + image)
