"""Sample aigc-tf function: a Keras model from the model store, on TensorFlow (CPU).

Set MODEL_NAME to a store entry whose manifest names a Keras file under
"engines": {"keras": "<file>"} (e.g. `aigc models build fer-emotion`). POST / with
{"instances": [...]} (one item per input, shaped like the model's input without the
batch dimension) returns {"predictions": [...]}; GET / describes the model. The same
model answers the Open Inference Protocol as `input` -> `output` (FP32).
functions/face-emotion in the project is a complete image function on this template.
"""

import os

import numpy as np

from aigc.runtime import Model, TensorSpec, errors, store

SAMPLE = "aigc-tf"  # the template's sample handler; handler_test.py tests only this one

MAX_INSTANCES = 64


class KerasModel(Model):
    platform = "tensorflow_keras"
    inputs = (TensorSpec("input", "FP32", (-1,)),)  # replaced by the real shapes once loaded
    outputs = (TensorSpec("output", "FP32", (-1,)),)

    def load(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras  # imports TensorFlow (~2 s): here, never at module level, so the master stays light

        stored = store.open_model(self.name)
        self.net = keras.models.load_model(stored.file(stored.manifest["engines"]["keras"]), compile=False)
        self.input_shape = tuple(-1 if d is None else d for d in self.net.input_shape)
        self.inputs = (TensorSpec("input", "FP32", self.input_shape),)
        self.outputs = (TensorSpec("output", "FP32", tuple(-1 if d is None else d for d in self.net.output_shape)),)

    def run(self, batch: np.ndarray) -> np.ndarray:
        # models saved by Keras 2 (.hdf5) declare their one input as a list; match it, or Keras warns per call
        return np.asarray(self.net([batch] if isinstance(self.net.input, list) else batch, training=False))

    def predict(self, inputs, parameters):
        return {"output": self.run(inputs["input"])}


model = KerasModel(os.environ.get("MODEL_NAME", "model"))


def parse_instances(body) -> np.ndarray:
    """{"instances": [...]} -> float32 array (N, ...), refused with 400 before the model is needed."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise errors.InvalidInput('send a JSON object {"instances": [...]}')
    items = body["instances"]
    if not 1 <= len(items) <= MAX_INSTANCES:
        raise errors.InvalidInput(f"instances must hold 1 to {MAX_INSTANCES} items, got {len(items)}")
    try:
        batch = np.asarray(items, dtype=np.float32)
    except (TypeError, ValueError):
        raise errors.InvalidInput("instances must be numbers, nested lists of the same shape") from None
    if not np.isfinite(batch).all():
        raise errors.InvalidInput("instances must be finite numbers")
    return batch


def handle(event, context):
    if event is None or event.method == "GET":
        described = {"model": model.name, "ready": model.ready, "platform": model.platform}
        if model.ready:
            described["input_shape"] = list(model.input_shape)
        return described
    batch = parse_instances(event.json())
    expected = model.input_shape[1:]
    if len(batch.shape) != len(model.input_shape) or any(e not in (-1, d) for e, d in zip(expected, batch.shape[1:])):
        raise errors.InvalidInput(f"each instance must have shape {list(expected)} (-1 = any), "
                                  f"got {list(batch.shape[1:])}")
    return {"model": model.name, "predictions": model.run(batch).tolist()}
