"""Snapshots of a loaded tokenizer: the wasm memory image plus host metadata.

Loading a tokenizer.json the slow way means parsing JSON in Python and then
building the vocabulary and merge tables in wasm.  All of that state lives in
linear memory [0, mem_top) (Zig globals included; the only wasm global is the
stack pointer, which is back at its initial value between calls), so after
the first load it is saved and later cold starts copy it back into a fresh
instance instead.  The key covers the tokenizer.json bytes and the exact
tokenizer.wasm build, whose memory layout the image depends on; files are
checksummed and written atomically like compiled modules (engine.read_blob).

On the cold-start path nothing large is hashed or copied twice: the source's
sha256 comes from engine's stat-keyed index, and a snapshot file that the index
records as verified (same stat signature) is read straight into the new
instance's linear memory (`Snapshot.read_into`).  Any other file is read and
checked in full first (`open_snapshot` falls back to `load`).

The metadata (str/int/None/dict/list only) is stored with `marshal`, which is
built in: `json` would add its import (regular expressions included) to every
cold start.  The marshal version is part of the key, and the bytes are only
unmarshalled from a file whose checksum was verified (now or, for an unchanged
file, earlier).
"""

from __future__ import annotations

import marshal
import os

from . import engine
from .errors import WasmError

FORMAT = b"aigc-tokenizer-snapshot-2;marshal-%d" % marshal.version
_HEAD = engine._HEAD
_MAX_META = 1 << 24


class SnapshotError(WasmError):
    """A snapshot file could not be read back (changed or damaged on disk)."""


def _key(source_sha256: bytes) -> str:
    h = engine.sha256(FORMAT)
    h.update(engine.module_digest("tokenizer").encode())
    h.update(source_sha256)
    return h.hexdigest()[:40]


def key_for(source: bytes) -> str:
    return _key(engine.sha256(source).digest())


def key_for_file(path) -> str:
    """Same as key_for(the file's bytes), without reading an unchanged file again."""
    return _key(engine.file_sha256(os.fspath(path)))


def _path(key: str) -> str:
    return os.path.join(engine._cache_dir(), f"tokenizer-state-{key}.snap")


def path_for(key: str):
    from pathlib import Path

    return Path(_path(key))


def _parse_meta(payload) -> tuple[dict, int]:
    """(metadata, offset of the image in the payload); ValueError if malformed."""
    n = int.from_bytes(payload[:4], "little")
    if len(payload) < 4 + n:
        raise ValueError("truncated metadata")
    try:
        meta = marshal.loads(payload[4:4 + n])
    except (EOFError, TypeError) as e:
        raise ValueError(f"bad metadata: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError("bad metadata")
    return meta, 4 + n


def load(key: str) -> tuple[dict, memoryview] | None:
    """(host metadata, memory image), both checked; the image is a view of the
    file's bytes.  None (and a counted rejection) for a damaged file."""
    path = _path(key)
    if not os.path.exists(path):
        return None
    payload = engine.read_blob_view(path, key)
    try:
        if payload is None:
            raise ValueError("bad checksum or key")
        meta, start = _parse_meta(payload)
        image = payload[start:]
        if not image:
            raise ValueError("empty image")
    except ValueError:
        engine.stats["snapshot_rejected"] += 1
        return None
    engine.stats["snapshot_loaded"] += 1
    return meta, image


class Snapshot:
    """A snapshot file the index records as verified, opened but with its image
    still on disk: `read_into` copies the image into wasm memory.  The file stays
    open, so re-instantiating after a trap reads the same file even if the cache
    entry was replaced meanwhile."""

    def __init__(self, path: str, f, st: os.stat_result, head: bytes, meta: dict, offset: int,
                 image_len: int):
        self.path, self._file, self._sig = path, f, engine.signature(st)
        self._head, self.meta = head, meta  # head: file bytes [0, offset)
        self.offset, self.image_len = offset, image_len

    def __len__(self) -> int:
        return self.image_len

    def close(self) -> None:
        self._file.close()

    def read_into(self, address: int, n: int) -> None:
        """Copy the image to `address` (n == len(self) writable bytes); verify the
        checksum too unless the file still has the signature recorded as verified.
        Raises SnapshotError if it cannot be read back intact."""
        import ctypes

        if n != self.image_len:
            raise ValueError("wrong destination size")
        fd = self._file.fileno()
        try:
            unchanged = engine.signature(os.fstat(fd)) == self._sig
            dest = memoryview((ctypes.c_char * n).from_address(address)).cast("B")
            done = 0
            while done < n:
                got = os.preadv(fd, [dest[done:]], self.offset + done)
                if got <= 0:
                    raise SnapshotError(f"tokenizer snapshot {self.path} is shorter than recorded")
                done += got
        except OSError as e:
            raise SnapshotError(f"cannot read tokenizer snapshot {self.path}: {e}") from None
        if unchanged and engine.signature(os.fstat(fd)) == self._sig:
            return
        h = engine.sha256(self._head[_HEAD:])
        h.update(dest)
        if h.digest() != self._head[_HEAD - 32:_HEAD]:
            raise SnapshotError(f"tokenizer snapshot {self.path} changed on disk while in use")


def open_snapshot(key: str) -> "Snapshot | tuple[dict, memoryview] | None":
    """The snapshot for `key`: a Snapshot (image still on disk) when the index
    records the file as verified with its current stat signature; otherwise
    load(key): (metadata, image) read and checked in full, the file then
    recorded as verified once it has settled; None if missing or damaged."""
    path = _path(key)
    try:
        f = open(path, "rb", buffering=0)
    except OSError:
        return None
    try:
        st = os.fstat(f.fileno())
        if engine.is_verified(path, st):
            head = os.pread(f.fileno(), 1 << 16, 0)
            magic = engine._MAGIC
            if head[:len(magic)] == magic and head[len(magic):len(magic) + 40] == key.encode():
                n = int.from_bytes(head[_HEAD:_HEAD + 4], "little")
                end = _HEAD + 4 + n
                if n < _MAX_META and len(head) < end:
                    head = os.pread(f.fileno(), end, 0)
                meta, start = _parse_meta(head[_HEAD:end])
                if _HEAD + start == end == len(head[:end]) and st.st_size > end:
                    snap = Snapshot(path, f, st, head[:end], meta, end, st.st_size - end)
                    f = None  # owned by the Snapshot now (counted as loaded once read)
                    return snap
    except (OSError, ValueError):
        pass
    finally:
        if f is not None:
            f.close()
    return load(key)


def save(key: str, meta: dict, image: bytes) -> bool:
    head = marshal.dumps(meta)
    return engine.write_blob(_path(key), key, len(head).to_bytes(4, "little") + head + image)
