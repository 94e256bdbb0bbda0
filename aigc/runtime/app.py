"""The Flask app every template serves: health, metrics, OIP and the handler.

Request flow: a route checks the body size, takes an in-flight slot, waits
(within exec_timeout) for the models to finish loading, then runs the work on
the gate's pool. Any AigcError becomes `{"error": …}` with its status.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import os
import socket
import time
import zlib
from types import ModuleType
from typing import Any

import numpy as np
import orjson
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import __version__
from . import errors, metrics, oip, oip_binary, ort, secrets, store
from .config import Settings
from .handler import Context, Event, parse_json, to_response
from .limits import Gate
from .model import Model

log = logging.getLogger("aigc.runtime")
_DRAIN_LIMIT = 256 << 20  # read and drop oversized bodies up to this, so the client sees our 413 …
_DRAIN_SECONDS = 2.0      # … but for no longer than this: a slow giant body must not hold a worker


def _models_of(module: ModuleType) -> dict[str, Model]:
    found: list[Model] = []
    if isinstance(getattr(module, "model", None), Model):
        found.append(module.model)
    extra = getattr(module, "models", None) or []
    found.extend(extra.values() if isinstance(extra, dict) else extra)
    return {m.name: m for m in found}


class Runtime:
    """What one instance serves: the handler module, its models and its limits."""

    def __init__(self, module: ModuleType, settings: Settings):
        self.module = module
        self.settings = settings
        self.models = _models_of(module)
        self.handle = getattr(module, "handle", None)
        self.context = Context(models=self.models)
        self.gate = Gate(settings.max_inflight, settings.exec_timeout,
                         pool_size=max(settings.threads, settings.max_inflight or 0, 1))
        self.name = os.environ.get("AIGC_FUNCTION_NAME") or next(iter(self.models), "function")

    def start_loading(self) -> None:
        for m in self.models.values():
            m.start_loading()

    def load_before_fork(self) -> str | None:
        """In a zygote: load every model now, on one engine thread. Returns why replicas cannot be
        forked from this process, or None when they can."""
        unsafe = sorted(m.name for m in self.models.values() if not m.fork_safe)
        if unsafe:
            return f"model(s) {', '.join(unsafe)} cannot be loaded before a fork (their engine keeps threads)"
        ort.prepare_fork()
        for m in self.models.values():
            m.load_now()
        return self.failures()

    def after_fork(self) -> None:
        """In a replica forked from a zygote: models loaded there get the replica's engine threads back."""
        ort.after_fork()

    def wait_models(self, seconds_left: float) -> None:
        for m in self.models.values():
            m.wait_ready(seconds_left)

    def model(self, name: str, version: str | None) -> Model:
        m = self.models.get(name)
        if m is None:
            raise errors.ModelNotFound(f"unknown model {name!r}; this function serves {sorted(self.models)}")
        if version is not None and version != m.version:
            raise errors.ModelNotFound(f"model {name!r} has no version {version!r}")
        return m

    def ready(self) -> bool:
        return all(m.ready for m in self.models.values())

    def failures(self) -> str | None:
        """`failed: <model>: <cause>` for every model that could not load, or None."""
        failed = [f"{m.name}: {m.load_error}" for m in self.models.values() if m.failed]
        return "failed: " + "; ".join(failed) if failed else None


def _error(status: int, message: str) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    return resp


def _drain_body() -> None:
    """Read and drop what an oversized body still sends, briefly, so the client gets to read our 413
    (a client that stops reading until it has sent everything would see a reset instead); a body that
    keeps coming past the byte or time budget just meets the closed connection."""
    stream, sock = request.environ.get("wsgi.input"), request.environ.get("gunicorn.socket")
    left, deadline = _DRAIN_LIMIT, time.monotonic() + _DRAIN_SECONDS
    while stream is not None and left > 0 and time.monotonic() < deadline:
        try:
            if sock is not None:  # a read waits for the client: bound each by what is left of the budget
                sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = stream.read(min(left, 1 << 20))
        except OSError:  # including the timeout: the connection is closed after the 413 anyway
            return
        if not chunk:
            return
        left -= len(chunk)
    if sock is not None:
        # gunicorn would read the rest of the body to reuse the connection (and ignores an app's
        # Connection: close): stop reading instead, so what is left ends with this response
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def _read_body(limit: int) -> bytes:
    """The request body, at most `limit` bytes. A Content-Length above it was refused before the request;
    a chunked body is read one byte past the limit, so one that is too large is a 413, not a body silently
    cut at the limit (what werkzeug's limited stream would give)."""
    if request.content_length is not None or request.environ.get("wsgi.input") is None:
        data = request.get_data(cache=False)
    else:
        data = request.environ["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            raise RequestEntityTooLarge()
    return _decompress(data, limit)


_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # deflate means the zlib format in HTTP


def _decompress(data: bytes, limit: int) -> bytes:
    """A body sent with Content-Encoding gzip or deflate (tritonclient's request compression), inflated to at
    most `limit` bytes, so a small bomb cannot expand past what an uncompressed body may be."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "identity":
        return data
    if encoding not in _ENCODINGS:
        raise errors.UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate "
                                          "or an uncompressed body")
    inflater = zlib.decompressobj(_ENCODINGS[encoding])
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise errors.InvalidInput(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise errors.PayloadTooLarge(f"the decompressed body is larger than the {limit} bytes this function "
                                     "accepts (AIGC_MAX_BODY_SIZE)")
    if not inflater.eof:
        raise errors.InvalidInput(f"body is truncated {encoding} data")
    return out


def _oip_response(header: dict, binary: bytes) -> Response:
    """An infer response: JSON, or (binary extension) the JSON header and then the outputs' bytes."""
    payload = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY, default=_to_list)
    if not binary:
        return Response(payload, content_type="application/json")
    return Response(payload + binary, content_type="application/octet-stream",
                    headers={oip_binary.HEADER: str(len(payload))})


def _to_list(value: Any) -> Any:
    if isinstance(value, np.ndarray):  # dtypes orjson does not write itself
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_OPEN_PATHS = ("/_/health", "/_/ready", "/metrics")  # probes and scraping, as a platform needs them


def _check_token(secret_name: str) -> None:
    """AIGC_AUTH_TOKEN_SECRET: each call carries `Authorization: Bearer <the secret's value>`. Read on every
    call, so a rotated secret (faas-cli secret update) applies at once; compared in constant time."""
    expected = secrets.read(secret_name).encode()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise errors.Unauthorized(f"this function needs 'Authorization: Bearer <token>', the value of the "
                                  f"secret {secret_name!r}")


def create_app(handler_module: str | ModuleType | None = None, settings: Settings | None = None,
               load: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    module = handler_module
    if module is None or isinstance(module, str):
        module = importlib.import_module(module or os.environ.get("AIGC_HANDLER_MODULE", "function.handler"))
    runtime = Runtime(module, settings)

    app = Flask("aigc-function")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["aigc"] = runtime

    @app.before_request
    def _start_clock():
        g.started = time.perf_counter()
        if settings.auth_token_secret and request.path not in _OPEN_PATHS:
            _check_token(settings.auth_token_secret)
        if request.content_length and request.content_length > settings.max_body_bytes:
            raise RequestEntityTooLarge()

    @app.after_request
    def _record(resp: Response):
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.observe(rule, request.method, resp.status_code, time.perf_counter() - g.get("started", time.perf_counter()))
        return resp

    @app.errorhandler(errors.AigcError)
    def _aigc_error(exc: errors.AigcError):
        resp = _error(exc.status, exc.message)
        if isinstance(exc, errors.Unauthorized):
            resp.headers["WWW-Authenticate"] = 'Bearer realm="function"'
        return resp

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc):
        _drain_body()
        return _error(413, f"request body is larger than the {settings.max_body_bytes} bytes this function "
                           "accepts (AIGC_MAX_BODY_SIZE)")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    # --- instance health (of-watchdog paths) ------------------------------
    # A model that failed to load makes both probes say why: readiness keeps traffic away, and
    # liveness has the platform restart the instance (a later pull or mount may succeed).
    @app.get("/_/health")
    def health():
        failed = runtime.failures()
        if failed:
            return _error(503, failed)
        return jsonify(status="ok")

    @app.get("/_/ready")
    def ready():
        failed = runtime.failures()
        if failed:
            return _error(503, failed)
        if runtime.gate.full():
            return _error(429, "at max_inflight")
        if not runtime.ready():
            return _error(503, "model is loading")
        return jsonify(status="ready")

    @app.get("/metrics")
    def prometheus():
        for m in runtime.models.values():
            metrics.MODEL_READY.labels(m.name).set(1 if m.ready else 0)
            if m.load_seconds is not None:
                metrics.MODEL_LOAD.labels(m.name).set(m.load_seconds)
        for name, pulled in list(store.pulls.items()):
            metrics.MODEL_PULL.labels(name).set(pulled["seconds"])
            metrics.MODEL_PULL_BYTES.labels(name).set(pulled["bytes"])
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    # --- Open Inference Protocol v2 ----------------------------------------
    @app.get("/v2")
    def server_metadata():
        return jsonify(name=runtime.name, version=__version__, extensions=[oip_binary.EXTENSION])

    @app.get("/v2/health/live")
    def live():
        return jsonify(live=True)

    @app.get("/v2/health/ready")
    def server_ready():
        if not runtime.ready():
            return _error(503, runtime.failures() or "model is loading")
        return jsonify(ready=True)

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def model_metadata(name: str, version: str | None = None):
        # A model may learn its tensors while loading (a split stage reads them from its manifest): on a cold
        # start the answer waits for the load, as an inference would, rather than describe no tensors.
        m = runtime.model(name, version)
        m.wait_ready(settings.exec_timeout)
        return jsonify(m.metadata())

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None):
        m = runtime.model(name, version)
        if not m.ready:
            return _error(503, f"model {name!r} is " + ("unavailable: " + m.load_error if m.failed else "loading"))
        return jsonify(name=name, ready=True)

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    def model_infer(name: str, version: str | None = None):
        m = runtime.model(name, version)
        raw = _read_body(request.max_content_length or 0)
        length = oip_binary.header_length(request.headers.get(oip_binary.HEADER), len(raw))
        body = parse_json(raw[:length] if length else raw)
        binary = memoryview(raw)[length:] if length else b""
        return _oip_response(*runtime.gate.run(lambda: oip.infer(m, body, binary), before=m.wait_ready))

    # --- the function's own handler -----------------------------------------
    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def function(path: str):
        if runtime.handle is None:
            raise errors.ModelNotFound(f"no route /{path}; this function serves the Open Inference Protocol under /v2")
        event = Event(body=_read_body(settings.max_body_bytes), headers=dict(request.headers), method=request.method,
                      query=request.args.to_dict(), path="/" + path)
        result = runtime.gate.run(lambda: runtime.handle(event, runtime.context), before=runtime.wait_models)
        return to_response(result)

    if load:
        runtime.start_loading()
    return app
