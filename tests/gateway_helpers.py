"""Start the gateway as a real process, and a callback server to receive async results."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import requests
import yaml

from aigc.bench.gateway import LocalGateway
from conftest import REPO

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


class GatewayProcess(LocalGateway):
    """The local gateway for tests, with its state in `state_dir` so a restart finds its queue."""

    def __init__(self, stack: Path, state_dir: Path, port: int | None = None, runtime: str = "process",
                 env: dict[str, str] | None = None):
        super().__init__(stack, state_dir.parent / "gateway.log", start_timeout=30, state_dir=state_dir, port=port,
                         runtime=runtime, env=env)
        self.auth = (self.client.user, self.client.password)

    def status(self, name: str) -> dict:
        return self.client.status(name)

    def wait_for(self, name: str, predicate, timeout: float, what: str) -> dict:
        return self.client.wait_for(name, predicate, timeout, what)


def gateway_events(gw: GatewayProcess, name: str) -> list[str]:
    """What the gateway itself wrote into a function's logs (replica exits; `faas-cli logs NAME` shows them)."""
    lines = requests.get(gw.url + "/system/logs", params={"name": name}, auth=gw.auth, timeout=30).text
    return [json.loads(line)["text"] for line in lines.splitlines() if "[gateway]" in line]


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
