"""What each precision of the served text model keeps: held-out Coq perplexity (base and the published
Coq adapter) and the greedy answers to a few factual questions.

    python bench/textquality.py [--blocks 64]     # needs `python -m finetune data` (the Coq corpus)

Rows: the checkpoint run by torch in fp32 (the reference, as `python -m finetune evaluate` measures it),
then ONNX Runtime GenAI builds of it made by aigc.models.smollm2_onnx at int8 (what text-generate
serves) and int4, each with the adapter applied as text-generate applies it (graph inputs). Perplexity
is over the same test-split blocks as finetune's evaluation (512 tokens, seed 0).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from .. import models
from ..runtime import lora_onnx
from .gateway import REPO

BASE = "smollm2-135m"
ADAPTER = REPO / "finetune" / "results" / "smollm2-coq-lora" / "adapter"
QUESTIONS = ["What is the capital of France?", "Name the capital of France.", "Which city is the capital of France?",
             "What is the capital of Germany?"]


def _blocks(checkpoint: Path, count: int) -> np.ndarray:
    from transformers import PreTrainedTokenizerFast

    from finetune import blocks, data
    from finetune.config import default_data_dir
    from finetune.train import EVAL_SEED

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(checkpoint))
    files = data.split_paths(default_data_dir(), "test")
    return blocks.make_blocks(tokenizer, files, 512, count, EVAL_SEED).numpy()


def _nll(logits: np.ndarray, ids: np.ndarray) -> tuple[float, int]:
    logits = logits[:-1].astype(np.float64)
    top = logits.max(axis=-1)
    log_norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
    targets = ids[1:]
    return float((log_norm - logits[np.arange(len(targets)), targets]).sum()), len(targets)


def torch_perplexity(checkpoint: Path, test: np.ndarray, adapter: Path | None) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    total = count = 0
    with torch.inference_mode():
        for ids in test:
            nll, n = _nll(model(input_ids=torch.tensor(ids[None])).logits[0].numpy(), ids)
            total, count = total + nll, count + n
    return math.exp(total / count)


def onnx_perplexity(path: Path, test: np.ndarray, adapter: Path | None) -> float:
    import onnxruntime as ort

    from ..runtime.generate_onnx import LORA_GRAPH

    graph = LORA_GRAPH if adapter else "model.onnx"  # as text-generate serves each
    options = ort.SessionOptions()
    options.log_severity_level = 3  # one warning per LoRA input with a default: 300 lines
    session = ort.InferenceSession(str(path / graph), options, providers=["CPUExecutionProvider"])
    decoder = json.loads((path / "genai_config.json").read_text())["model"]["decoder"]
    empty = np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]), np.float32)
    lora = {}
    if adapter:
        layout = json.loads((path / "manifest.json").read_text())["lora"]
        lora = lora_onnx.adapter_params(adapter, layout)
    total = count = 0
    for ids in test:
        feed = {"input_ids": ids[None].astype(np.int64), "attention_mask": np.ones((1, len(ids)), np.int64), **lora}
        feed.update({i.name: empty for i in session.get_inputs() if i.name.startswith("past_key_values")})
        nll, n = _nll(session.run(["logits"], feed)[0][0], ids)
        total, count = total + nll, count + n
    return math.exp(total / count)


def onnx_answers(path: Path) -> list[str]:
    from ..models.smollm2_onnx import _greedy_answer

    return [_greedy_answer(path, q) for q in QUESTIONS]


def torch_answers(checkpoint: Path) -> list[str]:
    from ..models.smollm2 import _greedy_answer

    return [_greedy_answer(checkpoint, q) for q in QUESTIONS]


def main(argv: list[str] | None = None) -> int:
    from ..models import smollm2_onnx
    from ..runtime import store

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=64)
    args = p.parse_args(argv)
    checkpoint = models.build(BASE).path
    test = _blocks(checkpoint, args.blocks)
    rows = [("checkpoint, torch fp32 (reference)", torch_perplexity(checkpoint, test, None),
             torch_perplexity(checkpoint, test, ADAPTER), torch_answers(checkpoint))]
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("int8", "int4"):
            out = Path(tmp) / precision
            out.mkdir()
            store.write_manifest(out, smollm2_onnx.convert(checkpoint, out, BASE, precision))
            rows.append((f"ONNX Runtime GenAI {precision}" + (" (served)" if precision == smollm2_onnx.PRECISION
                                                                else ""),
                         onnx_perplexity(out, test, None), onnx_perplexity(out, test, ADAPTER), onnx_answers(out)))
    reference = rows[0]
    print(f"held-out Coq perplexity, {args.blocks} blocks of 512 tokens; greedy answers (chat template)\n")
    print("| weights | base | vs fp32 | Coq adapter | vs fp32 | " + " | ".join(f"“{q}”" for q in QUESTIONS) + " |")
    print("|---|---:|---:|---:|---:|" + "---|" * len(QUESTIONS))
    for name, base, adapted, answers in rows:
        print(f"| {name} | {base:.2f} | {100 * (base / reference[1] - 1):+.1f}% | {adapted:.2f} | "
              f"{100 * (adapted / reference[2] - 1):+.1f}% | " + " | ".join(a[:40] for a in answers) + " |")
    return 0
