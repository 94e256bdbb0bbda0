"""`aigc up --runtime podman`: replicas as containers from images, as faasd runs them.

A real gateway process drives real podman containers: a function image built
from our templates (image-classify, as faas-cli builds it) and an image that
only follows the watchdog contract (tests/images/watchdog-allocator). Env,
secrets at /var/openfaas/secrets, readOnlyRootFilesystem, memory limits, a
replica killed by its limit replaced and reported in logs and metrics.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from aigc.container import base
from aigc.container.podman import Podman, available
from aigc.gateway.containers import LABEL, gateway_id

from conftest import REPO
from gateway_helpers import GatewayProcess, gateway_events, write_stack
from image_helpers import build_function

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="podman is not installed (run.sh test installs it)")]
ALLOCATOR = "localhost/aigc-test-allocator:ci"
PHOTO = REPO / "functions" / "image-classify" / "testdata" / "chelsea.jpg"


@pytest.fixture(scope="module")
def podman():
    return Podman()


@pytest.fixture(scope="module")
def allocator(podman, tmp_path_factory) -> str:
    base.ensure(podman)
    podman.build(REPO / "tests" / "images" / "watchdog-allocator", ALLOCATOR, {},
                 tmp_path_factory.mktemp("alloc") / "build.log")
    return ALLOCATOR


@pytest.fixture(scope="module")
def gw(tmp_path_factory, allocator):
    tmp = tmp_path_factory.mktemp("gwpodman")
    gateway = GatewayProcess(write_stack(tmp / "stack.yml", {}), tmp / "state", runtime="podman")
    yield gateway
    gateway.stop()


def call(gw, method: str, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", gw.auth)
    return requests.request(method, gw.url + path, timeout=60, **kwargs)


def containers(podman: Podman, gw) -> list[dict]:
    label = f"label={LABEL}={gateway_id(gw.state_dir)}"
    return json.loads(podman("ps", "--all", "--format", "json", "--filter", label).stdout or "[]")


def inspect(podman: Podman, name: str) -> dict:
    return json.loads(podman("inspect", name).stdout)[0]


def _deploy(gw, body: dict, method: str = "POST") -> None:
    resp = call(gw, method, "/system/functions", json=body)
    assert resp.status_code in (200, 202), resp.text


def test_any_watchdog_image_runs_with_env_secrets_read_only_root_and_limits(gw, podman, allocator):
    value = "s3cr3t-" + base64.b16encode(b"x").decode()
    assert call(gw, "POST", "/system/secrets", json={"name": "api-key", "value": value}).status_code == 201
    _deploy(gw, {"service": "alloc", "image": allocator, "envVars": {"GREETING": "hi"}, "secrets": ["api-key"],
                 "readOnlyRootFilesystem": True, "limits": {"memory": "128Mi", "cpu": "500m"},
                 "requests": {"memory": "64Mi"}, "labels": {"com.openfaas.scale.min": "1"}})
    status = gw.wait_for("alloc", lambda s: s["availableReplicas"] == 1, 60, "a container replica")
    assert status["readOnlyRootFilesystem"] is True and status["limits"] == {"memory": "128Mi", "cpu": "500m"}
    assert call(gw, "GET", "/function/alloc/env?name=GREETING").json() == {"value": "hi"}
    assert call(gw, "GET", "/function/alloc/secret?name=api-key").json() == {"value": value}
    assert call(gw, "GET", "/function/alloc/write").json()["written"] is False
    assert call(gw, "POST", "/function/alloc/", data=b"ping").json() == {"echo": "ping"}

    # an updated secret reaches the running container, still readable by its non-root user
    assert call(gw, "PUT", "/system/secrets", json={"name": "api-key", "value": "rotated"}).status_code == 200
    assert call(gw, "GET", "/function/alloc/secret?name=api-key").json() == {"value": "rotated"}

    running = [c for c in containers(podman, gw) if c["State"] == "running" and "alloc" in c["Names"][0]]
    assert len(running) == 1
    host = inspect(podman, running[0]["Names"][0])["HostConfig"]
    assert host["Memory"] == 128 << 20 and host["ReadonlyRootfs"] is True
    assert host["NanoCpus"] == 500_000_000 and host["MemoryReservation"] == 64 << 20


def test_a_replica_over_its_memory_limit_is_replaced_and_reported(gw):
    gw.wait_for("alloc", lambda s: s["availableReplicas"] == 1, 60, "a container replica")
    resp = call(gw, "POST", "/function/alloc/allocate?mb=400")
    assert resp.status_code == 502, resp.text  # the kernel ended it mid-request
    deadline = time.monotonic() + 30
    while not (events := gateway_events(gw, "alloc")):
        assert time.monotonic() < deadline, "no event for the killed replica in the function's logs"
        time.sleep(0.2)
    assert any("OOMKilled" in e and "128Mi" in e for e in events), events
    gw.wait_for("alloc", lambda s: s["availableReplicas"] == 1, 60, "a replacement")
    assert call(gw, "POST", "/function/alloc/", data=b"again").json() == {"echo": "again"}
    metrics = requests.get(gw.url + "/metrics", timeout=10).text
    assert 'gateway_replica_exits_total{function_name="alloc",reason="oom_killed"} 1.0' in metrics


def test_an_image_that_is_not_there_is_a_clear_400(gw):
    resp = call(gw, "POST", "/system/functions", json={"service": "ghost", "image": "localhost/nope:1"})
    assert resp.status_code == 400 and "podman pull" in resp.json()["error"]


def test_a_template_image_serves_through_the_gateway_and_removal_removes_its_containers(
        gw, podman, model_store, tmp_path_factory):
    image = build_function("image-classify", podman, model_store, tmp_path_factory.mktemp("img")).image
    _deploy(gw, {"service": "classify", "image": image, "readOnlyRootFilesystem": True,
                 "limits": {"memory": "512Mi"}, "envVars": {"MODEL_NAME": "efficientnet-lite0"},
                 "annotations": {"com.openfaas.health.http.path": "/_/ready"}})
    gw.wait_for("classify", lambda s: s["availableReplicas"] == 1, 120, "the image-classify container")
    resp = call(gw, "POST", "/function/classify", data=PHOTO.read_bytes())
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"][0]["index"] in range(281, 286)  # a cat
    assert call(gw, "DELETE", "/system/functions", json={"functionName": "classify"}).status_code == 200
    deadline = time.monotonic() + 30
    while any("classify" in c["Names"][0] for c in containers(podman, gw)):
        assert time.monotonic() < deadline, "the removed function's container is still there"
        time.sleep(0.5)
