"""embed: sentence embeddings from all-MiniLM-L6-v2 (int8 ONNX).

OpenAI-compatible `POST /v1/embeddings` (also at `POST /`) and `GET /v1/models`, plus the Open
Inference Protocol: `text` (BYTES, N) -> `embedding` (FP32, N x 384).
Vectors are mean-pooled over real tokens and L2-normalised, as
sentence-transformers does for this model. AIGC_ENGINE=chain runs the model in the
stage functions `aigc split` wrote (AIGC_CHAIN, docs/split.md) instead of in-process.
"""

import json
import os

import numpy as np

from aigc.runtime import Model, TensorSpec, chain, errors, fastpath, limits, openai, ort, store

BATCH = 32
# tokens one request may embed in all: about 10 s of work on 2 cores; more is a 400 that says to split
MAX_REQUEST_TOKENS = int(os.environ.get("AIGC_MAX_REQUEST_TOKENS", 32768))
ENGINE = os.environ.get("AIGC_ENGINE", "onnx")
if ENGINE not in ("onnx", "chain"):  # raised at import, so a misconfigured instance stops at start
    raise ValueError(f"AIGC_ENGINE must be one of ('onnx', 'chain'), got {ENGINE!r}")


class SentenceEmbedder(Model):
    platform = "onnxruntime_onnx"
    fork_safe = True  # ONNX Runtime through aigc.runtime.ort, WASM tokenizer: a zygote may load it
    inputs = (TensorSpec("text", "BYTES", (-1,)),)
    outputs = (TensorSpec("embedding", "FP32", (-1, 384)),)

    def load(self):
        stored = store.open_model(self.name)
        self.config = json.loads(stored.file("embedding.json").read_text())
        self.tokenizer = fastpath.TextTokenizer(stored.file("tokenizer.json"))  # AIGC_FAST_PATH picks wasm/native
        if ENGINE == "chain":  # stage 1 refuses, by name, an input it does not take: send them all
            self.session, self.input_names = chain.from_env(), None
        else:
            self.session = ort.session(stored.file("model.onnx"))
            self.input_names = {i.name for i in self.session.get_inputs()}

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        ids = self.tokenizer.encode_batch(texts)
        limit = self.config["max_tokens"]
        for i, seq in enumerate(ids):
            if len(seq) > limit:
                raise errors.InvalidInput(f"input[{i}] is {len(seq)} tokens; {self.name} takes at most {limit}")
        total = sum(len(x) for x in ids)
        if total > MAX_REQUEST_TOKENS:
            raise errors.InvalidInput(f"the inputs are {total} tokens in all; one request takes at most "
                                      f"{MAX_REQUEST_TOKENS} (AIGC_MAX_REQUEST_TOKENS): split them")
        return ids

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        ids = self.tokenize(texts)
        vectors = []
        for i in range(0, len(ids), BATCH):
            limits.check_deadline()  # the caller may have its 504 already: stop between batches
            vectors.append(self._embed_batch(ids[i:i + BATCH]))
        return np.concatenate(vectors), sum(len(x) for x in ids)

    def _embed_batch(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        hidden = self.session.run(None, {k: v for k, v in feeds.items()
                                         if self.input_names is None or k in self.input_names})[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)

    def predict(self, inputs, parameters):
        texts = [t.decode("utf-8", "replace") for t in inputs["text"].reshape(-1)]
        if not texts:
            raise errors.InvalidInput("input 'text' is empty; send at least one string")
        return {"embedding": self.embed(texts)[0]}


model = SentenceEmbedder(os.environ.get("MODEL_NAME", "minilm-l6-int8"))


def handle(event, context):
    if event.path == "/v1/models" and event.method == "GET":
        return openai.model_list([model.name])
    # POST / takes the same body, so `faas-cli invoke embed` (which can only reach /) is useful
    if event.path in ("/v1/embeddings", "/") and event.method == "POST":
        body = event.json()
        if event.path == "/" and isinstance(body, dict):
            body.setdefault("model", model.name)
        name, texts, encoding = openai.parse_embeddings(body, [model.name])
        vectors, tokens = model.embed(texts)
        return openai.embeddings_response(name, vectors, tokens, encoding)
    raise errors.ModelNotFound(f"no route {event.method} {event.path}; use POST /v1/embeddings (or /), "
                               "GET /v1/models or the Open Inference Protocol under /v2")
