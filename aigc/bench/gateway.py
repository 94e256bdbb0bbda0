"""Talk to a gateway's /system API, or start a local one (`aigc up`) for the length of a run."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


class GatewayClient:
    def __init__(self, url: str, user: str = "admin", password: str = ""):
        self.url = url.rstrip("/")
        self.user, self.password = user, password
        self.session = requests.Session()
        self.session.auth = (user, password) if password else None

    def status(self, name: str) -> dict:
        resp = self.session.get(f"{self.url}/system/function/{name}", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def scale(self, name: str, replicas: int) -> None:
        self.session.post(f"{self.url}/system/scale-function/{name}", timeout=10,
                          json={"serviceName": name, "replicas": replicas}).raise_for_status()

    def wait_for(self, name: str, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {what} not reached in {timeout:.0f}s (replicas={status.get('replicas')}, "
                                   f"available={status.get('availableReplicas')})")
            time.sleep(0.1)

    def redeploy(self, name: str, labels: dict[str, str] | None = None, env: dict[str, str] | None = None) -> dict:
        """PUT the function back with some labels/env changed; returns the status before, for `restore`."""
        before = self.status(name)
        self._put(before, labels or {}, env or {})
        return before

    def restore(self, before: dict) -> None:
        self._put(before, {}, {}, replace_labels=True)

    def _put(self, status: dict, labels: dict[str, str], env: dict[str, str], replace_labels: bool = False) -> None:
        body = {"service": status["name"], "image": status["image"],
                "envProcess": status.get("envProcess") or "",
                "envVars": {**(status.get("envVars") or {}), **env},
                "labels": dict(status.get("labels") or {}) if replace_labels else
                          {**(status.get("labels") or {}), **labels},
                "annotations": status.get("annotations") or {}, "secrets": status.get("secrets") or [],
                "limits": status.get("limits"), "requests": status.get("requests")}
        if status.get("namespace"):
            body["namespace"] = status["namespace"]
        resp = self.session.put(f"{self.url}/system/functions", json=body, timeout=60)
        if resp.status_code >= 300:
            raise RuntimeError(f"redeploying {status['name']} failed: HTTP {resp.status_code} {resp.text[:300]}")


def write_echo_stack(path: Path, min_replicas: int = 1, max_replicas: int = 2, max_inflight: int = 0) -> Path:
    """A stack.yml with one function, `echo`: tests/handlers/echo, the smallest real handler."""
    path.write_text(
        'version: 1.0\nprovider: {name: openfaas, gateway: "http://127.0.0.1:8080"}\nfunctions:\n  echo:\n'
        f"    lang: aigc-onnx\n    handler: {REPO / 'tests' / 'handlers' / 'echo'}\n    image: localhost/echo:test\n"
        f'    labels: {{com.openfaas.scale.min: "{min_replicas}", com.openfaas.scale.max: "{max_replicas}"}}\n'
        + (f'    environment: {{max_inflight: "{max_inflight}"}}\n' if max_inflight else ""))
    return path


def copy_functions(names, work: Path) -> Path:
    """`work/stack.yml` holding only these functions of the repo's stack.yml (comments and all, through
    ruamel), with their handlers copied to `work/functions/`, for a run that adds functions of its own."""
    import shutil

    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(REPO / "stack.yml")
    for name in list(doc["functions"]):
        if name not in names:
            del doc["functions"][name]
        else:
            (work / "functions" / name).mkdir(parents=True)
            shutil.copy(REPO / "functions" / name / "handler.py", work / "functions" / name / "handler.py")
    yaml.dump(doc, work / "stack.yml")
    return work / "stack.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalGateway:
    """`aigc up` on a loopback port, stopped on exit. Without `state_dir` it uses a throwaway
    AIGC_STATE_DIR, with a random value for each secret the stack names; with one, the state is
    kept (a restart finds its queued async calls)."""

    def __init__(self, stack: Path, log_path: Path, start_timeout: float = 60.0,
                 state_dir: Path | None = None, port: int | None = None, runtime: str = "process",
                 env: dict[str, str] | None = None):
        self.stack = Path(stack).resolve()
        self.tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="aigc-bench-")
        self.state_dir = Path(state_dir) if state_dir else Path(self.tmp.name) / "state"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        if self.tmp:
            self._generate_secrets()
        # like faas-cli, `aigc up` takes templates from ./template; the repo has them for stacks kept elsewhere
        cwd = self.stack.parent if (self.stack.parent / "template").is_dir() else REPO
        env = dict(os.environ, **(env or {}), AIGC_STATE_DIR=str(self.state_dir), PYTHONUNBUFFERED="1")
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "aigc.cli", "up", "-f", str(self.stack),
                                         "--port", str(self.port), "--runtime", runtime], cwd=cwd, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait_healthy(start_timeout)
        except BaseException:
            self.stop()
            raise
        password = (self.state_dir / "secrets" / "basic-auth-password").read_text().strip()
        self.client = GatewayClient(self.url, "admin", password)

    def _generate_secrets(self) -> None:
        from aigc import stack as stack_mod
        from aigc.gateway.secrets import SecretStore

        store = SecretStore(self.state_dir / "secrets")
        for fn in stack_mod.load(self.stack).functions.values():
            for name in fn.secrets:
                if not store.exists(name):
                    store.write(name, secrets.token_urlsafe(24).encode(), create=True)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the local gateway exited with {self.process.returncode}: {tail}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the local gateway did not answer /healthz in {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        if self.tmp:
            self.tmp.cleanup()
            self.tmp = None

    def __enter__(self) -> "LocalGateway":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
