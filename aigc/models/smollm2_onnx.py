"""SmolLM2-135M as an ONNX Runtime GenAI model: 4-bit weights, a KV-cached graph, LoRA inputs.

Built from the `smollm2-135m` entry (itself from the package's GGUF file) by
ONNX Runtime GenAI's own model builder (`onnxruntime_genai.models.builder`):
fused attention (GroupQueryAttention with rotary embeddings), MatMulNBits
4-bit weights in blocks of 32, as llama.cpp's Q4_1 file has them. Then every
projection gets a low-rank path whose factors are graph inputs (zero unless an
adapter sets them; see aigc.runtime.lora_onnx), so one copy of the weights
serves the base model and every LoRA adapter. text-generate serves this entry
with onnxruntime alone: no torch in its image.

Building needs torch and transformers (the builder reads the checkpoint with
them); serving does not.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import build as build_entry, source
from ..runtime import lora_onnx, store
from ..runtime.generate_onnx import LORA_GRAPH
from .smollm2 import CHECK_QUESTION

PARENT = "smollm2-135m"
# int4 (the builder's round-to-nearest) raised held-out Coq perplexity by 34%, int8 by 0.8%
# (bench/textquality.py prints the table)
PRECISION = "int8"
MAX_PERPLEXITY_RATIO = 1.05
PASSAGE = (
    "The lighthouse stood on a low island of rock, a mile from the harbour. Every evening the keeper climbed "
    "the spiral stairs, trimmed the wick and lit the lamp, and every morning he wrote in the log how the "
    "weather had changed during the night. Ships coming home from the north looked for its light before "
    "they saw the coast. In winter the storms were so strong that spray reached the gallery, and the keeper "
    "had to clean the glass twice before dawn. When the lamp was replaced by an electric one, the island "
    "was left to the birds, but people in the town still say that on clear nights they can see it turning.")
# The builder's names for the projections it emits (q, k and v packed into qkv_proj) and the peft module
# names whose outputs each one concatenates, in order; widths come from the checkpoint's config.
_NODE = re.compile(r"/model/layers\.(\d+)/(?:attn|mlp)/(qkv_proj|o_proj|gate_proj|up_proj|down_proj)/MatMul_Q[48]")


def build(out: Path) -> dict[str, Any]:
    parent = build_entry(PARENT, root=out.parent)  # the store this entry is being built in
    manifest = convert(parent.path, out, name=PARENT)
    # Accepted by next-token quality on a fixed passage, against the checkpoint run by torch in fp32: a
    # single greedy answer is a knife edge (8-bit weights turn this model's answer to CHECK_QUESTION
    # French), so it is recorded, and README reports it per precision, but it does not decide.
    reference, served = _perplexity_torch(parent.path), _perplexity_onnx(out)
    if served > reference * MAX_PERPLEXITY_RATIO:
        raise RuntimeError(f"the ONNX model's perplexity on the check passage is {served:.2f}, the checkpoint's "
                           f"{reference:.2f}: more than {MAX_PERPLEXITY_RATIO:.2f}x")
    manifest["conversion"]["check"] = {"passage_perplexity": {"checkpoint_fp32": round(reference, 3),
                                                              "onnx": round(served, 3)},
                                       "question": CHECK_QUESTION, "answer": _greedy_answer(out)}
    manifest["parent"]["manifest_sha256"] = store.sha256_file(parent.path / store.MANIFEST)
    manifest["sources"] += parent.manifest["sources"]
    manifest["model_license"] = parent.manifest["model_license"]
    return manifest


def convert(checkpoint: Path, out: Path, name: str, precision: str = PRECISION) -> dict[str, Any]:
    """Any Llama-family transformers directory → an ONNX Runtime GenAI model with LoRA inputs in `out`
    (tests build their tiny models with it too). Returns the manifest's fields."""
    import onnxruntime_genai

    config = json.loads((checkpoint / "config.json").read_text())
    head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if head % 16:
        raise ValueError(f"{name}: attention heads of {head} values; ONNX Runtime's GroupQueryAttention takes "
                         "multiples of 16")
    raw = out / "raw"
    # its command line is the builder's documented interface; it logs every tensor it writes, kept in a
    # file and shown only if it fails
    log = out / "builder.log"
    with open(log, "wb") as fh:
        done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", name,
                               "-i", str(checkpoint), "-o", str(raw), "-p", precision, "-e", "cpu",
                               "-c", str(out / "cache")], stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise RuntimeError("onnxruntime_genai's model builder failed:\n" + log.read_text()[-3000:])
    log.unlink()
    layout = _layout(config)
    for name in ("model.onnx", "model.onnx.data", "genai_config.json"):
        (raw / name).rename(out / name)
    _add_lora_inputs(out / "model.onnx", out / LORA_GRAPH, layout)
    for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # the checkpoint's own
        if (checkpoint / file).is_file():
            shutil.copyfile(checkpoint / file, out / file)
    shutil.rmtree(raw)
    shutil.rmtree(out / "cache", ignore_errors=True)  # made only when the builder downloads something
    return {
        "task": "text-generation", "format": "onnxruntime-genai", "platform": "onnxruntime_genai",
        "precision": precision, "architecture": config["architectures"][0],
        "context_length": config["max_position_embeddings"], "lora": layout, "parent": {"name": name},
        "conversion": {"builder": f"onnxruntime_genai.models.builder {onnxruntime_genai.__version__}"},
        "sources": [source("onnxruntime-genai", ["onnxruntime_genai/models/builder.py"])],
    }


def _layout(config: dict[str, Any]) -> dict[str, Any]:
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head = config.get("head_dim") or hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head
    return {"layers": config["num_hidden_layers"], "modules": {
        # parts are [module, width] pairs in output order: a JSON object's keys would not keep it
        "qkv_proj": {"in": hidden, "parts": [["q_proj", config["num_attention_heads"] * head], ["k_proj", kv],
                                             ["v_proj", kv]]},
        "o_proj": {"in": config["num_attention_heads"] * head, "parts": [["o_proj", hidden]]},
        "gate_proj": {"in": hidden, "parts": [["gate_proj", inter]]},
        "up_proj": {"in": hidden, "parts": [["up_proj", inter]]},
        "down_proj": {"in": inter, "parts": [["down_proj", hidden]]}}}


def _add_lora_inputs(source_model: Path, target: Path, layout: dict[str, Any]) -> None:
    """The graph again with x·A·B added to every projection's output, A and B being graph inputs with zero
    defaults (rank 1). It shares the weights file with the base graph: the base model serves requests
    without an adapter at full speed (the 450 extra nodes cost ~10% per token), this one those with."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source_model), load_external_data=False)  # weights stay in model.onnx.data
    graph = model.graph
    nodes, inputs, defaults, seen = [], [], [], set()
    for node in graph.node:
        nodes.append(node)
        match = _NODE.fullmatch(node.name)
        if not match:
            continue
        layer, module = int(match.group(1)), match.group(2)
        spec = layout["modules"][module]
        width = sum(w for _, w in spec["parts"])
        a, b = lora_onnx.input_names(layer, module)
        x, y = node.input[0], node.output[0]
        node.output[0] = f"{y}/base"
        rank = f"lora_rank_{layer}_{module}"  # each its own: q/k/v pack three adapters' ranks into one
        inputs += [helper.make_tensor_value_info(a, TensorProto.FLOAT, [spec["in"], rank]),
                   helper.make_tensor_value_info(b, TensorProto.FLOAT, [rank, width])]
        defaults += [numpy_helper.from_array(np.zeros((spec["in"], 1), np.float32), a),
                     numpy_helper.from_array(np.zeros((1, width), np.float32), b)]
        nodes += [helper.make_node("MatMul", [x, a], [f"{y}/lora_a"], name=f"{node.name}/lora_A"),
                  helper.make_node("MatMul", [f"{y}/lora_a", b], [f"{y}/lora_b"], name=f"{node.name}/lora_B"),
                  helper.make_node("Add", [f"{y}/base", f"{y}/lora_b"], [y], name=f"{node.name}/lora_add")]
        seen.add((layer, module))
    expected = {(layer, m) for layer in range(layout["layers"]) for m in layout["modules"]}
    if seen != expected:
        raise RuntimeError(f"the builder's graph lacks projections {sorted(expected - seen)[:4]}…: its node "
                           "names changed; update _NODE")
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.initializer.extend(defaults)
    onnx.save(model, str(target))


def _perplexity_torch(checkpoint: Path) -> float:
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(checkpoint))(PASSAGE, return_tensors="pt")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    with torch.inference_mode():
        return math.exp(float(model(input_ids=ids, labels=ids).loss))


def _perplexity_onnx(path: Path) -> float:
    """The same passage through the built graph with onnxruntime (all positions' logits, empty cache)."""
    import math

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    ids = np.array([Tokenizer.from_file(str(path / "tokenizer.json")).encode(PASSAGE).ids], dtype=np.int64)
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    genai = json.loads((path / "genai_config.json").read_text())["model"]["decoder"]
    empty = np.zeros((1, genai["num_key_value_heads"], 0, genai["head_size"]), np.float32)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feed.update({i.name: empty for i in session.get_inputs() if i.name.startswith("past_key_values")})
    logits = session.run(["logits"], feed)[0][0, :-1].astype(np.float64)
    top = logits.max(axis=-1)
    log_norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
    targets = ids[0, 1:]
    return math.exp(float(np.mean(log_norm - logits[np.arange(len(targets)), targets])))


def _greedy_answer(path: Path, question: str = CHECK_QUESTION) -> str:
    import onnxruntime_genai as og

    model = og.Model(str(path))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": question}]),
                                           add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 16, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    return tokenizer.decode(generator.get_sequence(0)[len(ids):]).strip()
