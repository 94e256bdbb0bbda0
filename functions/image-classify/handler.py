"""image-classify: ImageNet top-k labels from EfficientNet-Lite0 on ONNX Runtime.

POST a JPEG/PNG body to `/` (optional `?top_k=N`), or use the Open Inference
Protocol: `image` (UINT8, N x H x W x 3 pixels) or `input` (FP32, N x 3 x H x W,
already normalised) -> `probabilities`, `top_labels`, `top_scores`.
"""

import json
import os

import numpy as np

from aigc.runtime import Model, TensorSpec, errors, fastpath, images, ort, store


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _top_k(raw, default: int = 5) -> int:
    try:
        k = int(raw) if raw is not None else default
    except (TypeError, ValueError):
        raise errors.InvalidInput(f"top_k must be an integer, got {raw!r}") from None
    if not 1 <= k <= 1000:
        raise errors.InvalidInput(f"top_k must be between 1 and 1000, got {k}")
    return k


class ImageClassifier(Model):
    platform = "onnxruntime_onnx"
    inputs = (TensorSpec("image", "UINT8", (-1, -1, -1, 3), optional=True),
              TensorSpec("input", "FP32", (-1, 3, -1, -1), optional=True))
    outputs = (TensorSpec("probabilities", "FP32", (-1, 1000)),
               TensorSpec("top_labels", "BYTES", (-1, -1)),
               TensorSpec("top_scores", "FP32", (-1, -1)))

    def load(self):
        stored = store.open_model(self.name)
        self.labels = json.loads(stored.file("labels.json").read_text())
        spec = json.loads(stored.file("preprocess.json").read_text())
        self.preprocess = fastpath.ClassifierPreprocessor(spec)  # AIGC_FAST_PATH picks wasm/native
        self.session = ort.session(stored.file("model.onnx"))

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return _softmax(self.session.run(None, {"input": batch})[0])

    def predict(self, inputs, parameters):
        if ("image" in inputs) == ("input" in inputs):
            raise errors.InvalidInput("send exactly one of the inputs 'image' (UINT8 pixels) or 'input' (FP32 tensor)")
        batch = inputs.get("input")
        if batch is None:
            batch = np.stack([self.preprocess(img) for img in inputs["image"]])
        probs = self.probabilities(batch)
        k = _top_k(parameters.get("top_k"))
        top = np.argsort(-probs, axis=1)[:, :k]
        labels = np.array([[self.labels[i] for i in row] for row in top], dtype=object)
        return {"probabilities": probs, "top_labels": labels,
                "top_scores": np.take_along_axis(probs, top, axis=1)}


model = ImageClassifier(os.environ.get("MODEL_NAME", "efficientnet-lite0"))


def handle(event, context):
    if event.method != "POST" or event.path != "/":
        raise errors.InvalidInput("POST a JPEG or PNG image to / (or use /v2/models/"
                                  f"{model.name}/infer)")
    k = _top_k(event.query.get("top_k"))
    probs = model.probabilities(model.preprocess(images.decode(event.body))[None])[0]
    top = np.argsort(-probs)[:k]
    return {"model": model.name,
            "predictions": [{"label": model.labels[i], "index": int(i), "score": float(probs[i])} for i in top]}
