"""A pipeline's model call, run by the stage functions `aigc split` wrote (docs/split.md).

    AIGC_CHAIN=efficientnet-lite0--stage-1-of-3,efficientnet-lite0--stage-2-of-3,efficientnet-lite0--stage-3-of-3

names the stage functions in order; an item `function=entry` serves a store entry whose name is not the
function's (the entry is the stage's OIP model name). AIGC_GATEWAY_URL (default http://127.0.0.1:8080) is
where they are reached, at `<url>/function/<function>` as on OpenFaaS; a URL with `{name}` in it is each
function's own address instead (Knative: `http://{name}.NAMESPACE.svc.cluster.local`).

`Chain.run(None, feeds)` answers like an ONNX Runtime session's `run`: it POSTs the feeds to stage 1's
`/v2/models/<entry>/infer` as OIP binary tensor data (a JSON header of `Inference-Header-Content-Length`
bytes, then the raw tensors), asks for binary outputs, sends those to stage 2, and so on; the last stage's
outputs are the model's. Every stage is its own function, so requests in flight pipeline through them.

Bounds: the whole chain must answer within what is left of the pipeline's exec_timeout (less a margin, so
the pipeline can still say which stage was slow); connecting takes at most CONNECT_TIMEOUT; a response
larger than AIGC_CHAIN_MAX_BYTES (default 64Mi) is refused without reading it. A failure names the stage:
`stage 2 of 3 (<function>): <what happened>`, as 502 (down, or an error answered), 503 (the stage says it
is not ready or is full: retry) or 504 (no answer in time).
"""

from __future__ import annotations

import http.client
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from . import errors, limits, oip, oip_binary, store
from .config import Settings, parse_size, read_env
from .handler import parse_json
from .model import TensorSpec

CHAIN_ENV = "AIGC_CHAIN"
GATEWAY_ENV = "AIGC_GATEWAY_URL"
MAX_BYTES_ENV = "AIGC_CHAIN_MAX_BYTES"
DEFAULT_GATEWAY = "http://127.0.0.1:8080"
DEFAULT_MAX_BYTES = 64 << 20
CONNECT_TIMEOUT = 5.0  # a gateway that takes longer to accept a connection is down for our purposes
_MARGIN = 0.25  # seconds kept back from the pipeline's deadline to answer with the failing stage's name
_CHUNK = 1 << 20
_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class StageFailed(errors.AigcError):
    """A stage is down or answered an error: the pipeline is a gateway in front of it."""

    status = 502


@dataclass(frozen=True)
class Stage:
    index: int
    of: int
    function: str
    model: str
    scheme: str
    host: str
    port: int
    path: str  # of the infer endpoint

    @property
    def label(self) -> str:
        return f"stage {self.index} of {self.of} ({self.function})"


def _name(item: str, what: str) -> str:
    try:  # both become path segments: the store's entry rule keeps them to one plain segment
        return store.check_entry(item)
    except errors.InvalidInput:
        raise ValueError(f"{CHAIN_ENV}: {what} {item!r} is not a function or model name") from None


def parse(spec: str, gateway: str = DEFAULT_GATEWAY) -> list[Stage]:
    """The stages of an AIGC_CHAIN value, reached through `gateway` (see the module's docstring)."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise ValueError(f"{CHAIN_ENV} is empty: name the stage functions in order, e.g. stage-1,stage-2")
    stages = []
    for index, item in enumerate(items, 1):
        function, _, entry = item.partition("=")
        function, entry = _name(function, "function"), _name(entry or function, "model")
        base = gateway.replace("{name}", function) if "{name}" in gateway else \
            f"{gateway.rstrip('/')}/function/{function}"
        url = urllib.parse.urlsplit(base)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError(f"{GATEWAY_ENV}={gateway!r}: use http(s)://host[:port][/path], e.g. {DEFAULT_GATEWAY}")
        port = url.port or (443 if url.scheme == "https" else 80)
        stages.append(Stage(index, len(items), function, entry, url.scheme, url.hostname, port,
                            f"{url.path.rstrip('/')}/v2/models/{entry}/infer"))
    return stages


def from_env(env: dict[str, str] | None = None) -> "Chain":
    env = dict(os.environ if env is None else env)
    spec = env.get(CHAIN_ENV)
    if not spec:
        raise ValueError(f"AIGC_ENGINE=chain needs {CHAIN_ENV}: the stage functions in order, e.g. "
                         f"{CHAIN_ENV}=model--stage-1-of-2,model--stage-2-of-2 (`aigc split --functions` writes it)")
    stages = parse(spec, env.get(GATEWAY_ENV) or DEFAULT_GATEWAY)
    return Chain(stages, Settings.from_env(env).exec_timeout,
                 read_env(env, MAX_BYTES_ENV, parse_size, DEFAULT_MAX_BYTES))


def encode_request(tensors: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """An infer request carrying every tensor as binary data and asking for binary outputs: the body and the
    length of its JSON header."""
    described, blobs = [], []
    for name, array in tensors.items():
        tensor, raw = oip.encode_binary(name, array)
        described.append(tensor)
        blobs.append(raw)
    head = orjson.dumps({"inputs": described, "parameters": {"binary_data_output": True}})
    return head + b"".join(blobs), len(head)


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """An infer response's outputs, binary or JSON, checked as strictly as a request's inputs are."""
    length = oip_binary.header_length(header_length, len(body))
    header = parse_json(body[:length] if length else body)
    outputs = header.get("outputs") if isinstance(header, dict) else None
    if not isinstance(outputs, list) or not all(isinstance(t, dict) for t in outputs):
        raise errors.InvalidInput("no 'outputs' list")
    try:
        specs = [TensorSpec(str(t.get("name")), str(t.get("datatype")), (-1,) * len(t.get("shape") or ()))
                 for t in outputs]
    except (TypeError, ValueError) as exc:  # a shape that is no list, a datatype OIP lacks
        raise errors.InvalidInput(f"an output is malformed: {exc}") from None
    values, _ = oip.decode_inputs({"inputs": outputs}, specs, memoryview(body)[length:] if length else b"")
    return values


class Chain:
    def __init__(self, stages: list[Stage], exec_timeout: float, max_bytes: int = DEFAULT_MAX_BYTES):
        self.stages, self.exec_timeout, self.max_bytes = stages, exec_timeout, max_bytes
        self._local = threading.local()  # one keep-alive connection per thread and address

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        left = limits.remaining()
        budget = self.exec_timeout if left is None else min(left, self.exec_timeout)
        deadline = time.monotonic() + budget - min(_MARGIN, budget / 10)
        values = dict(feeds)
        for stage in self.stages:
            values = self.call(stage, values, deadline)
        names = list(values) if output_names is None else list(output_names)
        missing = [n for n in names if n not in values]
        if missing:
            last = self.stages[-1]
            raise StageFailed(f"{last.label}: gave no output {missing}; it gave {sorted(values)}")
        return [values[n] for n in names]

    def call(self, stage: Stage, tensors: dict[str, np.ndarray], deadline: float) -> dict[str, np.ndarray]:
        body, head = encode_request(tensors)
        headers = {"Content-Type": "application/octet-stream", oip_binary.HEADER: str(head)}
        status, header_length, data = self._post(stage, body, headers, deadline)
        if status != 200:
            raise _failure(stage, status, data)
        try:
            return decode_response(data, header_length)
        except errors.AigcError as exc:
            raise StageFailed(f"{stage.label}: its answer is not OIP tensors: {exc.message}") from None

    def _post(self, stage: Stage, body: bytes, headers: dict[str, str], deadline: float
              ) -> tuple[int, str | None, bytes]:
        for attempt in (1, 2):
            conn, reused = self._connection(stage, deadline)
            try:
                conn.request("POST", stage.path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheader(oip_binary.HEADER), self._read(stage, conn, resp, deadline)
            except (OSError, http.client.HTTPException) as exc:
                self._drop(stage)
                # a keep-alive connection the other side closed while idle: inference is idempotent, send again
                if reused and attempt == 1 and isinstance(exc, _RETRYABLE):
                    continue
                raise _unreachable(stage, exc, f"within the pipeline's exec_timeout ({self.exec_timeout:g}s)") \
                    from None
        raise AssertionError("unreachable")

    def _connection(self, stage: Stage, deadline: float) -> tuple[http.client.HTTPConnection, bool]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise errors.Timeout(f"{stage.label}: no time left of the pipeline's exec_timeout "
                                 f"({self.exec_timeout:g}s) to call it")
        conns = self._local.__dict__.setdefault("conns", {})
        key = (stage.scheme, stage.host, stage.port)
        conn = conns.get(key)
        reused = conn is not None and conn.sock is not None
        if not reused:
            kind = http.client.HTTPSConnection if stage.scheme == "https" else http.client.HTTPConnection
            conn = conns[key] = kind(stage.host, stage.port, timeout=min(CONNECT_TIMEOUT, left))
            try:
                conn.connect()
            except OSError as exc:
                self._drop(stage)
                raise _unreachable(stage, exc, f"to a connection within {conn.timeout:g}s") from None
        conn.sock.settimeout(left)
        return conn, reused

    def _read(self, stage: Stage, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
              deadline: float) -> bytes:
        sock = conn.sock  # kept: http.client lets go of it when the response closes the connection
        declared = resp.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self._drop(stage)
            raise StageFailed(f"{stage.label}: answered {int(declared)} bytes, more than the {self.max_bytes} bytes "
                              f"this pipeline reads ({MAX_BYTES_ENV})")
        chunks, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the response did not finish in time")
            if sock is not None:
                sock.settimeout(left)
            chunk = resp.read(min(_CHUNK, self.max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                self._drop(stage)
                raise StageFailed(f"{stage.label}: answered more than the {self.max_bytes} bytes this pipeline "
                                  f"reads ({MAX_BYTES_ENV})")
        if resp.will_close:
            self._drop(stage)
        return b"".join(chunks)

    def _drop(self, stage: Stage) -> None:
        conn = self._local.__dict__.get("conns", {}).pop((stage.scheme, stage.host, stage.port), None)
        if conn is not None:
            conn.close()


def _unreachable(stage: Stage, exc: BaseException, within: str) -> errors.AigcError:
    if isinstance(exc, TimeoutError):
        return errors.Timeout(f"{stage.label}: no answer {within}")
    url = f"{stage.scheme}://{stage.host}:{stage.port}{stage.path}"
    return StageFailed(f"{stage.label}: cannot reach {url}: {type(exc).__name__}: {exc}")


def _failure(stage: Stage, status: int, data: bytes) -> errors.AigcError:
    """A stage's error answer as the pipeline's: its own message, with its status where that tells the caller
    more than 502 would (not ready or full: retry; too slow)."""
    try:
        said: Any = orjson.loads(data)
        said = said.get("error") if isinstance(said, dict) else None
    except orjson.JSONDecodeError:
        said = None
    text = str(said) if said else data[:300].decode("utf-8", "replace").strip() or "(no body)"
    message = f"{stage.label}: HTTP {status}: {text[:500]}"
    if status in (429, 503):
        return errors.ModelNotReady(message)
    if status == 504:
        return errors.Timeout(message)
    return StageFailed(message)
