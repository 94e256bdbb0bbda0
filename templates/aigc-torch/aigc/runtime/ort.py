"""ONNX Runtime helpers shared by the ONNX functions. Import only inside `Model.load()`.

Sessions start from a cached optimized graph when one exists: ORT's full
graph optimization is about half of a small model's session creation, and its result
(NCHWc layouts, fused kernels) fits only the ORT build and CPU that made it,
so each cached graph is keyed by both, and by the model file's identity.
Under `AIGC_ORT_CACHE` (default `~/.cache/aigc/ort`; `off` disables it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from .model import TensorSpec

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


def _new_session(ort, path: Path, optimize: bool, save_to: Path | None = None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = engine_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise in function logs
    if not optimize:  # the graph was optimized when it was cached
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def session(path: Path):
    import onnxruntime as ort

    cached = cached_graph_path(path, ort)
    if cached is None:
        return _new_session(ort, path, optimize=True)
    if cached.is_file():
        try:
            return _new_session(ort, cached, optimize=False)
        except Exception:  # a damaged cache file: drop it and optimize the original again
            cached.unlink(missing_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")  # workers starting together
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        sess = _new_session(ort, path, optimize=True, save_to=partial)
        os.replace(partial, cached)
        return sess
    except Exception:  # a read-only or full cache costs the optimization, never the instance
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return _new_session(ort, path, optimize=True)  # a broken model raises its own error here


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
