"""SmolLM2-135M as one plain FP32 ONNX graph: input_ids and attention_mask in, every position's logits out.

No KV cache, so the graph's only inputs are the two the tokenizer gives: the
model `aigc split` can cut (issue #19, docs/split.md), where the GenAI entry
(`smollm2-135m-onnx`) would have to carry its 60 cache tensors through every
cut. FP32 on purpose: its ~540 MB of weights make one function's peak memory
larger than a limit each of its stages stays under — the over-limit model.

Built from the `smollm2-135m` entry with torch's TorchScript exporter
(transformers, eager attention, use_cache=False); accepted only if ONNX
Runtime's logits on a real prompt match torch's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from . import build as build_entry, source
from ..runtime import store
from .smollm2 import CHECK_QUESTION

PARENT = "smollm2-135m"
OPSET = 17
MAX_ABS_DIFF = 1e-3  # FP32 both sides; what is left is kernel summation order
INPUTS = ["input_ids", "attention_mask"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]


def build(out: Path) -> dict[str, Any]:
    parent = build_entry(PARENT, root=out.parent)  # the store this entry is being built in
    manifest = convert(parent.path, out)
    manifest["parent"] = {"name": PARENT, "manifest_sha256": store.sha256_file(parent.path / store.MANIFEST)}
    manifest["sources"] += parent.manifest["sources"]
    manifest["model_license"] = parent.manifest["model_license"]
    return manifest


def _wrapper(model):
    """A module whose forward takes exactly the graph's inputs and returns only the logits: the
    exporter traces positional arguments, and a transformers output object holds more than logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return Logits().eval()


def convert(checkpoint: Path, out: Path) -> dict[str, Any]:
    # weights come from the store only; never let transformers reach for a hub
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import onnx
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    model.config.use_cache = False
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    example = tokenizer([CHECK_QUESTION], return_tensors="pt")
    feeds = (example["input_ids"], example["attention_mask"])
    with torch.inference_mode():
        expected = _wrapper(model)(*feeds).numpy()
    torch.onnx.export(_wrapper(model), feeds, str(out / "model.onnx"), dynamo=False, opset_version=OPSET,
                      input_names=INPUTS, output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                    "attention_mask": {0: "batch", 1: "sequence"},
                                    "logits": {0: "batch", 1: "sequence"}})
    del model
    onnx.checker.check_model(str(out / "model.onnx"))  # by path: works for any size
    diff = _max_abs_diff(out / "model.onnx", tokenizer, expected)
    if diff >= MAX_ABS_DIFF:
        raise RuntimeError(f"ONNX Runtime's logits differ from torch's by {diff:.2e} (limit {MAX_ABS_DIFF:g})")
    for name in TOKENIZER_FILES:
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out / name)
    return {
        "task": "text-logits", "format": "onnx", "platform": "onnxruntime_onnx", "precision": "fp32",
        "architecture": "LlamaForCausalLM", "inputs": INPUTS, "outputs": ["logits"],
        "conversion": {"exporter": f"torch.onnx.export (TorchScript, opset {OPSET})", "torch": torch.__version__,
                       "transformers": transformers.__version__,
                       "check": {"prompt": CHECK_QUESTION, "max_abs_diff_logits": float(f"{diff:.3g}")}},
        "sources": [source("torch", ["torch/onnx (exporter)"])],
    }


def _max_abs_diff(path: Path, tokenizer, expected) -> float:
    import numpy as np
    import onnxruntime as ort

    ids = tokenizer([CHECK_QUESTION], return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": ids["input_ids"].astype(np.int64),
                                   "attention_mask": ids["attention_mask"].astype(np.int64)})[0]
    return float(np.abs(got - expected).max())
