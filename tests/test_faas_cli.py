"""The real faas-cli against `aigc up`: the commands a user runs, their exit codes and output.

Runs when a faas-cli binary is on PATH (or named by $FAAS_CLI); CI has none
(it cannot reach GitHub), so there the conformance suite in
test_gateway_api.py stands in, written from the same expectations. Last run
with faas-cli 0.18.12 (built from its source at c8191b7).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from gateway_helpers import GatewayProcess, write_stack

FAAS_CLI = os.environ.get("FAAS_CLI") or shutil.which("faas-cli")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not FAAS_CLI, reason="no faas-cli on PATH (or $FAAS_CLI)")]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faascli")
    gw = GatewayProcess(write_stack(tmp / "stack.yml", {"echo": {"labels": {"com.openfaas.scale.min": "1"}}}),
                        tmp / "state")
    env = dict(os.environ, OPENFAAS_URL=gw.url, OPENFAAS_CONFIG=str(tmp / "config"), NO_COLOR="1")
    cwd = tmp / "work"  # no stack.yml here: faas-cli would deploy that instead of --image
    cwd.mkdir()

    def run(*args: str, stdin: str = "", ok: bool = True) -> str:
        proc = subprocess.run([FAAS_CLI, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                              timeout=120)
        out = proc.stdout + proc.stderr
        assert (proc.returncode == 0) == ok, f"faas-cli {' '.join(args)} → {proc.returncode}: {out}"
        return out

    run("login", "--password-stdin", stdin=gw.auth[1])
    gw.wait_for("echo", lambda s: s["availableReplicas"] == 1, 60, "the echo replica")
    yield run
    gw.stop()


def test_version_list_describe_and_ready(cli):
    out = cli("version", "--short-version")
    assert out.strip()
    listed = cli("list")
    assert "echo" in listed
    described = cli("describe", "echo")
    assert "Status:             Ready" in described and "Available Replicas: 1" in described
    assert "ready" in cli("ready", "echo", "--attempts", "5").lower()


def test_namespaces_and_an_unknown_one(cli):
    assert "openfaas-fn" in cli("namespace", "list")
    assert "No such function" in cli("describe", "echo", "-n", "dev", ok=False)
    assert "namespace 'dev'" in cli("logs", "echo", "-n", "dev", "--tail=false", ok=False)


def test_secret_create_list_update_remove(cli):
    assert "201" in cli("secret", "create", "api-key", "--from-literal", "v1")
    assert "already exists" in cli("secret", "create", "api-key", "--from-literal", "v2")
    listed = cli("secret", "list")
    assert "api-key" in listed and "v1" not in listed
    assert "200" in cli("secret", "update", "api-key", "--from-literal", "v2")
    cli("secret", "remove", "api-key")
    assert "unable to find secret" in cli("secret", "remove", "api-key", ok=False).lower()


def test_logs_invoke_deploy_and_remove(cli):
    assert cli("invoke", "echo", stdin="hello") == "hello"
    logs = cli("logs", "echo", "--tail=false", "--instance")
    assert "(echo-0)" in logs and "Booting worker" in logs
    assert "--runtime podman" in cli("deploy", "--image", "docker.io/library/nginx:1", "--name", "web", ok=False)
    out = cli("deploy", "--image", "localhost/echo:test", "--name", "echo2", "--memory-limit", "256Mi",
              "--fprocess", "python -m gunicorn -c python:aigc.runtime.gunicorn_conf index:app",
              "--label", "com.openfaas.scale.min=1")
    assert "202" in out
    cli("ready", "echo2", "--attempts", "60")
    described = cli("describe", "echo2")
    assert "Memory: 256Mi" in described and "Function Process:   python -m gunicorn" in described
    assert cli("invoke", "echo2", stdin="again") == "again"
    cli("remove", "echo2")
    assert "echo2" not in cli("list")
