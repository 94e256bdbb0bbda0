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
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
from pathlib import Path

import wasmtime

from .errors import WasmError

MODULE_DIR_ENV = "AIGC_WASM_DIR"
CACHE_DIR_ENV = "AIGC_WASM_CACHE"
_MAGIC = b"AIGC-CWASM-1\n"

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

_lock = threading.Lock()
_pid = None
_engines: dict[bool, wasmtime.Engine] = {}
_modules: dict[tuple[str, bool], wasmtime.Module] = {}
# Objects inherited across fork are never freed in the child: their native
# state belongs to the parent.  Keeping a reference here prevents that.
_orphans: list = []


def module_dir() -> Path:
    """$AIGC_WASM_DIR, else the modules shipped beside this package (template copies carry
    them there), else the repo's build output (`python wasm/build.py`)."""
    env = os.environ.get(MODULE_DIR_ENV)
    if env:
        return Path(env)
    packaged = Path(__file__).resolve().parent / "modules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "wasm" / "build"


def cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "aigc" / "wasm"


def _runtime_id() -> str:
    """Identify the wasmtime build without importing importlib.metadata."""
    from wasmtime import _ffi

    lib = Path(_ffi.filename)
    st = lib.stat()
    versions = sorted(p.name for p in lib.parents[1].glob("wasmtime-*.dist-info"))
    return f"{versions};{lib.name};{st.st_size};{st.st_mtime_ns};{platform.machine()}"


def _check_process() -> None:
    global _pid, _engines, _modules
    pid = os.getpid()
    if _pid != pid:
        if _engines:
            _orphans.append((_engines, _modules))
        _pid, _engines, _modules = pid, {}, {}


def engine(fuel: bool = True) -> wasmtime.Engine:
    with _lock:
        _check_process()
        if fuel not in _engines:
            cfg = wasmtime.Config()
            for name, value in settings(fuel):
                setattr(cfg, name, value)
            _engines[fuel] = wasmtime.Engine(cfg)
        return _engines[fuel]


_digests: dict[tuple, str] = {}


def module_digest(name: str) -> str:
    """sha256 of a module's wasm file (its memory layout is part of snapshot keys)."""
    path = wasm_path(name)
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _digests:
        _digests[memo] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _digests[memo]


def cache_key(wasm: bytes, fuel: bool = True) -> str:
    h = hashlib.sha256()
    h.update(_runtime_id().encode())
    h.update(repr(settings(fuel)).encode())
    h.update(hashlib.sha256(wasm).digest())
    return h.hexdigest()[:40]


def cache_path(name: str, wasm: bytes, fuel: bool = True) -> Path:
    return cache_dir() / f"{name}-{cache_key(wasm, fuel)}.cwasm"


def read_blob_view(path: Path, key: str) -> memoryview | None:
    """Payload of a cache file written by write_blob for `key`, as a writable
    view (no copies of a multi-megabyte snapshot on the cold-start path), or
    None if the file is missing, foreign (other key) or damaged (checksum)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = bytearray(size)
            if f.readinto(buf) != size:
                return None
    except OSError:
        return None
    view = memoryview(buf)
    head = len(_MAGIC) + 40 + 32
    if (view[: len(_MAGIC)] == _MAGIC and view[len(_MAGIC): len(_MAGIC) + 40] == key.encode()
            and hashlib.sha256(view[head:]).digest() == view[head - 32: head]):
        return view[head:]
    return None


def read_blob(path: Path, key: str) -> bytes | None:
    view = read_blob_view(path, key)
    return None if view is None else bytes(view)


def write_blob(path: Path, key: str, payload: bytes) -> bool:
    """Atomically write a cache file; False (and no exception) if impossible."""
    if len(key) != 40:
        raise ValueError("cache keys are 40 hex digits")
    blob = _MAGIC + key.encode() + hashlib.sha256(payload).digest() + payload
    try:
        import tempfile  # only writers need it; keep it off the cold-start imports

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return True
    except OSError:
        # A read-only filesystem only costs the slow path on each cold start.
        stats["write_failed"] += 1
        return False


def _read_cache(path: Path, key: str, eng: wasmtime.Engine) -> wasmtime.Module | None:
    if not path.exists():
        return None  # a plain miss, not a rejection
    payload = read_blob_view(path, key)
    if payload is not None:
        try:
            module = wasmtime.Module.deserialize(eng, bytearray(payload))
            stats["deserialized"] += 1
            return module
        except wasmtime.WasmtimeError:
            pass
    stats["rejected"] += 1
    return None


def _write_cache(path: Path, key: str, payload: bytes) -> None:
    write_blob(path, key, payload)


def wasm_path(name: str) -> Path:
    path = module_dir() / f"{name}.wasm"
    if not path.is_file():
        raise WasmError(f"wasm module {path} not found; build it with `python wasm/build.py` "
                        f"(or point ${MODULE_DIR_ENV} at a folder holding {name}.wasm)")
    return path


def load_module(name: str, fuel: bool = True) -> wasmtime.Module:
    """The compiled module `name` for this process and engine configuration
    (cached in memory and on disk)."""
    eng = engine(fuel)
    with _lock:
        if (name, fuel) in _modules:
            return _modules[(name, fuel)]
        wasm = wasm_path(name).read_bytes()
        key = cache_key(wasm, fuel)
        path = cache_dir() / f"{name}-{key}.cwasm"
        module = _read_cache(path, key, eng)
        if module is None:
            try:
                module = wasmtime.Module(eng, wasm)
            except wasmtime.WasmtimeError as e:
                raise WasmError(f"invalid wasm module {name}: {e}") from None
            stats["compiled"] += 1
            _write_cache(path, key, bytes(module.serialize()))
        _modules[(name, fuel)] = module
        return module


def forget_modules() -> None:
    """Drop the in-process module memo (tests use it to force a cache read)."""
    with _lock:
        _modules.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _check_process()


os.register_at_fork(after_in_child=_after_fork_in_child)
