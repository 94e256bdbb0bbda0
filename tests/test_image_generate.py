"""image-generate as a real gunicorn process and through the gateway's async path, driven by the official
openai client: repeatable PNGs per seed, n images, sizes and bad fields refused by name, the faces'
restriction carried with every answer."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import REPO, running
from gateway_helpers import CallbackServer, GatewayProcess, write_stack

BOTH = "terrain-diffusion,dcgan-faces"


@pytest.fixture(scope="module")
def images(model_store, stack_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("image-generate")
    with running(stack_file.functions["image-generate"], folder, {"MODEL_NAMES": BOTH}) as url:
        yield url


def client(url):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def pngs(result) -> list[bytes]:
    return [base64.b64decode(d.b64_json) for d in result.data]


def test_a_fixed_seed_gives_the_same_png_bytes_and_another_seed_differs(images):
    make = lambda seed: client(images).images.generate(  # noqa: E731
        model="terrain-diffusion", prompt="rolling hills, difficulty 30", n=4, size="128x128",
        response_format="b64_json", extra_body={"seed": seed})
    first, again, other = make(7), make(7), make(70)
    assert len(first.data) == 4 and pngs(first) == pngs(again)
    assert not set(pngs(first)) & set(pngs(other))
    assert len(set(pngs(first))) == 4  # each image from its own seed
    grey = np.asarray(Image.open(io.BytesIO(pngs(first)[0])))
    assert grey.shape == (128, 128) and grey.dtype == np.uint16 and grey.min() == 0 and grey.std() > 100
    body = first.model_dump()
    assert body["seed"] == 7 and [p["difficulty"] for p in body["parameters"]] == [30] * 4
    assert body["prompt"] == "used: difficulty 30 from the prompt"


def test_image_i_of_a_request_is_the_first_image_of_seed_plus_i(images):
    body = {"model": "terrain-diffusion", "prompt": "difficulty 60", "n": 3, "seed": 100}
    batch = requests.post(images + "/v1/images/generations", json=body, timeout=120).json()["data"]
    single = requests.post(images + "/v1/images/generations", json=dict(body, n=1, seed=102), timeout=120).json()
    assert batch[2]["b64_json"] == single["data"][0]["b64_json"]


def test_faces_are_opt_in_and_carry_their_restriction(images):
    out = client(images).images.generate(model="dcgan-faces", prompt="a smiling face", n=2,
                                         extra_body={"seed": 1}).model_dump()
    assert out["prompt"] == "ignored: this model is unconditional"
    assert "non-commercial" in out["restrictions"]
    face = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["data"][0]["b64_json"]))))
    assert face.shape == (64, 64, 3) and face.std() > 10
    listed = {m["id"]: m for m in requests.get(images + "/v1/models", timeout=10).json()["data"]}
    assert "non-commercial" in listed["dcgan-faces"]["restrictions"]
    assert "restrictions" not in listed["terrain-diffusion"]


@pytest.mark.parametrize("body, field", [
    ({"prompt": "x", "size": "1024x1024"}, "valid sizes"), ({"prompt": "x", "n": 9}, "'n'"),
    ({"prompt": "x", "n": "2"}, "'n'"), ({"prompt": ["x"]}, "prompt"), ({"prompt": "x" * 1001}, "prompt"),
    ({"prompt": "x", "model": "dall-e-3"}, "model"), ({"prompt": "x", "response_format": "url"}, "response_format"),
    ({"prompt": "x", "seed": "7"}, "seed"), ({"prompt": "x", "difficulty": 101}, "difficulty"),
    ({"prompt": "x", "style": "vivid"}, "style")])
def test_bad_requests_are_400s_naming_the_field_and_the_instance_keeps_serving(images, body, field):
    import openai

    resp = requests.post(images + "/v1/images/generations", json=body, timeout=60)
    assert resp.status_code == 400 and field in resp.json()["error"], resp.text
    known = {k: v for k, v in body.items() if k in ("prompt", "model", "n", "size", "response_format", "style")}
    with pytest.raises(openai.BadRequestError) as raised:
        client(images).images.generate(**known, extra_body={k: v for k, v in body.items() if k not in known})
    assert field in raised.value.body  # the client keeps our {"error": …} string as the error's body
    assert requests.get(images + "/_/ready", timeout=10).status_code == 200


def test_a_batch_through_the_async_path_reaches_the_callback(tmp_path, model_store):
    stack = write_stack(tmp_path / "stack.yml", {"image-generate": {
        "handler": str(REPO / "functions" / "image-generate"), "labels": {"com.openfaas.scale.min": "1"},
        "environment": {"MODEL_NAMES": "terrain-diffusion"}}})
    gw, callback = GatewayProcess(stack, tmp_path / "state"), CallbackServer()
    try:
        body = {"prompt": "difficulty 90", "n": 4, "seed": 3}
        resp = requests.post(gw.url + "/async-function/image-generate/v1/images/generations", json=body,
                             headers={"X-Callback-Url": callback.url}, timeout=30)
        assert resp.status_code == 202
        headers, sent = callback.wait(1, 120)[0]
        assert headers.get("X-Function-Status") == "200", sent[:300]
        result = json.loads(sent)
        assert len(result["data"]) == 4 and [p["difficulty"] for p in result["parameters"]] == [90] * 4
    finally:
        callback.close()
        gw.stop()
