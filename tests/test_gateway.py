"""The local gateway as a real process, with real replicas: API shapes, scaling, failures, async.

Every wait is bounded; the scaling windows are shortened by labels.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import REPO
from gateway_helpers import CallbackServer, GatewayProcess, write_stack

pytestmark = pytest.mark.slow

FUNCTIONS = {
    "zero": {"labels": {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "2s"}},
    "burst": {"labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "3",
                         "com.openfaas.scale.target": "1", "com.openfaas.scale.down.window": "2s"},
              "environment": {"max_inflight": "1"}},
    "victim": {"labels": {"com.openfaas.scale.min": "1"}},
    "jobs": {"labels": {"com.openfaas.scale.min": "1"}, "environment": {"FROM_INLINE": "inline", "BOTH": "inline"},
             "environment_file": ["env.yml"], "secrets": ["api-key"]},
    "broken": {"labels": {"com.openfaas.scale.zero": "true"}, "environment": {"FAIL_LOAD": "1"}},
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw")
    (tmp / "env.yml").write_text("environment:\n  FROM_FILE: file\n  BOTH: file\n")
    (tmp / "state" / "secrets").mkdir(parents=True)
    (tmp / "state" / "secrets" / "api-key").write_text("s3cr3t\n")
    gw = GatewayProcess(write_stack(tmp / "stack.yml", FUNCTIONS), tmp / "state")
    yield gw
    gw.stop()


def test_system_needs_basic_auth(gateway):
    for path in ("/system/functions", "/system/info", "/system/function/zero"):
        resp = requests.get(gateway.url + path)
        assert resp.status_code == 401 and "Basic" in resp.headers["WWW-Authenticate"]
    assert requests.get(gateway.url + "/system/functions", auth=("admin", "wrong")).status_code == 401
    assert requests.get(gateway.url + "/healthz").text == "OK"


def test_function_status_shape_follows_the_openapi_spec(gateway):
    listed = requests.get(gateway.url + "/system/functions", auth=gateway.auth).json()
    assert {f["name"] for f in listed} == set(FUNCTIONS)
    types = {"name": str, "image": str, "namespace": str, "envProcess": str, "envVars": dict, "labels": dict,
             "annotations": dict, "secrets": list, "invocationCount": int, "replicas": int,
             "availableReplicas": int, "createdAt": str, "readOnlyRootFilesystem": bool, "constraints": list}
    for status in listed:
        for key, kind in types.items():
            assert isinstance(status[key], kind), (key, status[key])
    spec = REPO.parent / "shared" / "spec" / "openfaas-gateway-openapi.yml"
    if spec.is_file():  # the real spec sits beside the repo in this project's CI
        schemas = yaml.safe_load(spec.read_text())["components"]["schemas"]
        for name, body in (("FunctionStatus", listed[0]),
                           ("GatewayInfo", requests.get(gateway.url + "/system/info", auth=gateway.auth).json())):
            assert set(schemas[name]["required"]) <= set(body)
            assert set(body) <= set(schemas[name]["properties"])
    info = requests.get(gateway.url + "/system/info", auth=gateway.auth).json()
    assert info["provider"]["orchestration"] == "process" and info["version"]["release"]


def test_unknown_functions_are_404(gateway):
    assert requests.post(gateway.url + "/function/nope", data=b"x").status_code == 404
    assert requests.post(gateway.url + "/async-function/nope", data=b"x").status_code == 404
    assert requests.get(gateway.url + "/system/function/nope", auth=gateway.auth).status_code == 404
    assert requests.post(gateway.url + "/system/scale-function/nope", auth=gateway.auth,
                         json={"serviceName": "nope", "replicas": 1}).status_code == 404
    assert requests.delete(gateway.url + "/system/functions", auth=gateway.auth,
                           json={"functionName": "nope"}).status_code == 404


def test_a_model_that_cannot_load_fails_requests_with_its_cause_not_a_timeout(gateway):
    started = time.monotonic()
    resp = requests.post(gateway.url + "/function/broken", data=b"x", timeout=60)
    assert resp.status_code == 503 and "fails to start" in resp.json()["error"]
    assert "failed: doubler: RuntimeError: weights file is corrupt" in resp.json()["error"]
    assert time.monotonic() - started < 30, "each replica's own failure report ends its start at once"


def test_scale_from_zero_answers_the_request_then_scales_to_zero(gateway):
    # deployed with its min replica (as OpenFaaS does), it idles to zero after zero-duration (2 s)
    gateway.wait_for("zero", lambda s: s["replicas"] == 0, 30, "idle to zero after 2s")
    assert gateway.status("zero")["invocationCount"] == 0
    # the counter is there at 0 before the first cold start, so Prometheus' increase() counts that one too
    assert 'gateway_cold_start_total{function_name="zero"} 0.0' in requests.get(gateway.url + "/metrics").text
    resp = requests.post(gateway.url + "/function/zero/some/path?x=1", data=b"hello", timeout=60)
    assert resp.status_code == 200 and resp.content == b"hello" and resp.headers["X-Call-Id"]
    status = gateway.status("zero")
    assert status["replicas"] == 1 and status["availableReplicas"] == 1 and status["invocationCount"] == 1
    metrics = requests.get(gateway.url + "/metrics").text
    assert 'gateway_cold_start_total{function_name="zero"} 1.0' in metrics
    assert 'gateway_function_invocation_total{code="200",function_name="zero"}' in metrics
    gateway.wait_for("zero", lambda s: s["replicas"] == 0, 15, "scale to zero after 2s idle")


def test_scale_up_under_load_and_back_down(gateway):
    gateway.wait_for("burst", lambda s: s["availableReplicas"] == 1, 30, "min replica ready")
    seen = []

    def watch():
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            seen.append(gateway.status("burst")["availableReplicas"])
            time.sleep(0.1)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        watcher = pool.submit(watch)
        calls = [pool.submit(requests.post, gateway.url + "/function/burst?sleep=1.5", data=b"x", timeout=60)
                 for _ in range(6)]
        codes = [c.result().status_code for c in calls]
        watcher.result()
    assert codes == [200] * 6
    assert max(seen) == 3, f"replicas seen: {sorted(set(seen))}"
    gateway.wait_for("burst", lambda s: s["replicas"] == 1, 15, "scale down to min after the window")


def _replica_pgid(gateway, name: str) -> int:
    return requests.get(f"{gateway.url}/function/{name}/pid", timeout=30).json()["pgid"]


def test_a_killed_replica_fails_its_request_and_is_replaced(gateway):
    gateway.wait_for("victim", lambda s: s["availableReplicas"] == 1, 30, "replica ready")
    pgid = _replica_pgid(gateway, "victim")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.post, gateway.url + "/function/victim?sleep=5", data=b"x", timeout=30)
        time.sleep(0.5)
        os.killpg(pgid, signal.SIGKILL)
        resp = slow.result()
    assert resp.status_code == 502 and "failed" in resp.json()["error"]
    # the count may read 1 before the pool has seen the exit (a status taken in between still lists the
    # killed replica): what must happen is that a new process answers within the bound
    deadline = time.monotonic() + 30
    while True:
        answer = requests.get(f"{gateway.url}/function/victim/pid", timeout=30)
        if answer.status_code == 200 and answer.json()["pgid"] != pgid:
            break
        assert time.monotonic() < deadline, f"no replacement replica: {answer.status_code} {answer.text[:200]}"
        time.sleep(0.1)
    assert requests.post(gateway.url + "/function/victim", data=b"back").content == b"back"


def test_environment_files_and_secrets_reach_the_replica(gateway):
    def get(path):
        return requests.get(gateway.url + "/function/jobs" + path, timeout=30).json()["value"]

    assert get("/env?name=FROM_FILE") == "file" and get("/env?name=FROM_INLINE") == "inline"
    assert get("/env?name=BOTH") == "inline"  # inline environment wins over environment_file, as in faas-cli
    assert get("/secret?name=api-key") == "s3cr3t"
    missing = requests.get(gateway.url + "/function/jobs/secret?name=other", timeout=30)
    assert missing.status_code == 500 and "not mounted" in missing.json()["error"]


def test_sse_passes_through_unbuffered(gateway):
    started = time.monotonic()
    with requests.get(gateway.url + "/function/jobs/stream?n=4", headers={"Accept": "text/event-stream"},
                      stream=True, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        first = next(l for l in lines if l)
        first_at = time.monotonic() - started
        rest = [l for l in lines if l]
    total = time.monotonic() - started
    assert first == b"data: 0" and rest == [b"data: 1", b"data: 2", b"data: 3"]
    assert total - first_at > 0.6, "the first event must arrive before the stream ends"


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_tritonclient_binary_tensors_pass_through_the_gateway(gateway, compression):
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(gateway.url.removeprefix("http://") + "/function/jobs")
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    tensor = httpclient.InferInput("x", [4, 2], "FP32").set_data_from_numpy(x, binary_data=True)
    result = client.infer("doubler", [tensor], request_compression_algorithm=compression)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 32
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


def test_async_calls_are_delivered_with_openfaas_headers(gateway):
    callbacks = CallbackServer()
    try:
        ids = []
        for i in range(3):
            resp = requests.post(gateway.url + f"/async-function/jobs/json", json={"i": i},
                                 headers={"X-Callback-Url": callbacks.url})
            assert resp.status_code == 202
            ids.append(resp.headers["X-Call-Id"])
        received = callbacks.wait(3, 30)
        by_id = {h["X-Call-Id"]: (h, b) for h, b in received}
        assert set(by_id) == set(ids)
        headers, body = by_id[ids[0]]
        assert headers["X-Function-Status"] == "201" and headers["X-Function-Name"] == "jobs"
        assert float(headers["X-Duration-Seconds"]) > 0 and b'"got": {"i": 0}' in body
    finally:
        callbacks.close()


def test_deploy_update_scale_and_delete_through_the_api(gateway):
    api = gateway.url + "/system/functions"
    body = {"service": "extra", "image": "localhost/victim:test", "labels": {"com.openfaas.scale.min": "1"},
            "envVars": {"exec_timeout": "5s"}}
    assert requests.post(api, json=body, auth=gateway.auth).status_code == 202
    assert requests.post(api, json=body, auth=gateway.auth).status_code == 400  # exists: use PUT
    bad = requests.post(api, json={"service": "x", "image": "docker.io/unknown:1"}, auth=gateway.auth)
    assert bad.status_code == 400 and "--runtime podman" in bad.json()["error"]
    assert requests.post(api, data=b"{oops", auth=gateway.auth).status_code == 400
    gateway.wait_for("extra", lambda s: s["availableReplicas"] == 1, 30, "deployed replica")
    body["envVars"] = {"exec_timeout": "7s"}
    assert requests.put(api, json=body, auth=gateway.auth).status_code == 200
    assert gateway.status("extra")["envVars"] == {"exec_timeout": "7s"}
    scale = requests.post(gateway.url + "/system/scale-function/extra", auth=gateway.auth,
                          json={"serviceName": "extra", "namespace": "openfaas-fn", "replicas": 2})
    assert scale.status_code == 202
    gateway.wait_for("extra", lambda s: s["availableReplicas"] == 2, 30, "manual scale to 2")
    assert requests.delete(api, json={"functionName": "extra"}, auth=gateway.auth).status_code == 200
    assert requests.get(gateway.url + "/system/function/extra", auth=gateway.auth).status_code == 404


def test_queued_async_work_survives_kill_9_and_restart(tmp_path):
    stack = write_stack(tmp_path / "stack.yml", {"slow": {
        "labels": {"com.openfaas.scale.zero": "true"}, "environment": {"LOAD_SECONDS": "2"}}})
    callbacks = CallbackServer()
    gw = GatewayProcess(stack, tmp_path / "state")
    try:
        ids = []
        for i in range(4):
            resp = requests.post(gw.url + "/async-function/slow", data=f"job-{i}".encode(),
                                 headers={"X-Callback-Url": callbacks.url})
            assert resp.status_code == 202
            ids.append(resp.headers["X-Call-Id"])
        gw.stop(signal.SIGKILL)  # mid cold start: nothing has been delivered yet
        assert not callbacks.received
        gw = GatewayProcess(stack, tmp_path / "state")
        received = callbacks.wait(4, 60)
        delivered = {h["X-Call-Id"]: b for h, b in received}
        assert set(delivered) == set(ids)  # at least once, with the X-Call-Id given at acceptance
        assert sorted(delivered.values()) == [f"job-{i}".encode() for i in range(4)]
    finally:
        gw.stop()
        callbacks.close()
