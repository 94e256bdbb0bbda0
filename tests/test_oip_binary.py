"""The OIP binary tensor data extension and compressed bodies, with tritonclient's own encoder and decoder.

tritonclient builds the request bodies (`generate_request_body`) and parses the responses
(`InferResult.from_response_body`), so these tests hold the runtime to what the official client sends
and reads; the functions' end-to-end tests do the same over real HTTP.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient

from aigc.runtime import errors, oip
from aigc.runtime.model import TensorSpec
from test_runtime_app import make_client, wait_ready

HEADER = "Inference-Header-Content-Length"


@pytest.fixture
def client(monkeypatch):
    _, client = make_client(monkeypatch)
    wait_ready(client)
    return client


def infer(client, inputs, outputs=None, headers=None, encode=None, **params):
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs,
                                                                           parameters=params or None)
    headers = dict(headers or {})
    if json_size is not None:
        headers[HEADER] = str(json_size)
    if encode:
        headers["Content-Encoding"] = encode
        body = gzip.compress(body) if encode == "gzip" else zlib.compress(body)
    return client.post("/v2/models/doubler/infer", data=body, headers=headers)


def result_of(resp) -> httpclient.InferResult:
    assert resp.status_code == 200, resp.get_data()
    length = resp.headers.get(HEADER)
    return httpclient.InferResult.from_response_body(resp.get_data(), header_length=int(length) if length else None)


def x_input(values: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", list(values.shape), "FP32")
    return tensor.set_data_from_numpy(values, binary_data=binary)


X = np.array([[1.5, -2.0], [7.0, 8.25]], dtype=np.float32)


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_binary_and_json_tensors_give_the_same_results(client, binary_in, binary_out):
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in ("y", "label")]
    resp = infer(client, [x_input(X, binary_in)], outputs)
    assert (HEADER in resp.headers) == binary_out
    assert resp.headers["Content-Type"] == ("application/octet-stream" if binary_out else "application/json")
    result = result_of(resp)
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)
    assert result.as_numpy("y").dtype == np.float32
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == ["small", "big"]


def test_without_requested_outputs_tritonclient_gets_every_output_binary(client):
    resp = infer(client, [x_input(X, True)])  # tritonclient then sets binary_data_output: true
    header = result_of(resp).get_response()
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [16, 2 * 4 + len("small") + len("big")]
    assert all("data" not in o for o in header["outputs"])


def test_one_output_can_opt_out_of_binary(client):
    outputs = [httpclient.InferRequestedOutput("y", binary_data=True),
               httpclient.InferRequestedOutput("label", binary_data=False)]
    result = result_of(infer(client, [x_input(X, True)], outputs))
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert by_name["label"]["data"] == ["small", "big"] and "data" not in by_name["y"]
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies(client, encoding):
    result = result_of(infer(client, [x_input(X, True)], encode=encoding))
    np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


def test_unknown_encoding_is_415_and_a_bomb_is_413(monkeypatch):
    _, client = make_client(monkeypatch, max_body_bytes=1 << 20)
    wait_ready(client)
    resp = client.post("/v2/models/doubler/infer", data=b"x", headers={"Content-Encoding": "br"})
    assert resp.status_code == 415 and "gzip, deflate" in resp.json["error"]
    bomb = gzip.compress(b"[" * (8 << 20))  # 8 MiB of brackets in ~8 KB
    resp = client.post("/v2/models/doubler/infer", data=bomb, headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 413 and "decompressed" in resp.json["error"]
    resp = client.post("/v2/models/doubler/infer", data=gzip.compress(b"{}")[:-6], headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 400 and "truncated" in resp.json["error"]
    assert result_of(infer(client, [x_input(X, True)])).as_numpy("y")[1, 1] == 16.5


def _raw(header: dict, tail: bytes, length: int | None = None) -> tuple[bytes, dict]:
    import json

    head = json.dumps(header).encode()
    return head + tail, {HEADER: str(len(head) if length is None else length)}


def _x(size: int, **extra) -> dict:
    return {"inputs": [dict({"name": "x", "shape": [2, 2], "datatype": "FP32",
                             "parameters": {"binary_data_size": size}}, **extra)]}


GOOD = X.tobytes()


@pytest.mark.parametrize("body, fragment", [
    (_raw(_x(16), GOOD, length=0), "JSON header's length"),
    (_raw(_x(16), GOOD, length=10**6), "JSON header's length"),
    (_raw(_x(16), GOOD[:8]), "only 8 follow"),
    (_raw(_x(8), GOOD[:8]), "needs 16 bytes of binary data"),
    (_raw(_x(16), GOOD + b"xx"), "add up to 16"),
    (_raw(_x(-1), GOOD), "non-negative integer"),
    (_raw(_x(16, data=[1, 2, 3, 4]), GOOD), "both 'data' and"),
    (_raw(_x(16), np.array([[1, np.nan], [1, 2]], np.float32).tobytes()), "finite"),
    (_raw({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32"}]}, b""), "needs 'data'"),
    (_raw(dict(_x(16), parameters={"binary_data_output": "yes"}), GOOD), "true or false"),
    (_raw(dict(_x(16), outputs=[{"name": "y", "parameters": {"class_count": 3}}]), GOOD), "classification"),
])
def test_malformed_binary_requests_get_clear_400s(client, body, fragment):
    data, headers = body
    resp = client.post("/v2/models/doubler/infer", data=data, headers=headers)
    assert resp.status_code == 400 and fragment in resp.json["error"], resp.json
    assert result_of(infer(client, [x_input(X, True)])).as_numpy("y")[0, 0] == 3.0


def _bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


@pytest.mark.parametrize("datatype, raw, fragment", [
    ("BYTES", _bytes_elements(b"ab") + b"\x05\x00\x00\x00ab", "past the end"),
    ("BYTES", _bytes_elements(b"ab", b"c") + b"z", "left after"),
    ("BYTES", b"\x01\x00", "at least 8 bytes"),
    ("BOOL", b"\x00\x02", "0 or 1"),
    ("INT64", b"\x00" * 15, "needs 16 bytes"),
])
def test_binary_values_are_checked(datatype, raw, fragment):
    body = {"inputs": [{"name": "v", "shape": [2], "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)}}]}
    with pytest.raises(errors.InvalidInput, match=fragment):
        oip.decode_inputs(body, (TensorSpec("v", datatype, (-1,)),), raw)


@pytest.mark.parametrize("datatype, values", [
    ("BYTES", np.array([b"\x00\xffraw", "é".encode()], dtype=object)),
    ("BOOL", np.array([True, False])),
    ("FP16", np.array([0.5, -65504], dtype=np.float16)),
    ("UINT64", np.array([2**64 - 1, 0], dtype=np.uint64)),
    ("INT8", np.array([-128, 127], dtype=np.int8)),
])
def test_every_datatype_round_trips_as_tritonclient_encodes_it(datatype, values):
    tensor = httpclient.InferInput("v", [2], datatype).set_data_from_numpy(values, binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    import json

    decoded, _ = oip.decode_inputs(json.loads(body[:json_size]), (TensorSpec("v", datatype, (-1,)),), body[json_size:])
    assert decoded["v"].dtype == (object if datatype == "BYTES" else values.dtype)
    assert list(decoded["v"]) == list(values)
    header, raw = oip.encode_binary("v", decoded["v"])
    assert header["parameters"]["binary_data_size"] == len(raw) == len(body) - json_size
    assert raw == body[json_size:]


def test_server_metadata_names_the_extension(client):
    assert client.get("/v2").json["extensions"] == ["binary_tensor_data"]
