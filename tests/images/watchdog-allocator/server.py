"""A minimal watchdog-contract function for the gateway's container tests.

GET /_/health answers ok; GET /env?name=X returns an env var; GET /secret?name=X
reads /var/openfaas/secrets/X; GET /write tries to write to the root
filesystem; POST /allocate?mb=N holds N MiB (to cross a memory limit); any
other request echoes its body.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

held = []


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/_/health":
            return self._answer(200, {"status": "ok"})
        if url.path == "/env":
            return self._answer(200, {"value": os.environ.get(query["name"])})
        if url.path == "/secret":
            try:
                with open(os.path.join("/var/openfaas/secrets", query["name"])) as fh:
                    return self._answer(200, {"value": fh.read()})
            except OSError as exc:
                return self._answer(404, {"error": str(exc)})
        if url.path == "/write":
            try:
                with open("/app/written", "w") as fh:
                    fh.write("x")
                return self._answer(200, {"written": True})
            except OSError as exc:
                return self._answer(200, {"written": False, "error": str(exc)})
        return self._answer(404, {"error": "unknown path"})

    def do_POST(self):
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path == "/allocate":
            mb = int(parse_qs(url.query)["mb"][0])
            held.append(bytearray(os.urandom(1 << 20)) * mb)  # touched pages, so they count
            return self._answer(200, {"held_mb": mb})
        return self._answer(200, {"echo": body.decode(errors="replace")})

    def log_message(self, fmt, *args):
        print("request:", fmt % args, flush=True)


if __name__ == "__main__":
    print("listening on 8080", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
