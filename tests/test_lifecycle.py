"""Instance lifecycle under real gunicorn: readiness while loading, SIGTERM, workers."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from conftest import echo_function, png_bytes

pytestmark = pytest.mark.slow


def test_health_then_ready_while_the_model_loads(serve):
    inst = serve(echo_function(LOAD_SECONDS="2"), wait=False)
    deadline = time.monotonic() + 30
    while True:
        try:
            health = requests.get(inst.url + "/_/health", timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert health.status_code == 200
    assert requests.get(inst.url + "/_/ready").status_code == 503
    # a request sent while loading waits for the model instead of failing
    resp = requests.post(inst.url + "/v2/models/doubler/infer", json={"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [3, 4]}]}, timeout=30)
    assert resp.status_code == 200 and resp.json()["outputs"][0]["data"] == [6.0, 8.0]
    assert requests.get(inst.url + "/_/ready").status_code == 200


def _serve_some(inst, photos, fn_name):
    for _ in range(5):
        if fn_name == "image-classify":
            assert requests.post(inst.url + "/", data=png_bytes(photos["coffee"])).status_code == 200
        else:
            assert requests.post(inst.url + "/", data=b"x").status_code == 200


@pytest.mark.parametrize("case", ["image-classify", "ort-in-master"])
def test_sigterm_exits_promptly_with_onnxruntime_loaded(serve, stack_file, model_store, photos, case):
    if case == "image-classify":
        inst = serve(stack_file.functions["image-classify"])
    else:  # onnxruntime imported before fork + sync workers: without the worker_exit hook, ~30 s
        inst = serve(echo_function(IMPORT_ORT="1", AIGC_WORKERS="2", AIGC_WORKER_CLASS="sync"))
    _serve_some(inst, photos, case)
    started = time.monotonic()
    os.killpg(inst.process.pid, signal.SIGTERM)
    inst.process.wait(timeout=20)
    # onnxruntime in a forked worker can hang interpreter exit for ~30 s; the runtime must not
    assert time.monotonic() - started < 5


def test_two_workers_share_metrics(serve):
    inst = serve(echo_function(AIGC_WORKERS="2"))
    for _ in range(6):
        assert requests.post(inst.url + "/", data=b"x").status_code == 200
    text = requests.get(inst.url + "/metrics").text
    line = next(l for l in text.splitlines()
                if l.startswith("http_requests_total{") and 'route="/"' in l and 'method="POST"' in l)
    assert float(line.rsplit(" ", 1)[1]) == 6.0
