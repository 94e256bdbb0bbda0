"""ONNX Runtime helpers shared by the ONNX functions. Import only inside `Model.load()`."""

from __future__ import annotations

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


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = engine_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise in function logs
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


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
