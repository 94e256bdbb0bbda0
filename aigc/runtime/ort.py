"""ONNX Runtime helpers shared by the ONNX functions. Import only inside `Model.load()`.

Sessions start from a cached optimized graph when one exists: ORT's full
graph optimization is about half of a small model's session creation, and its result
(NCHWc layouts, fused kernels) fits only the ORT build and CPU that made it,
so each cached graph is keyed by both, and by the model file's identity.
Under `AIGC_ORT_CACHE` (default `~/.cache/aigc/ort`; `off` disables it).

In a zygote (zygote.py) sessions are made on one thread: ORT's intra-op pool
threads would not exist in a forked replica. Forked replicas serve from those
sessions at once and `after_fork()` re-creates them with the full thread count
in the background a moment later (RETHREAD_DELAY: done at once, it would take
a core from the replica's first requests), swapping each in when it is ready.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from .model import TensorSpec

log = logging.getLogger("aigc.runtime")

_OIP_OF_ORT = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL", "tensor(string)": "BYTES",
}


def engine_threads() -> int:
    """Intra-op threads: AIGC_ENGINE_THREADS, else the CPUs this process may use."""
    raw = os.environ.get("AIGC_ENGINE_THREADS")
    if raw:
        n = int(raw)
        if n < 1:
            raise ValueError(f"AIGC_ENGINE_THREADS must be >= 1, got {n}")
        return n
    return len(os.sched_getaffinity(0))


CACHE_ENV = "AIGC_ORT_CACHE"
_CACHE_MAX_BYTES = 1 << 30  # protobuf cannot hold a graph near 2 GiB; such models load uncached


def cache_dir() -> Path | None:
    """Where optimized graphs are kept, or None when caching is off or the CPU cannot be identified."""
    raw = os.environ.get(CACHE_ENV, "")
    if raw.lower() == "off" or not os.path.isfile("/proc/cpuinfo"):
        return None
    return Path(raw) if raw else Path.home() / ".cache" / "aigc" / "ort"


def _cpu_identity() -> bytes:
    """Vendor, model and feature flags of the first CPU: what decides MLAS's kernels and block sizes."""
    with open("/proc/cpuinfo", "rb") as f:
        first = f.read(16384).split(b"\n\n", 1)[0]
    keep = (b"vendor_id", b"cpu family", b"model", b"model name", b"flags")
    return b"\n".join(line for line in first.splitlines() if line.split(b"\t", 1)[0] in keep)


def cached_graph_path(path: Path, ort) -> Path | None:
    """The cache file for `path` under this ORT build and CPU, or None when it must not be cached."""
    folder = cache_dir()
    st = os.stat(path)
    if folder is None or st.st_size > _CACHE_MAX_BYTES:
        return None
    key = hashlib.sha256()
    for part in (ort.__version__, ort.get_device(), os.path.abspath(path), st.st_dev, st.st_ino, st.st_size,
                 st.st_mtime_ns):
        key.update(f"{part}\0".encode())
    key.update(_cpu_identity())
    return folder / f"{Path(path).parent.name}-{Path(path).stem}-{key.hexdigest()[:32]}.onnx"


def _new_session(ort, path: Path, threads: int, optimize: bool, save_to: Path | None = None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise in function logs
    if not optimize:  # the graph was optimized when it was cached
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _open(path: Path, threads: int):
    import onnxruntime as ort

    cached = cached_graph_path(path, ort)
    if cached is None:
        return _new_session(ort, path, threads, optimize=True)
    if cached.is_file():
        try:
            return _new_session(ort, cached, threads, optimize=False)
        except Exception:  # a damaged cache file: drop it and optimize the original again
            cached.unlink(missing_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")  # workers starting together
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        sess = _new_session(ort, path, threads, optimize=True, save_to=partial)
        os.replace(partial, cached)
        return sess
    except Exception:  # a read-only or full cache costs the optimization, never the instance
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return _new_session(ort, path, threads, optimize=True)  # a broken model raises its own error here


class Session:
    """An InferenceSession (every attribute passes through) that can be re-created with more threads."""

    def __init__(self, path: Path, threads: int):
        self.path, self.threads = path, threads
        self._inner = _open(path, threads)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def rethread(self, threads: int) -> None:
        # one attribute store: a request already in run() finishes on the old session
        self._inner = _open(self.path, threads)
        self.threads = threads


RETHREAD_DELAY = 1.0  # seconds
_before_fork = False
_single_threaded: list[Session] = []  # made in a zygote: re-created with engine_threads() after the fork


def prepare_fork() -> None:
    """In a zygote, before models load: sessions made from now on use one thread (no pool to lose in a fork)."""
    global _before_fork
    _before_fork = True


def after_fork(delay: float = RETHREAD_DELAY) -> threading.Thread | None:
    """In a forked replica: re-create the zygote's sessions with the replica's threads, in the background."""
    global _before_fork
    _before_fork = False
    todo = [s for s in _single_threaded if engine_threads() > s.threads]
    _single_threaded.clear()
    if not todo:
        return None

    def rethread():
        time.sleep(delay)
        for s in todo:
            try:
                s.rethread(engine_threads())
            except Exception:  # the one-thread session still serves
                log.exception("could not re-create %s with %d threads", s.path, engine_threads())

    thread = threading.Thread(target=rethread, name="ort-rethread", daemon=True)
    thread.start()
    return thread


def session(path: Path) -> Session:
    if not _before_fork:
        return Session(path, engine_threads())
    made = Session(path, 1)
    _single_threaded.append(made)
    return made


def tensor_specs(nodes) -> tuple[TensorSpec, ...]:
    """OIP metadata from ORT's inputs/outputs; symbolic dimensions become -1."""
    specs = []
    for node in nodes:
        datatype = _OIP_OF_ORT.get(node.type)
        if datatype is None:
            raise ValueError(f"ONNX tensor {node.name!r} has type {node.type}, which OIP cannot carry")
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
        specs.append(TensorSpec(node.name, datatype, shape))
    return tuple(specs)
