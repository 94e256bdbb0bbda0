"""`GET /system/models[/NAME]`: the gateway's model store as model cards (aigc/gateway/models.py)."""

from __future__ import annotations

import json

import pytest
import requests

from aigc.runtime import store
from gateway_helpers import GatewayProcess, write_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw-models")
    root = tmp / "store"
    base = root / "tiny"
    base.mkdir(parents=True)
    (base / "weights.bin").write_bytes(b"\0" * 100)
    store.write_manifest(base, {"name": "tiny", "task": "text-generation", "format": "safetensors",
                                "sources": [{"package": "p", "version": "1", "license": "Apache-2.0"}]})
    (base / "metrics.json").write_text(json.dumps({"perplexity": {"test": 7.5}}))
    adapter = root / "tiny--coq"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"\1" * 10)
    store.write_manifest(adapter, {"name": "tiny--coq", "task": "lora-adapter", "base": "tiny", "adapter": "coq",
                                   "format": "peft", "training": {"eval_loss": 1.25}})
    broken = root / "broken"
    broken.mkdir()
    (broken / "w.bin").write_bytes(b"abc")
    store.write_manifest(broken, {"name": "broken", "task": "image-classification", "format": "onnx"})
    (broken / "w.bin").write_bytes(b"abcdef")  # the size no longer matches the manifest
    gw = GatewayProcess(write_stack(tmp / "stack.yml", {}), tmp / "state", env={"AIGC_MODEL_STORE": str(root)})
    yield gw
    gw.stop()


def test_the_store_as_model_cards(gateway):
    assert requests.get(gateway.url + "/system/models", timeout=10).status_code == 401
    cards = {c["name"]: c for c in requests.get(gateway.url + "/system/models", auth=gateway.auth,
                                                 timeout=10).json()["models"]}
    assert set(cards) == {"tiny", "tiny--coq", "broken"}
    tiny = cards["tiny"]
    assert tiny["adapters"] == ["coq"] and tiny["licences"] == ["Apache-2.0"] and tiny["size"] == 100
    assert tiny["metrics"] == {"perplexity": {"test": 7.5}} and "sha256" in tiny["files"]["weights.bin"]
    coq = cards["tiny--coq"]
    assert coq["base"] == "tiny" and coq["served_as"] == "tiny:coq" and coq["details"]["training"]["eval_loss"] == 1.25
    assert "damaged" in cards["broken"]["problem"] and cards["broken"]["task"] == "image-classification"
    one = requests.get(gateway.url + "/system/models/tiny--coq", auth=gateway.auth, timeout=10)
    assert one.status_code == 200 and one.json() == coq


@pytest.mark.parametrize("name, status", [("nope", 404), ("..", 404), ("a..b", 400), ("-x", 400),
                                          ("%2e%2e%2fstate", 400)])
def test_unknown_and_hostile_names(gateway, name, status):
    resp = requests.get(gateway.url + "/system/models/" + name, auth=gateway.auth, timeout=10)
    assert resp.status_code == status, resp.text
    assert "error" in resp.json()
