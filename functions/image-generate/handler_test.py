"""image-generate's own tests, run by the image's test stage (TEST_ENABLED=true) with the baked model."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from aigc.runtime import errors, testing
from function import handler

TERRAIN = "terrain-diffusion"
needs_model = testing.needs_model(TERRAIN)


def generate(body: dict) -> dict:
    testing.loaded(handler.models[TERRAIN])
    return handler.handle(testing.request("/v1/images/generations", json.dumps(body)), None)


def test_models_are_listed_openai_style():
    out = handler.handle(testing.request("/v1/models", method="GET"), None)
    assert [m["id"] for m in out["data"]] == list(handler.models)


@needs_model
def test_a_seed_repeats_the_png_and_the_prompt_sets_the_difficulty():
    first = generate({"prompt": "a mountain pass, difficulty 80", "seed": 4, "n": 2})
    again = generate({"prompt": "a mountain pass, difficulty 80", "seed": 4, "n": 2})
    assert [d["b64_json"] for d in first["data"]] == [d["b64_json"] for d in again["data"]]
    assert [p["difficulty"] for p in first["parameters"]] == [80, 80] and first["prompt"].startswith("used")
    image = Image.open(io.BytesIO(base64.b64decode(first["data"][0]["b64_json"])))
    assert image.size == (128, 128) and np.asarray(image).std() > 0


@needs_model
@pytest.mark.parametrize("body, field", [({"prompt": 5}, "prompt"), ({"prompt": "x", "n": 9}, "'n'"),
                                         ({"prompt": "x", "size": "1024x1024"}, "128x128"),
                                         ({"prompt": "x", "response_format": "url"}, "response_format"),
                                         ({"prompt": "x", "model": "dall-e-3"}, "model")])
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(errors.InvalidInput, match=field):
        generate(body)
