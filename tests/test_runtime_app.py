"""The runtime app through Flask's test client, with the echo handler (no processes)."""

from __future__ import annotations

import importlib.util
import re
import threading
import time
import types

import pytest

from aigc.runtime import Model, TensorSpec
from aigc.runtime.app import create_app
from aigc.runtime.config import Settings

from conftest import REPO


def load_echo():
    spec = importlib.util.spec_from_file_location(f"echo_handler_{time.monotonic_ns()}",
                                                  REPO / "tests" / "handlers" / "echo" / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_client(monkeypatch, load_seconds=0.0, fail=False, **settings):
    monkeypatch.setenv("LOAD_SECONDS", str(load_seconds))
    if fail:
        monkeypatch.setenv("FAIL_LOAD", "1")
    app = create_app(load_echo(), Settings(**settings), load=True)
    return app, app.test_client()


def wait_ready(client, timeout=5.0):
    deadline = time.monotonic() + timeout
    while client.get("/_/ready").status_code != 200:
        assert time.monotonic() < deadline, "model never became ready"
        time.sleep(0.01)


def test_health_answers_while_ready_waits_for_the_model(monkeypatch):
    _, client = make_client(monkeypatch, load_seconds=0.5)
    assert client.get("/_/health").status_code == 200
    not_ready = client.get("/_/ready")
    assert not_ready.status_code == 503 and "loading" in not_ready.json["error"]
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/doubler/ready").status_code == 503
    wait_ready(client)
    assert client.get("/v2/health/ready").json == {"ready": True}
    assert client.get("/v2/models/doubler/ready").json == {"name": "doubler", "ready": True}


def test_request_during_load_waits_instead_of_failing(monkeypatch):
    _, client = make_client(monkeypatch, load_seconds=0.4)
    resp = client.post("/v2/models/doubler/infer", json={"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
    assert resp.status_code == 200 and resp.json["outputs"][0]["data"] == [2.0, 4.0]


def test_failed_load_is_reported_not_hidden(monkeypatch, caplog):
    caplog.set_level("INFO", logger="aigc.runtime")
    _, client = make_client(monkeypatch, fail=True)
    deadline = time.monotonic() + 5
    while client.get("/_/health").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    health = client.get("/_/health")
    assert health.status_code == 503 and health.json["error"].startswith("failed: doubler: ")
    assert "weights file is corrupt" in health.json["error"]
    ready = client.get("/_/ready")  # not "loading": probes and `kubectl describe` must say why
    assert ready.status_code == 503 and ready.json == health.json
    assert client.get("/v2/health/ready").json == health.json
    resp = client.post("/", data=b"hi")
    assert resp.status_code == 503 and "failed to load" in resp.json["error"]
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "failed to load" in r.getMessage()]
    assert len(errors) == 1 and "doubler" in errors[0].getMessage() and "corrupt" in errors[0].getMessage()


def test_a_loaded_model_logs_one_ready_line(monkeypatch, caplog):
    caplog.set_level("INFO", logger="aigc.runtime")
    _, client = make_client(monkeypatch)
    wait_ready(client)
    lines = [r.getMessage() for r in caplog.records if "ready in" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("model doubler ready in ")


def test_oip_server_and_model_metadata(monkeypatch):
    _, client = make_client(monkeypatch)
    wait_ready(client)
    assert client.get("/v2/health/live").json == {"live": True}
    server = client.get("/v2").json
    assert set(server) == {"name", "version", "extensions"}
    meta = client.get("/v2/models/doubler").json
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    assert [o["name"] for o in meta["outputs"]] == ["y", "label"]
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/doubler/versions/7").status_code == 404


class LateSpecs(Model):
    """A model that learns its tensors while loading, as a split stage reads them from its manifest."""
    platform = "numpy"

    def __init__(self, name, load_seconds, fail=False):
        super().__init__(name)
        self.load_seconds, self.fail = load_seconds, fail

    def load(self):
        time.sleep(self.load_seconds)
        if self.fail:
            raise RuntimeError("manifest is missing")
        self.inputs = (TensorSpec("a", "FP32", (-1, 3)),)
        self.outputs = (TensorSpec("b", "FP32", (-1, 3)),)

    def predict(self, inputs, parameters):
        return {"b": inputs["a"]}


def late_specs_client(**kwargs):
    module = types.ModuleType(f"late_specs_{time.monotonic_ns()}")
    module.model = LateSpecs("late", **kwargs)
    return create_app(module, Settings(exec_timeout=5), load=True).test_client()


def test_model_metadata_asked_during_load_waits_for_its_tensors():
    client = late_specs_client(load_seconds=0.5)
    meta = client.get("/v2/models/late").json  # asked at once, as a client does on a cold start
    assert meta["inputs"] == [{"name": "a", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "b", "datatype": "FP32", "shape": [-1, 3]}]
    failed = late_specs_client(load_seconds=0.0, fail=True).get("/v2/models/late")
    assert failed.status_code == 503 and "manifest is missing" in failed.json["error"]


def test_oip_infer_shapes_and_ids(monkeypatch):
    _, client = make_client(monkeypatch)
    wait_ready(client)
    resp = client.post("/v2/models/doubler/infer", json={
        "id": "req-1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [5, 6]]}],
        "outputs": [{"name": "label"}]})
    assert resp.status_code == 200
    assert resp.json == {"model_name": "doubler", "id": "req-1", "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["small", "big"]}]}


@pytest.mark.parametrize("body, fragment", [
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}, "expects FP32"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "expects [-1, 2]"),
    ({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}, "needs 4 values"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]}, "must be numbers"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, True]}]}, "must be numbers"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1e300, 2]}]}, "beyond the range of FP32"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[1, 2], 3]}]}, "mixes lists and values"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[1], [[2]]]}]}, "must be numbers"),
    ({"inputs": [{"name": "z", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, "unknown input"),
    ({"inputs": []}, "non-empty 'inputs'"),
    ([1, 2], "JSON object"),
    # found by bench/fuzz.py once its cases named a served model: a non-string name was a TypeError (500)
    ({"inputs": [{"name": [], "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, "'name' must be a string"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
      "outputs": [{"name": ["label"]}]}, "string 'name'"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
      "outputs": [{"name": "nope"}]}, "unknown output"),
])
def test_oip_bad_requests_get_clear_400s(monkeypatch, body, fragment):
    _, client = make_client(monkeypatch)
    wait_ready(client)
    resp = client.post("/v2/models/doubler/infer", json=body)
    assert resp.status_code == 400 and fragment in resp.json["error"]
    ok = client.post("/v2/models/doubler/infer", json={"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
    assert ok.status_code == 200


def test_handler_contract_and_errors(monkeypatch):
    _, client = make_client(monkeypatch)
    wait_ready(client)
    echoed = client.post("/anything?x=1", data=b"\x00\x01raw")
    assert echoed.status_code == 200 and echoed.data == b"\x00\x01raw"
    created = client.post("/json", json={"a": 1})
    assert created.status_code == 201 and created.json == {"got": {"a": 1}} and created.headers["X-Echo"] == "1"
    malformed = client.post("/json", data=b"{nope", content_type="application/json")
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json["error"]
    assert client.post("/bad").json == {"error": "you sent something wrong"}
    crashed = client.post("/fail")
    assert crashed.status_code == 500 and "handler bug" in crashed.json["error"]
    assert client.post("/", data=b"still serving").data == b"still serving"


def test_oversized_body_is_413(monkeypatch):
    _, client = make_client(monkeypatch, max_body_bytes=1000)
    resp = client.post("/", data=b"x" * 1001)
    assert resp.status_code == 413 and "AIGC_MAX_BODY_SIZE" in resp.json["error"]
    assert client.post("/", data=b"x" * 1000).status_code == 200


def test_exec_timeout_gives_504_and_frees_the_slot_later(monkeypatch):
    app, client = make_client(monkeypatch, exec_timeout=0.3, max_inflight=1)
    wait_ready(client)
    started = time.monotonic()
    resp = client.post("/?sleep=0.8")
    assert resp.status_code == 504 and "exec_timeout" in resp.json["error"]
    assert time.monotonic() - started < 0.7
    # the overrunning work still holds the only slot until it really ends
    assert client.post("/").status_code == 429
    time.sleep(0.7)
    assert client.post("/", data=b"ok").status_code == 200


def test_max_inflight_gives_429_and_ready_reports_it(monkeypatch):
    _, client = make_client(monkeypatch, max_inflight=1)
    wait_ready(client)
    slow = threading.Thread(target=lambda: client.post("/?sleep=0.5"))
    slow.start()
    time.sleep(0.15)
    busy = client.post("/")
    assert busy.status_code == 429 and "max_inflight=1" in busy.json["error"]
    assert client.get("/_/ready").status_code == 429
    slow.join()
    assert client.post("/", data=b"ok").status_code == 200


def test_metrics_count_requests_by_route_and_status(monkeypatch):
    _, client = make_client(monkeypatch)
    wait_ready(client)
    client.post("/bad")
    text = client.get("/metrics").data.decode()
    assert 'http_requests_total{code="400",method="POST",route="/<path:path>"}' in text
    assert 'aigc_model_load_seconds{model="doubler"}' in text
    assert "http_request_duration_seconds_bucket" in text


def test_a_bearer_token_from_a_secret_guards_every_route_but_probes_and_metrics(monkeypatch, tmp_path):
    monkeypatch.setenv("AIGC_SECRETS_DIR", str(tmp_path))
    (tmp_path / "fn-token").write_text("first\n")
    _, client = make_client(monkeypatch, auth_token_secret="fn-token")
    denied = client.post("/", data=b"x")
    assert denied.status_code == 401 and "fn-token" in denied.json["error"]
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/", data=b"x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/", data=b"x", headers={"Authorization": "Basic Zmlyc3Q="}).status_code == 401
    assert client.post("/", data=b"x", headers={"Authorization": "Bearer first"}).data == b"x"
    for open_path in ("/_/health", "/metrics"):
        assert client.get(open_path).status_code == 200, open_path
    (tmp_path / "fn-token").write_text("rotated")  # faas-cli secret update: applies to the next call
    assert client.post("/", data=b"x", headers={"Authorization": "Bearer first"}).status_code == 401
    assert client.post("/", data=b"x", headers={"Authorization": "Bearer rotated"}).status_code == 200


@pytest.mark.parametrize("datatype, data, fragment", [
    ("INT8", [1, 200], "[-128, 127]"), ("INT64", [2**70, 1], "for INT64"), ("INT32", [1.5, 2], "whole numbers"),
    ("UINT8", [-1, 2], "[0, 255]"), ("FP64", [float("inf"), 1], "finite"), ("BOOL", [1, 0], "true/false"),
    ("BYTES", ["a", 1], "strings")])
def test_oip_values_are_checked_whole_arrays_at_a_time(datatype, data, fragment):
    from aigc.runtime import errors, oip
    from aigc.runtime.model import TensorSpec

    body = {"inputs": [{"name": "v", "shape": [2], "datatype": datatype, "data": data}]}
    with pytest.raises(errors.InvalidInput, match=re.escape(fragment)):
        oip.decode_inputs(body, (TensorSpec("v", datatype, (-1,)),))
    good = {"INT8": [1, -2], "INT64": [2**62, 1], "INT32": [1.0, 2], "UINT8": [0, 255], "FP64": [1e300, 1],
            "BOOL": [True, False], "BYTES": ["a", "b"]}[datatype]
    decoded, _ = oip.decode_inputs(dict(body, inputs=[dict(body["inputs"][0], data=good)]),
                                   (TensorSpec("v", datatype, (-1,)),))
    assert decoded["v"].shape == (2,) and list(decoded["v"]) == [g.encode() if isinstance(g, str) else g for g in good]
