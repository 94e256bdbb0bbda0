"""Issue #19's over-limit model: SmolLM2-135M in FP32 (`smollm2-135m-fullseq-onnx`) needs more memory than a
function's limit L, and is served only split, each stage under L.

Under one limit L (the same `limits.memory` for every function): the unsplit function (a whole-model OIP
handler) is OOM-killed while loading and the gateway answers 503 naming OOMKilled; the three stage functions
that `aigc split --max-memory 256Mi --by memory --functions` writes serve, each replica's cgroup peak under
L, and chaining them (aigc.runtime.chain.Chain, from this process: a raw-logits model has no pipeline
function to keep the API of) gives the whole model's logits, computed in-process with ONNX Runtime.

The entry is built into a tmp store from the real `smollm2-135m` (about 30 s and 3 GB of RSS), so the
user's store is never written.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import onnxruntime as ort
import pytest
import requests
import yaml

from aigc import cli, models, split
from aigc.models.smollm2_onnx import PASSAGE
from aigc.runtime import chain, config
from conftest import free_port
from gateway_helpers import GatewayProcess, gateway_events
from test_split import link_real

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-fullseq-onnx"
LIMIT = "768Mi"  # measured: whole model ~1.0 GiB peak RSS with ORT alone, each stage ~0.4 GiB (docs/split.md)
STAGES = 3
TOKENS = 128
MAX_DIFF = 1e-4
# StageModel serves only stage entries (its manifest's tensors); the whole entry gets this test-only twin
WHOLE_HANDLER = '''"""The unsplit model as one OIP function: the function that does not fit its limit."""

from aigc.runtime import ort, store
from aigc.runtime.model import Model


class Whole(Model):
    platform = "onnxruntime_onnx"
    fork_safe = True

    def load(self):
        self.session = ort.session(store.open_model(self.name).file("model.onnx"))
        self.inputs = ort.tensor_specs(self.session.get_inputs())
        self.outputs = ort.tensor_specs(self.session.get_outputs())

    def predict(self, inputs, parameters):
        names = [t.name for t in self.outputs]
        return dict(zip(names, self.session.run(names, inputs)))


model = Whole("{model}")
'''


def stage(k: int) -> str:
    return split.stage_name(MODEL, k, STAGES)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split-overlimit")
    root = tmp / "store"
    root.mkdir()
    link_real(root, "smollm2-135m")
    models.build(MODEL, root=root)
    work = tmp / "work"
    (work / "functions" / "whole").mkdir(parents=True)
    (work / "functions" / "whole" / "handler.py").write_text(WHOLE_HANDLER.replace("{model}", MODEL))
    stack_path = work / "stack.yml"
    whole = {"lang": "aigc-onnx", "handler": "./functions/whole", "image": "localhost/whole:test",
             "labels": {"com.openfaas.scale.min": "1"}}
    stack_path.write_text(yaml.safe_dump({"version": 1.0, "provider": {"name": "openfaas",
                                          "gateway": "http://127.0.0.1:8080"}, "functions": {"whole": whole}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_MODEL_STORE", str(root))
        mp.delenv("AIGC_MODEL_REMOTE", raising=False)
        # no function bakes the model (AIGC_MODELS), so: stages only, no pipeline
        assert cli.main(["split", MODEL, "--max-memory", "256Mi", "--by", "memory", "--max-carried", "4",
                         "--functions", "--functions-dir", str(work / "functions"), "--stack", str(stack_path)]) == 0
    doc = yaml.safe_load(stack_path.read_text())
    assert sorted(doc["functions"]) == sorted(["whole"] + [stage(k) for k in range(1, STAGES + 1)])
    for spec in doc["functions"].values():
        # the same limit for all; split's own (192Mi + 4 x estimate) is sized for int8 weights, not FP32
        spec["limits"] = {"memory": LIMIT}
        spec.setdefault("labels", {})["com.openfaas.scale.min"] = "1"
        spec["labels"].pop("com.openfaas.scale.zero", None)
    stack_path.write_text(yaml.safe_dump(doc))
    port = free_port()
    # the ORT graph cache is off: writing an optimised FP32 graph holds a second copy of the weights while
    # it serialises (a stage's first start peaks ~0.7 GiB with it, ~0.4 GiB without)
    env = {"AIGC_MODEL_STORE": str(root), "AIGC_MODEL_REMOTE": "", "AIGC_ORT_CACHE": "off"}
    gateway = GatewayProcess(stack_path, tmp / "state", port=port, env=env)
    try:
        yield gateway, root
    finally:
        gateway.stop()


def tokens(root) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(root / MODEL / "tokenizer.json")).encode(PASSAGE * 2).ids[:TOKENS]
    ids = np.array([ids], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def cgroup_peaks(gw_pid: int) -> dict[str, int]:
    """Peak usage in bytes of each memory cgroup the gateway made: one per replica (`<function>-0`) and one
    per zygote (`<function>-zygote-g1`), which loads the model before forking replicas, so the weights'
    pages are charged to it (aigc/gateway/processes.py)."""
    found = {}
    for path in glob.glob(f"/sys/fs/cgroup/memory/**/aigc-*-{gw_pid}/*/memory.max_usage_in_bytes", recursive=True):
        with open(path) as fh:
            found[os.path.basename(os.path.dirname(path))] = int(fh.read())
    return found


def test_the_over_limit_model_serves_only_split(served):
    from aigc.gateway.cgroups import Cgroups

    probe = Cgroups(label="aigc-probe")
    usable = probe.usable
    probe.close()
    if not usable:
        pytest.skip("no writable memory cgroup here: process replicas' limits are not enforced")
    gw, root = served
    for k in range(1, STAGES + 1):
        gw.wait_for(stage(k), lambda s: s.get("availableReplicas", 0) >= 1, 300, "a ready replica")
    feeds = tokens(root)
    whole_resp = requests.post(f"{gw.url}/function/whole/v2/models/{MODEL}/infer", timeout=300,
                               json={"inputs": [{"name": n, "datatype": "INT64", "shape": list(v.shape),
                                                 "data": v.ravel().tolist()} for n, v in feeds.items()]})
    assert whole_resp.status_code == 503 and "OOMKilled" in whole_resp.text, whole_resp.text
    assert any("OOMKilled" in e and LIMIT in e for e in gateway_events(gw, "whole"))

    got = chain.Chain(chain.parse(",".join(stage(k) for k in range(1, STAGES + 1)), gw.url),
                      exec_timeout=300).run(["logits"], feeds)[0]
    session = ort.InferenceSession(str(root / MODEL / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["logits"], feeds)[0]
    diff = float(np.abs(got - expected).max())
    assert got.shape == (1, TOKENS, 49152) and diff <= MAX_DIFF

    limit = config.parse_size(LIMIT)
    peaks = cgroup_peaks(gw.process.pid)
    print(f"\nunsplit: {whole_resp.status_code} {whole_resp.text.strip()}")
    print(f"{MODEL}: chain vs whole max |diff| {diff:.2e}; limit {LIMIT}; cgroup peaks (MiB): "
          + ", ".join(f"{n} {b / 2**20:.0f}" for n, b in sorted(peaks.items())))
    for k in range(1, STAGES + 1):
        # each cgroup under the limit it was given: the replica's, and its zygote's (which holds a second
        # copy of the weights to fork later replicas from; docs on zygotes: aigc/gateway/zygotes.py)
        mine = {name: b for name, b in peaks.items() if name.startswith(stage(k) + "-")}
        assert any("zygote" not in name for name in mine), (stage(k), peaks)
        assert all(b < limit for b in mine.values()), (stage(k), mine)
