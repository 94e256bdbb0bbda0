"""Replicas forked from a zygote: they serve the model the zygote loaded, report their exits, live in their
cgroup, die with the zygote; models that cannot be forked, and bad requests, fall back or are refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import requests
from conftest import REPO, echo_function, free_port
from gateway_helpers import GatewayProcess, write_stack
from test_ort_cache import run, write_conv_model

from aigc import buildctx, runner
from aigc.gateway.cgroups import Cgroups
from aigc.gateway.zygotes import Zygote, gunicorn_args
from aigc.runtime import ort as aort
from aigc.runtime import zygote as protocol

DOUBLE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]}]}


def start_zygote(tmp_path, **environment) -> Zygote:
    fn = echo_function(**environment)
    context = buildctx.assemble(fn, REPO, tmp_path / "build")
    args = gunicorn_args(buildctx.entrypoint(context))
    assert args is not None, "the template's fprocess is python -m gunicorn"
    return Zygote(context, args, runner.instance_env(fn, 8080, {}), runner.set_parent_death_signal, "echo-zygote")


@pytest.fixture
def zygote(tmp_path):
    z = start_zygote(tmp_path)
    deadline = time.monotonic() + 60
    while not z.ready():
        assert z.process.poll() is None, z.output.read().decode()
        assert time.monotonic() < deadline, "the zygote was not ready in 60 s"
        time.sleep(0.02)
    yield z
    z.stop()


def wait_ready(port: int, most: float = 30) -> None:
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/_/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"nothing ready on port {port}")


def test_a_forked_replica_serves_the_zygotes_model_and_reports_how_it_ended(zygote):
    port = free_port()
    replica = zygote.fork(port, None)
    assert replica.pid != zygote.process.pid and os.getpgid(replica.pid) == replica.pid  # its own session
    wait_ready(port)
    resp = requests.post(f"http://127.0.0.1:{port}/v2/models/doubler/infer", json=DOUBLE, timeout=10)
    assert resp.status_code == 200 and resp.json()["outputs"][0]["data"] == [3.0, 4.0]
    assert replica.poll() is None
    os.killpg(replica.pid, signal.SIGTERM)
    assert replica.wait(15) == 0  # gunicorn's graceful exit, reported by the zygote
    log = replica.stdout.read().decode()
    assert f"Listening at: http://127.0.0.1:{port}" in log
    assert "model doubler ready" not in log  # loaded once, in the zygote, not again in the replica

    second_port = free_port()
    second = zygote.fork(second_port, None)
    wait_ready(second_port)
    with pytest.raises(subprocess.TimeoutExpired):
        second.wait(0.1)
    os.killpg(second.pid, signal.SIGKILL)
    assert second.wait(10) == -signal.SIGKILL
    zygote.stop()
    out = zygote.output.read().decode()
    assert "model doubler ready" in out and "zygote ready" in out


def test_replicas_die_with_their_zygote(zygote):
    port = free_port()
    replica = zygote.fork(port, None)
    wait_ready(port)
    os.killpg(zygote.process.pid, signal.SIGKILL)  # the zygote's group only: the replica has its own session
    assert replica.wait(15) == -signal.SIGTERM  # no status from a dead zygote: reported as ended by SIGTERM
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/_/health", timeout=1)
        except requests.ConnectionError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the replica kept serving after its zygote died")


def test_a_bad_request_is_refused_and_the_zygote_keeps_forking(zygote):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # no log pipe sent with it
        conn.connect(str(zygote.path))
        conn.sendall(json.dumps({"port": 8080}).encode() + b"\n")
        assert "log pipe" in protocol.read_message(conn)[0]["error"]
    with pytest.raises(ValueError, match="port must be"):
        zygote.fork(70000, None)
    with pytest.raises(ValueError, match="cgroup must be"):
        zygote.fork(free_port(), "/etc")
    port = free_port()
    replica = zygote.fork(port, None)
    wait_ready(port)
    os.killpg(replica.pid, signal.SIGTERM)
    assert replica.wait(15) == 0


def test_a_model_that_cannot_be_forked_makes_the_zygote_say_why_and_exit(tmp_path):
    z = start_zygote(tmp_path, NO_FORK="1")
    try:
        assert z.process.wait(60) == protocol.EXIT_UNFORKABLE
        assert "doubler cannot be loaded before a fork" in z.output.read().decode()
    finally:
        z.stop()


@pytest.mark.skipif(not Cgroups(label="aigc-probe").usable, reason="no writable memory cgroup here")
def test_a_forked_replica_runs_in_its_own_memory_cgroup(zygote):
    cgroups = Cgroups(label="aigc-test-zygote")
    cgroup = cgroups.create("echo-forked", 256 << 20)
    try:
        port = free_port()
        replica = zygote.fork(port, str(cgroup.path))
        wait_ready(port)
        assert cgroup.path.name in open(f"/proc/{replica.pid}/cgroup").read()
        os.killpg(replica.pid, signal.SIGTERM)
        replica.wait(15)
    finally:
        cgroups.close()


def test_sessions_made_before_a_fork_get_their_threads_back(tmp_path, monkeypatch):
    monkeypatch.setenv(aort.CACHE_ENV, "off")
    monkeypatch.setenv("AIGC_ENGINE_THREADS", "2")
    model = tmp_path / "model.onnx"
    write_conv_model(model, seed=3)
    expected = run(aort.session(model))
    monkeypatch.setattr(aort, "_single_threaded", [])
    aort.prepare_fork()
    try:
        made = aort.session(model)
        assert made.threads == 1
    finally:
        aort.after_fork(delay=0).join(30)
    assert made.threads == 2 and not aort._before_fork
    np.testing.assert_allclose(run(made), expected, rtol=1e-6, atol=1e-6)


def test_scale_from_zero_forks_from_the_zygote_and_off_starts_a_process(tmp_path):
    """The gateway starts the zygote beside the first replica; later replicas are forked (their logs have
    no model load); with AIGC_ZYGOTE=off they are new processes that load the model themselves."""
    for mode in ("on", "off"):
        stack = write_stack(tmp_path / f"stack-{mode}.yml", {"echo": {"labels": {"com.openfaas.scale.min": "1"}}})
        gw = GatewayProcess(stack, tmp_path / f"state-{mode}", env={"AIGC_ZYGOTE": mode})
        try:
            gw.wait_for("echo", lambda s: s["availableReplicas"] == 1, 60, "ready")
            logs = lambda: [json.loads(line) for line in requests.get(  # noqa: E731
                gw.url + "/system/logs", params={"name": "echo"}, auth=gw.auth, timeout=30).text.splitlines()]
            deadline = time.monotonic() + 60
            while mode == "on" and not any("zygote ready" in e["text"] for e in logs()):
                assert time.monotonic() < deadline, "the zygote did not say it was ready"
                time.sleep(0.1)
            gw.client.scale("echo", 0)
            gw.wait_for("echo", lambda s: s["replicas"] == 0, 60, "scaled to zero")
            resp = requests.post(gw.url + "/function/echo/v2/models/doubler/infer", json=DOUBLE, timeout=60)
            assert resp.status_code == 200 and resp.json()["outputs"][0]["data"] == [3.0, 4.0]
            loaded = {e["instance"] for e in logs() if "model doubler ready" in e["text"]}
            if mode == "on":
                assert loaded == {"echo-0", "echo-zygote"}  # echo-1, from zero, was forked
            else:
                assert loaded == {"echo-0", "echo-1"}
        finally:
            gw.stop()
