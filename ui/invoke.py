"""Trying functions from the browser: a streaming proxy to /function/NAME/PATH, and embeddings compared.

The proxy passes the function's answer through as it arrives (chunk by chunk,
no buffering), so text/event-stream tokens from text-generate reach the page
one by one. It is POST-only with the CSRF header: the verb sent on to the
function comes in `X-Invoke-Method`, so a cross-site link can never make the
browser call a function with the user's session.
"""

from __future__ import annotations

import json
import math
import re

from flask import Blueprint, Response, jsonify, request

from .gateway import GatewayError, check_name
from .views import gateway

bp = Blueprint("invoke", __name__)
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")
PASSED_BACK = ("Content-Type", "X-Call-Id", "X-Duration-Seconds")
MAX_SENTENCES, MAX_CHARS = 16, 4000


def _path(raw: str) -> str:
    raw = raw or "/"
    if not PATH.match(raw) or ".." in raw.split("?", 1)[0].split("/") or raw.startswith("//"):
        raise GatewayError(400, f"path {raw!r} must start with / and use URL characters only")
    return raw


@bp.post("/functions/<name>/invoke")
def proxy(name):
    method = request.headers.get("X-Invoke-Method", "POST").upper()
    if method not in METHODS:
        raise GatewayError(400, f"method must be one of {sorted(METHODS)}")
    path = _path(request.args.get("path", "/"))
    headers = {k: request.headers[k] for k in ("Content-Type", "Accept") if k in request.headers}
    data = request.get_data() if method in ("POST", "PUT", "PATCH") else None
    upstream = gateway().invoke(check_name(name), path, method, data=data, headers=headers, stream=True)

    def relay():
        try:
            # chunk_size=None yields each piece as the socket delivers it instead of filling a buffer first
            yield from upstream.iter_content(chunk_size=None)
        finally:
            upstream.close()  # the browser went away or the stream ended: let the gateway (and model) stop

    out = {k: upstream.headers[k] for k in PASSED_BACK if k in upstream.headers}
    out.update({"X-Accel-Buffering": "no", "X-Function-Status": str(upstream.status_code)})
    return Response(relay(), status=upstream.status_code, headers=out, direct_passthrough=True)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


@bp.post("/functions/<name>/similarity")
def similarity(name):
    body = request.get_json(silent=True) or {}
    sentences = body.get("sentences")
    if (not isinstance(sentences, list) or not 2 <= len(sentences) <= MAX_SENTENCES
            or not all(isinstance(s, str) and s.strip() and len(s) <= MAX_CHARS for s in sentences)):
        raise GatewayError(400, f"send 2 to {MAX_SENTENCES} non-empty sentences of at most {MAX_CHARS} characters")
    gw = gateway()
    model = body.get("model") or (gw.function(check_name(name)).get("envVars") or {}).get("MODEL_NAME", "")
    resp = gw.invoke(check_name(name), "/v1/embeddings", "POST", headers={"Content-Type": "application/json"},
                     data=json.dumps({"model": model, "input": sentences}).encode())
    try:
        answer = resp.json()
    except ValueError:
        raise GatewayError(502, f"{name} answered {resp.status_code} with non-JSON: {resp.text[:300]}") from None
    if resp.status_code != 200:
        raise GatewayError(resp.status_code, answer.get("error") if isinstance(answer, dict) else str(answer))
    try:
        # OpenAI returns `data` with an `index` per vector; order by it rather than trusting list order
        vectors = [d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])]
    except (KeyError, TypeError):
        raise GatewayError(502, f"{name} did not answer in the OpenAI embeddings shape") from None
    if len(vectors) != len(sentences):
        raise GatewayError(502, f"{name} returned {len(vectors)} vectors for {len(sentences)} sentences")
    matrix = [[round(cosine(a, b), 4) for b in vectors] for a in vectors]
    return jsonify({"model": answer.get("model", model), "sentences": sentences, "matrix": matrix,
                    "dimensions": len(vectors[0]) if vectors else 0, "usage": answer.get("usage")})

