"""Sample aigc-onnx function: serve one ONNX model from the model store.

Set MODEL_NAME to a model built into the store (`aigc models build NAME`), and
its inputs and outputs are served over the Open Inference Protocol at
/v2/models/<MODEL_NAME>/infer. GET / describes the model.
"""

import os

from aigc.runtime import Model, ort, store

SAMPLE = "aigc-onnx"  # the template's sample handler; handler_test.py tests only this one


class OnnxModel(Model):
    platform = "onnxruntime_onnx"
    fork_safe = True  # sessions from aigc.runtime.ort: a zygote may load it and fork replicas

    def load(self):
        stored = store.open_model(self.name)
        self.session = ort.session(stored.file("model.onnx"))
        self.inputs = ort.tensor_specs(self.session.get_inputs())
        self.outputs = ort.tensor_specs(self.session.get_outputs())

    def predict(self, inputs, parameters):
        names = [spec.name for spec in self.outputs]
        return dict(zip(names, self.session.run(names, inputs)))


model = OnnxModel(os.environ.get("MODEL_NAME", "model"))


def handle(event, context):
    return {"model": model.name, "ready": model.ready, "metadata": model.metadata(),
            "infer": f"/v2/models/{model.name}/infer"}
