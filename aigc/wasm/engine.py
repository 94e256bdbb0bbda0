"""Per-process wasmtime engine and a precompiled-module cache.

Compiling a module with Cranelift costs far more than loading it, so compiled
code is stored as `.cwasm` under `$AIGC_WASM_CACHE` (default
`~/.cache/aigc/wasm`).  A cache file is used only when all of these hold:

* its name and header carry the key for this exact wasm (sha256), this
  wasmtime build and this engine configuration (a module compiled without
  fuel metering is not valid for an engine that meters fuel);
* the payload's sha256 matches the header, so a truncated or corrupted file
  is never handed to wasmtime (deserializing trusts the bytes as native code).

Anything else falls back to compiling, and the result is written atomically
(temporary file + rename), so readers never see a half-written file.

Checksums of large files cost milliseconds on every cold start, so a file that
passed verification is recorded in a small index (`verified-index.bin` in the
cache folder) under its stat signature: device, inode, size, mtime and ctime
in nanoseconds.  While that signature is unchanged the file is used without
hashing it again; any rewrite or in-place change gives the file a new ctime
(which no utility can set back), so it is verified again.  As in git's "racy"
rule, a file is only recorded once its timestamps are more than a second
older than the moment of recording, so a change within the filesystem's
timestamp granularity cannot keep the old signature.  The same index
remembers the sha256 of source files (tokenizer.json, *.wasm) by signature.

wasmtime is reached through `capi` (a small ctypes binding to the wheel's
shared library), and this module avoids pathlib, hashlib-on-import, threading
and platform: each costs milliseconds of a tokenizer's cold start.  The public
helpers that return paths still return `pathlib.Path`, imported when called.
"""

from __future__ import annotations

import _thread
import os

from . import capi
from .errors import WasmError

MODULE_DIR_ENV = "AIGC_WASM_DIR"
CACHE_DIR_ENV = "AIGC_WASM_CACHE"
_MAGIC = b"AIGC-CWASM-1\n"
_HEAD = len(_MAGIC) + 40 + 32  # magic, key, sha256 of the payload

# Everything that changes the compiled code must be part of the cache key.
# Metered (fuel=True) is the default: every call then has a bounded cost.
# The unmetered configuration exists to measure what metering costs
# (bench/wasm_bench.py) and for trusted batch jobs; it compiles different code,
# so it has its own engine, in-memory modules and cache files.
ENGINE_SETTINGS = (("consume_fuel", True), ("cranelift_opt_level", "speed"))
UNMETERED_SETTINGS = (("consume_fuel", False), ("cranelift_opt_level", "speed"))


def settings(fuel: bool = True) -> tuple:
    return ENGINE_SETTINGS if fuel else UNMETERED_SETTINGS

# Counters so callers and tests can see what a load did.
stats = {"compiled": 0, "deserialized": 0, "rejected": 0, "write_failed": 0,
         "snapshot_loaded": 0, "snapshot_rejected": 0}

_lock = _thread.allocate_lock()
_pid = None
_engines: dict[bool, capi.Engine] = {}
_modules: dict[tuple[str, bool], capi.Module] = {}
_HERE = os.path.dirname(os.path.realpath(__file__))


def sha256(data):
    """sha256 object of `data` (bytes or any buffer).  hashlib loads OpenSSL
    (milliseconds), so small inputs on the cold-start path use the builtin
    _sha256 module unless hashlib is already loaded; both give the same digest."""
    import sys

    if "hashlib" not in sys.modules and memoryview(data).nbytes <= 1 << 18:
        try:
            import _sha256

            return _sha256.sha256(data)
        except ImportError:
            pass
    import hashlib

    return hashlib.sha256(data)


def _module_dir() -> str:
    env = os.environ.get(MODULE_DIR_ENV)
    if env:
        return env
    packaged = os.path.join(_HERE, "modules")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(os.path.dirname(_HERE)), "wasm", "build")


def _cache_dir() -> str:
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "aigc", "wasm")


def module_dir():
    """$AIGC_WASM_DIR, else the modules shipped beside this package (aigc/wasm/modules, which
    `python wasm/build.py` keeps current), else the repo's build output."""
    from pathlib import Path

    return Path(_module_dir())


def cache_dir():
    from pathlib import Path

    return Path(_cache_dir())


_runtime = None


def _runtime_id() -> str:
    """Identify the wasmtime build (the shared library capi loads)."""
    global _runtime
    if _runtime is None:
        st = os.stat(capi.LIBRARY)
        _runtime = (f"{capi.DIST_INFOS};{os.path.basename(capi.LIBRARY)};{st.st_size};"
                    f"{st.st_mtime_ns};{os.uname().machine}")
    return _runtime


def _check_process() -> None:
    global _pid, _engines, _modules
    pid = os.getpid()
    if _pid != pid:
        # What a forked child inherited belongs to the parent: capi objects never
        # free native state in a process other than their creator's.
        _pid, _engines, _modules = pid, {}, {}


def engine(fuel: bool = True) -> capi.Engine:
    with _lock:
        _check_process()
        if fuel not in _engines:
            _engines[fuel] = capi.Engine(**dict(settings(fuel)))
        return _engines[fuel]


# -- stat-keyed index of verified files and source digests --------------------------------

INDEX_NAME = "verified-index.bin"
_INDEX_KEY = "aigc-wasm-verified-index-1".ljust(40, "-")
_INDEX_MAX = 256
RACY_NS = 1_000_000_000  # record only files whose timestamps are older than this
_index_memo: tuple[str, dict] | None = None  # (index file, entries) read by this process
_digests: dict[str, tuple] = {}


def signature(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _settled(st: os.stat_result) -> bool:
    import time

    return time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS


def _index_path() -> str:
    return os.path.join(_cache_dir(), INDEX_NAME)


def _index_read() -> dict:
    import marshal

    view = read_blob_view(_index_path(), _INDEX_KEY, _trust=False)
    try:
        entries = marshal.loads(view) if view is not None else {}
    except (ValueError, EOFError, TypeError):
        entries = {}
    return entries if isinstance(entries, dict) else {}


def _index() -> dict:
    global _index_memo
    path = _index_path()
    if _index_memo is None or _index_memo[0] != path:
        _index_memo = (path, _index_read())
    return _index_memo[1]


def _index_put(key: tuple, value) -> None:
    """Add one entry (read-modify-write; a concurrent writer may drop it, which
    only costs one more verification later)."""
    import marshal

    global _index_memo
    entries = _index_read()
    entries.pop(key, None)
    entries[key] = value
    while len(entries) > _INDEX_MAX:
        del entries[next(iter(entries))]
    _index_memo = (_index_path(), entries)
    write_blob(_index_path(), _INDEX_KEY, marshal.dumps(entries), _count=False)


def forget_index() -> None:
    """Drop the in-process copy of the index and digests (tests)."""
    global _index_memo
    _index_memo = None
    _digests.clear()


def is_verified(path: str, st: os.stat_result) -> bool:
    return _index().get(("verified", os.path.abspath(path))) == signature(st)


def mark_verified(path: str, st: os.stat_result) -> None:
    """Record that the file at `path` with stat `st` (taken before it was read)
    passed its checksum."""
    if _settled(st) and not is_verified(path, st):
        _index_put(("verified", os.path.abspath(path)), signature(st))


def file_sha256(path: str) -> bytes:
    """sha256 of a file, remembered by stat signature (in this process, and in
    the index once the file has settled)."""
    path = os.path.abspath(path)
    st = os.stat(path)
    sig = signature(st)
    memo = _digests.get(path)
    if memo is None or memo[0] != sig:
        memo = _index().get(("sha256", path))
    if memo is not None and memo[0] == sig:
        _digests[path] = memo
        return memo[1]
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        digest = sha256(f.read()).digest()
        unchanged = signature(os.fstat(f.fileno())) == signature(before)
    if unchanged:
        _digests[path] = (signature(before), digest)
        if _settled(before):
            _index_put(("sha256", path), (signature(before), digest))
    return digest


def module_digest(name: str) -> str:
    """sha256 of a module's wasm file (its memory layout is part of snapshot keys)."""
    return file_sha256(_wasm_path(name)).hex()


def cache_key(wasm: bytes, fuel: bool = True) -> str:
    return _key(sha256(wasm).digest(), fuel)


def _key(wasm_sha256: bytes, fuel: bool) -> str:
    h = sha256(_runtime_id().encode())
    h.update(repr(settings(fuel)).encode())
    h.update(wasm_sha256)
    return h.hexdigest()[:40]


def cache_path(name: str, wasm: bytes, fuel: bool = True):
    return cache_dir() / f"{name}-{cache_key(wasm, fuel)}.cwasm"


def read_blob_view(path, key: str, *, _trust: bool = True) -> memoryview | None:
    """Payload of a cache file written by write_blob for `key`, as a writable
    view (no copies of a multi-megabyte snapshot on the cold-start path), or
    None if the file is missing, foreign (other key) or damaged (checksum).
    The checksum is skipped for a file the index records as verified with the
    same stat signature."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            buf = bytearray(st.st_size)
            if f.readinto(buf) != st.st_size:
                return None
    except OSError:
        return None
    view = memoryview(buf)
    if view[: len(_MAGIC)] != _MAGIC or view[len(_MAGIC): len(_MAGIC) + 40] != key.encode():
        return None
    if _trust and is_verified(path, st):
        return view[_HEAD:]
    if sha256(view[_HEAD:]).digest() != view[_HEAD - 32: _HEAD]:
        return None
    if _trust:
        mark_verified(path, st)
    return view[_HEAD:]


def read_blob(path, key: str) -> bytes | None:
    view = read_blob_view(path, key)
    return None if view is None else bytes(view)


def write_blob(path, key: str, payload, *, _count: bool = True) -> bool:
    """Atomically write a cache file; False (and no exception) if impossible."""
    if len(key) != 40:
        raise ValueError("cache keys are 40 hex digits")
    path = os.fspath(path)
    head = _MAGIC + key.encode() + sha256(payload).digest()
    try:
        import tempfile  # only writers need it; keep it off the cold-start imports

        os.makedirs(os.path.dirname(path) or os.curdir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or os.curdir,
                                   prefix=os.path.basename(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(head)
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return True
    except OSError:
        # A read-only filesystem only costs the slow path on each cold start.
        if _count:
            stats["write_failed"] += 1
        return False


def _read_cache(path, key: str, eng: capi.Engine) -> capi.Module | None:
    if not os.path.exists(path):
        return None  # a plain miss, not a rejection
    payload = read_blob_view(path, key)
    if payload is not None:
        try:
            module = capi.Module.deserialize(eng, payload)
            stats["deserialized"] += 1
            return module
        except capi.Error:
            pass
    stats["rejected"] += 1
    return None


def _write_cache(path, key: str, payload: bytes) -> None:
    write_blob(path, key, payload)


def _wasm_path(name: str) -> str:
    path = os.path.join(_module_dir(), f"{name}.wasm")
    if not os.path.isfile(path):
        raise WasmError(f"wasm module {path} not found; build it with `python wasm/build.py` "
                        f"(or point ${MODULE_DIR_ENV} at a folder holding {name}.wasm)")
    return path


def wasm_path(name: str):
    from pathlib import Path

    return Path(_wasm_path(name))


def load_module(name: str, fuel: bool = True) -> capi.Module:
    """The compiled module `name` for this process and engine configuration
    (cached in memory and on disk)."""
    eng = engine(fuel)
    with _lock:
        if (name, fuel) in _modules:
            return _modules[(name, fuel)]
        source = _wasm_path(name)
        key = _key(file_sha256(source), fuel)
        path = os.path.join(_cache_dir(), f"{name}-{key}.cwasm")
        module = _read_cache(path, key, eng)
        if module is None:
            with open(source, "rb") as f:
                wasm = f.read()
            if cache_key(wasm, fuel) != key:  # changed since it was hashed: start over
                key = cache_key(wasm, fuel)
                path = os.path.join(_cache_dir(), f"{name}-{key}.cwasm")
            try:
                module = capi.Module.compile(eng, wasm)
            except capi.Error as e:
                raise WasmError(f"invalid wasm module {name}: {e}") from None
            stats["compiled"] += 1
            _write_cache(path, key, module.serialize())
        _modules[(name, fuel)] = module
        return module


def forget_modules() -> None:
    """Drop the in-process module memo (tests use it to force a cache read)."""
    with _lock:
        _modules.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = _thread.allocate_lock()
    _check_process()


os.register_at_fork(after_in_child=_after_fork_in_child)
