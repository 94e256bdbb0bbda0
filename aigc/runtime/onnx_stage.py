"""One stage of a model split by `aigc split` (docs/split.md), served over the Open Inference Protocol.

A stage's handler only names its store entry:

    from aigc.runtime.onnx_stage import StageModel

    model = StageModel("efficientnet-lite0--stage-1-of-3")

The entry's manifest lists the tensors the stage takes and gives (names, dtypes,
shapes): they are its OIP metadata, so a client learns them from
`GET /v2/models/<entry>` as from any other model. Tensors travel as JSON or as
the binary extension (oip_binary), which the runtime's app decodes for every
model; the chain (chain.py) always sends and asks for binary data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import oip, ort, store
from .model import Model, TensorSpec


def tensor_spec(io: dict[str, Any]) -> TensorSpec:
    """A manifest's {"name", "dtype", "shape"} as OIP metadata: a named or unknown dimension is -1."""
    datatype = oip.datatype_of(np.empty(0, dtype=np.dtype(io["dtype"])))
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in io["shape"])
    return TensorSpec(io["name"], datatype, shape)


class StageModel(Model):
    platform = "onnxruntime_onnx"
    fork_safe = True  # an ONNX Runtime session made through aigc.runtime.ort

    def load(self) -> None:
        stored = store.open_model(self.name)
        stage = stored.manifest.get("stage")
        if not isinstance(stage, dict):
            raise ValueError(f"{self.name} is not a stage entry (its manifest has no 'stage'); "
                             "write stages with `aigc split`")
        inputs = tuple(tensor_spec(io) for io in stage["inputs"])
        outputs = tuple(tensor_spec(io) for io in stage["outputs"])
        session = ort.session(stored.file("model.onnx"))
        # the manifest is what clients read; a graph that disagrees with it would fail on every request
        for kind, declared, actual in (("inputs", inputs, session.get_inputs()),
                                       ("outputs", outputs, session.get_outputs())):
            if [t.name for t in declared] != [t.name for t in actual]:
                raise ValueError(f"{self.name}: the manifest's {kind} {[t.name for t in declared]} are not the "
                                 f"graph's {[t.name for t in actual]}")
        self.session, self.inputs, self.outputs = session, inputs, outputs

    def predict(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        names = [t.name for t in self.outputs]
        return dict(zip(names, self.session.run(names, inputs)))
