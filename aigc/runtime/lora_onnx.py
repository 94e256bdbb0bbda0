"""LoRA adapters for ONNX language models: peft's files turned into the graph's adapter inputs.

The model builder (aigc.models.smollm2_onnx) gives every projection of the
graph a low-rank path whose two factors are graph inputs, zero by default:
`lora.<layer>.<module>.A` ([in, rank]) and `.B` ([rank, out], the scale folded
in), added to the quantized projection's output. An adapter is then nothing
but values for those inputs, which ONNX Runtime swaps per request
(`.onnx_adapter` files): one copy of the base weights serves every adapter.

ONNX Runtime GenAI packs q, k and v into one projection; their adapters pack
the same way: A side by side, B block-diagonal over q's, k's and v's columns,
which is exactly x·Aq·Bq | x·Ak·Bk | x·Av·Bv. `layout` (in the store entry's
manifest) says, per graph module, its input width and the peft modules whose
outputs it concatenates, as [name, width] pairs in output order.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from . import errors

_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.[a-z_]+\.([a-z_]+)\.lora_([AB])\.weight$")
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
_SAFETENSORS_HEADER_MAX = 100 << 20


def input_names(layer: int, module: str) -> tuple[str, str]:
    """The graph inputs of one projection's low-rank path (the contract between builder and engine)."""
    return f"lora.{layer}.{module}.A", f"lora.{layer}.{module}.B"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as float32 arrays (F32, F16, BF16): its format is an 8-byte header length, a
    JSON header of names → dtype, shape and byte offsets, then the raw little-endian data."""
    raw = memoryview(Path(path).read_bytes())
    if len(raw) < 8:
        raise ValueError("not a safetensors file: shorter than its header length")
    (size,) = struct.unpack_from("<Q", raw, 0)
    if size > min(_SAFETENSORS_HEADER_MAX, len(raw) - 8):
        raise ValueError("not a safetensors file: header length past the file's end")
    header = json.loads(bytes(raw[8:8 + size]))
    data = raw[8 + size:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"tensor {name!r} lies outside the file")
        chunk = data[begin:end]
        if info["dtype"] == "BF16":  # bf16 is the high half of a float32
            values = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _DTYPES:
            values = np.frombuffer(chunk, dtype=np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"tensor {name!r} has dtype {info['dtype']}; adapters are float")
        out[name] = values.astype(np.float32).reshape(info["shape"])
    return out


def adapter_params(adapter_dir: Path, layout: dict[str, Any]) -> dict[str, np.ndarray]:
    """The graph inputs that apply a peft LoRA adapter. ValueError names what this engine cannot apply."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"it is a {config.get('peft_type')} adapter; this engine applies LoRA adapters only")
    for option in ("use_dora", "modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform"):
        if config.get(option):
            raise ValueError(f"it uses {option}, which this engine cannot apply")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (r ** 0.5 if config.get("use_rslora") else r)
    factors: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in read_safetensors(Path(adapter_dir) / "adapter_model.safetensors").items():
        match = _KEY.search(key)
        if not match:
            raise ValueError(f"it adapts {key!r}, which is not a projection this engine can adapt")
        layer, module, side = int(match.group(1)), match.group(2), match.group(3)
        factors.setdefault((layer, module), {})[side] = value
    owner = {part for spec in layout["modules"].values() for part, _ in spec["parts"]}
    params: dict[str, np.ndarray] = {}
    for layer in range(layout["layers"]):
        for module, spec in layout["modules"].items():
            parts = spec["parts"]
            found = [factors.get((layer, part)) for part, _ in parts]
            rank = sum(f["A"].shape[0] for f in found if f) or 1
            a = np.zeros((spec["in"], rank), np.float32)
            b = np.zeros((rank, sum(width for _, width in parts)), np.float32)
            row = col = 0
            for (part, width), f in zip(parts, found):
                if f:
                    if set(f) != {"A", "B"} or f["A"].shape[1] != spec["in"] or f["B"].shape[0] != width:
                        raise ValueError(f"its {part} factors in layer {layer} do not fit this model's shapes")
                    k = f["A"].shape[0]
                    a[:, row:row + k] = f["A"].T
                    b[row:row + k, col:col + width] = f["B"].T * scale
                    row += k
                col += width
            params.update(zip(input_names(layer, module), (a, b)))
    unknown = {m for _, m in factors} - set(owner)
    if unknown or any(layer >= layout["layers"] for layer, _ in factors):
        raise ValueError(f"it adapts modules or layers this model does not have ({sorted(unknown) or 'layers'})")
    return params


def write_adapter(params: dict[str, np.ndarray], path: Path) -> None:
    """An `.onnx_adapter` file, the format ONNX Runtime (and GenAI's Adapters) loads."""
    import onnxruntime as ort

    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in params.items()})
    adapter.export_adapter(str(path))


def refuse(adapter: str, reason: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"adapter {adapter!r} cannot be served: {reason}")
