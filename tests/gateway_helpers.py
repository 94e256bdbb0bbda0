"""Start the gateway as a real process, and a callback server to receive async results."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import yaml

from conftest import REPO, free_port

ECHO = str(REPO / "tests" / "handlers" / "echo")


def write_stack(path: Path, functions: dict[str, dict]) -> Path:
    doc = {"version": 1.0, "provider": {"name": "openfaas", "gateway": "http://127.0.0.1:8080"}, "functions": {}}
    for name, spec in functions.items():
        doc["functions"][name] = {"lang": "aigc-onnx", "handler": spec.get("handler", ECHO),
                                  "image": f"localhost/{name}:test", "labels": spec.get("labels", {}),
                                  "environment": spec.get("environment", {})}
        for key in ("environment_file", "secrets"):
            if key in spec:
                doc["functions"][name][key] = spec[key]
    path.write_text(yaml.safe_dump(doc))
    return path


class GatewayProcess:
    def __init__(self, stack: Path, state_dir: Path, port: int | None = None):
        self.stack, self.state_dir = stack, state_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(state_dir.parent / f"gateway-{self.port}.log", "ab")
        env = dict(os.environ, AIGC_STATE_DIR=str(state_dir), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, "-m", "aigc.cli", "up", "-f", str(stack), "--port",
                                         str(self.port)], cwd=REPO, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, f"gateway exited: {(state_dir.parent / self.log.name).read_text()[-2000:]}"
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
        self.auth = ("admin", (state_dir / "secrets" / "basic-auth-password").read_text().strip())

    def status(self, name: str) -> dict:
        resp = requests.get(f"{self.url}/system/function/{name}", auth=self.auth, timeout=5)
        resp.raise_for_status()
        return resp.json()

    def wait_for(self, name: str, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if predicate(status):
                return status
            assert time.monotonic() < deadline, f"{name}: {what} not reached in {timeout}s (last: {status})"
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class CallbackServer:
    """Records every POST it receives: (headers, body)."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float) -> list[tuple[dict, bytes]]:
        deadline = time.monotonic() + timeout
        while len({h.get("X-Call-Id") for h, _ in self.received}) < count:
            assert time.monotonic() < deadline, f"only {len(self.received)} of {count} callbacks in {timeout}s"
            time.sleep(0.1)
        return self.received

    def close(self):
        self.server.shutdown()
