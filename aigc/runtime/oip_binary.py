"""The binary tensor data extension of the Open Inference Protocol's REST API.

As Triton and KServe speak it, and `tritonclient` sends it with
`binary_data=True`: the body is a JSON header, `Inference-Header-Content-Length`
bytes long, followed by the raw bytes of the inputs that say
`"parameters": {"binary_data_size": N}` instead of carrying `data`, in the order
the inputs are listed. Values are little-endian and row-major; BOOL is one byte
each; a BYTES element is a 4-byte little-endian length and then its bytes.
Outputs come back the same way when the request asks for them
(`binary_data_output` for all, or an output's own `binary_data`).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from . import errors

HEADER = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"  # its name in the server metadata's extension list, as Triton calls it
_SIZE = "binary_data_size"


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from the request header, or None for an all-JSON body."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        length = -1
    if not 0 < length <= body_size:
        raise errors.InvalidInput(f"{HEADER} must be the JSON header's length in bytes, between 1 and the body's "
                                  f"{body_size}; got {value!r}")
    return length


def binary_size(name: str, tensor: dict) -> int | None:
    """How many bytes of the binary section an input takes, or None when it carries JSON `data`."""
    params = tensor.get("parameters")
    if not isinstance(params, dict) or _SIZE not in params:
        return None
    size = params[_SIZE]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise errors.InvalidInput(f"input {name!r}: parameters.{_SIZE} must be a non-negative integer")
    if "data" in tensor:
        raise errors.InvalidInput(f"input {name!r} has both 'data' and parameters.{_SIZE}; send one of them")
    return size


def decode(name: str, datatype: str, shape: list[int], raw: memoryview, dtype: type) -> np.ndarray:
    """One input's raw bytes as an array of `shape` (a copy: aligned and writable for the engine)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes(name, count, raw).reshape(shape)
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != count * itemsize:
        raise errors.InvalidInput(f"input {name!r}: shape {shape} of {datatype} needs {count * itemsize} bytes of "
                                  f"binary data, parameters.{_SIZE} says {len(raw)}")
    if datatype == "BOOL":
        values = np.frombuffer(raw, dtype=np.uint8)
        if values.size and values.max() > 1:
            raise errors.InvalidInput(f"input {name!r}: BOOL bytes must be 0 or 1")
        return values.astype(np.bool_).reshape(shape)
    values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise errors.InvalidInput(f"input {name!r}: {datatype} data must be finite numbers")
    return values.reshape(shape)


def _decode_bytes(name: str, count: int, raw: memoryview) -> np.ndarray:
    if count * 4 > len(raw):  # before allocating: the shape alone must not size memory
        raise errors.InvalidInput(f"input {name!r}: {count} BYTES elements need at least {count * 4} bytes of "
                                  f"binary data (a 4-byte length each), parameters.{_SIZE} says {len(raw)}")
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):  # bounded: each element takes at least its 4-byte length from a bounded body
        if offset + 4 > len(raw):
            raise errors.InvalidInput(f"input {name!r}: BYTES binary data ends after {i} of {count} elements "
                                      "(each is a 4-byte little-endian length, then that many bytes)")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise errors.InvalidInput(f"input {name!r}: BYTES element {i} declares {length} bytes, past the end "
                                      "of its binary data")
        out[i] = bytes(raw[offset:offset + length])
        offset += length
    if offset != len(raw):
        raise errors.InvalidInput(f"input {name!r}: {len(raw) - offset} bytes of binary data left after its "
                                  f"{count} BYTES elements")
    return out


def encode(array: np.ndarray) -> bytes:
    """An output's bytes: little-endian values, or length-prefixed elements for BYTES."""
    if array.dtype.kind in "OSU":
        parts = []
        for value in array.reshape(-1):
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def wants_binary(request_parameters: Any, output_parameters: Any) -> bool:
    """An output's own `binary_data` decides; without it, the request's `binary_data_output`."""
    if isinstance(output_parameters, dict) and "binary_data" in output_parameters:
        choice = output_parameters["binary_data"]
    elif isinstance(request_parameters, dict):
        choice = request_parameters.get("binary_data_output", False)
    else:
        choice = False
    if not isinstance(choice, bool):
        raise errors.InvalidInput("'binary_data' and 'binary_data_output' must be true or false")
    return choice
