"""Open Inference Protocol (v2) REST: tensors to numpy and back.

Shapes follow the spec: `data` is row-major, flat or nested; `shape` says how
to read it. Tensors may instead travel as raw bytes after the JSON header (the
binary tensor data extension, oip_binary). Every check names the tensor and
what to change, because an OIP client has no other way to learn why a request
was refused.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from typing import Any, Iterable

import numpy as np

from . import errors, oip_binary
from .model import Model, TensorSpec

NUMPY_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
_DATATYPE_OF = {np.dtype(t).str: name for name, t in NUMPY_TYPES.items() if name != "BYTES"}

log = logging.getLogger("aigc.runtime")


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPE_OF[array.dtype.str]
    except KeyError:
        raise errors.ServerError(f"output dtype {array.dtype} has no OIP datatype") from None


def _shape_matches(spec: tuple[int, ...], shape: list[int]) -> bool:
    return len(spec) == len(shape) and all(s in (-1, d) for s, d in zip(spec, shape))


def _flatten(data: Any) -> list:
    """Row-major values of a nested list, a level at a time in C (a 1x3x224x224 tensor is 672 lists of 224)."""
    if not isinstance(data, list):
        return [data]
    while data and isinstance(data[0], list):
        if not all(isinstance(item, list) for item in data):
            raise errors.InvalidInput("tensor data mixes lists and values at one level; send a flat list or "
                                      "lists nested as the shape says")
        data = list(itertools.chain.from_iterable(data))
    return data


def _decode_values(name: str, datatype: str, values: list) -> np.ndarray:
    kinds = set(map(type, values))  # one pass in C, instead of an isinstance() per element
    if datatype == "BYTES":
        if not kinds <= {str}:
            raise errors.InvalidInput(f"input {name!r}: BYTES data must be strings")
        out = np.empty(len(values), dtype=object)
        out[:] = [v.encode("utf-8") for v in values]
        return out
    if datatype == "BOOL":
        if not kinds <= {bool}:
            raise errors.InvalidInput(f"input {name!r}: BOOL data must be true/false")
        return np.asarray(values, dtype=np.bool_)
    if not kinds <= {int, float}:  # bool is its own type here: true/false are not numbers
        raise errors.InvalidInput(f"input {name!r}: {datatype} data must be numbers")
    target = np.dtype(NUMPY_TYPES[datatype])
    if target.kind in "iu":
        info = np.iinfo(target)
        try:
            exact = np.asarray(values, dtype=np.float64 if float in kinds else np.int64)
        except OverflowError:
            exact = None
        if exact is None or (exact.size and (exact.min() < info.min or exact.max() > info.max)):
            raise errors.InvalidInput(f"input {name!r}: values must lie in [{info.min}, {info.max}] for {datatype}")
        if float in kinds and not np.array_equal(exact, np.floor(exact)):
            raise errors.InvalidInput(f"input {name!r}: {datatype} data must be whole numbers")
        return exact.astype(target)
    try:
        exact = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        exact = np.array([math.inf])
    if not np.isfinite(exact).all():
        raise errors.InvalidInput(f"input {name!r}: {datatype} data must be finite numbers")
    out = exact.astype(target)
    if not np.isfinite(out).all():
        raise errors.InvalidInput(f"input {name!r}: values are beyond the range of {datatype}")
    return out


def decode_inputs(body: Any, specs: Iterable[TensorSpec], binary: bytes | memoryview = b""
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Validate an infer request against the model's input specs. `binary` is what followed the JSON header
    (the binary extension): the inputs with parameters.binary_data_size take their bytes from it, in order."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("infer request must be a JSON object with an 'inputs' list")
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise errors.InvalidInput("infer request needs a non-empty 'inputs' list")
    by_name = {s.name: s for s in specs}
    decoded: dict[str, np.ndarray] = {}
    binary, offset = memoryview(binary), 0
    for t in tensors:
        if not isinstance(t, dict) or not all(k in t for k in ("name", "shape", "datatype")):
            raise errors.InvalidInput("each input needs 'name', 'shape', 'datatype' and 'data' (or "
                                      "parameters.binary_data_size with the bytes after the JSON header)")
        name, shape, datatype = t["name"], t["shape"], t["datatype"]
        if not isinstance(name, str):
            raise errors.InvalidInput(f"each input's 'name' must be a string, got {type(name).__name__}")
        size = oip_binary.binary_size(name, t)
        if size is None and "data" not in t:
            raise errors.InvalidInput(f"input {name!r} needs 'data', or parameters.binary_data_size with its bytes "
                                      "after the JSON header")
        spec = by_name.get(name)
        if spec is None:
            raise errors.InvalidInput(f"unknown input {name!r}; this model takes {sorted(by_name)}")
        if name in decoded:
            raise errors.InvalidInput(f"input {name!r} appears twice")
        if datatype != spec.datatype:
            raise errors.InvalidInput(f"input {name!r} has datatype {datatype!r}; this model expects {spec.datatype}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
            raise errors.InvalidInput(f"input {name!r}: shape must be a list of positive integers (no empty tensors)")
        if not _shape_matches(spec.shape, shape):
            raise errors.InvalidInput(f"input {name!r} has shape {shape}; this model expects {list(spec.shape)} (-1 = any size)")
        if size is not None:
            if offset + size > len(binary):
                raise errors.InvalidInput(f"input {name!r} declares {size} bytes of binary data, but only "
                                          f"{len(binary) - offset} follow the JSON header")
            decoded[name] = oip_binary.decode(name, datatype, shape, binary[offset:offset + size],
                                              NUMPY_TYPES[datatype])
            offset += size
            continue
        values = _flatten(t["data"])
        if len(values) != math.prod(shape):
            raise errors.InvalidInput(f"input {name!r}: shape {shape} needs {math.prod(shape)} values, got {len(values)}")
        decoded[name] = _decode_values(name, datatype, values).reshape(shape)
    if offset != len(binary):
        raise errors.InvalidInput(f"{len(binary)} bytes follow the JSON header, but the inputs' "
                                  f"parameters.binary_data_size add up to {offset}")
    missing = [s.name for s in specs if not s.optional and s.name not in decoded]
    if missing:
        raise errors.InvalidInput(f"missing input(s) {missing}")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise errors.InvalidInput("'parameters' must be an object")
    return decoded, parameters


def _requested_outputs(body: dict, specs: tuple[TensorSpec, ...]) -> dict[str, Any] | None:
    """The outputs asked for, each with its parameters, or None for all of them."""
    requested = body.get("outputs")
    if requested is None:
        return None
    names = {s.name for s in specs}
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise errors.InvalidInput("'outputs' must be a list of objects, each with a string 'name'")
    wanted = {o["name"]: o.get("parameters") for o in requested}
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise errors.InvalidInput(f"unknown output(s) {unknown}; this model returns {sorted(names)}")
    for name, params in wanted.items():
        if params is not None and not isinstance(params, dict):
            raise errors.InvalidInput(f"output {name!r}: 'parameters' must be an object")
        if params and ("classification" in params or "class_count" in params):
            raise errors.InvalidInput(f"output {name!r}: the classification extension is not supported; "
                                      "ask for the whole tensor")
    return wanted


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """An output as JSON: numeric data stays an array for the serializer (orjson writes it in C)."""
    array = np.asarray(array)
    datatype = datatype_of(array)
    flat = array.reshape(-1)
    if datatype == "BYTES":
        data: Any = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    else:
        data = np.ascontiguousarray(flat)
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def encode_binary(name: str, array: np.ndarray) -> tuple[dict[str, Any], bytes]:
    array = np.asarray(array)
    raw = oip_binary.encode(array)
    return ({"name": name, "datatype": datatype_of(array), "shape": list(array.shape),
             "parameters": {"binary_data_size": len(raw)}}, raw)


def _engine_refused(exc: Exception) -> bool:
    """ONNX Runtime's errors for inputs a graph cannot compute (sizes below a kernel, mismatched dims)."""
    kind = type(exc)
    return kind.__module__.startswith("onnxruntime") and kind.__name__ in ("InvalidArgument", "Fail",
                                                                             "RuntimeException")


def infer(model: Model, body: Any, binary: bytes | memoryview = b"") -> tuple[dict[str, Any], bytes]:
    """Run one infer request through `model.predict`: the response's JSON and the binary outputs that follow
    it (empty when every output is JSON)."""
    inputs, parameters = decode_inputs(body, model.inputs, binary)
    wanted = _requested_outputs(body, model.outputs)
    for params in (wanted or {None: None}).values():  # a malformed flag is refused before the work, not after
        oip_binary.wants_binary(parameters, params)
    try:
        outputs = model.predict(inputs, parameters)
    except Exception as exc:
        if not _engine_refused(exc):
            raise
        # the engine's own message names graph nodes and kernels: logged for the operator, not sent
        log.warning("model %s refused inputs %s: %s", model.name, {k: list(v.shape) for k, v in inputs.items()}, exc)
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
        raise errors.InvalidInput(f"model {model.name!r} cannot run on inputs of these sizes ({shapes}); the "
                                  f"shapes it takes are in GET /v2/models/{model.name}") from None
    wanted = wanted if wanted is not None else dict.fromkeys(outputs)
    encoded, blobs = [], []
    for name, params in wanted.items():
        if oip_binary.wants_binary(parameters, params):
            tensor, raw = encode_binary(name, outputs[name])
            blobs.append(raw)
        else:
            tensor = encode_tensor(name, outputs[name])
        encoded.append(tensor)
    response: dict[str, Any] = {"model_name": model.name, "id": str(body.get("id") or uuid.uuid4()),
                                "outputs": encoded}
    if model.version:
        response["model_version"] = model.version
    return response, b"".join(blobs)
