"""embed's own tests, run by the image's test stage (TEST_ENABLED=true) with the baked model."""

import json

import numpy as np
import pytest

from aigc.runtime import errors, testing
from function import handler

needs_model = testing.needs_model(handler.model.name)


def embeddings(texts: list[str]) -> np.ndarray:
    testing.loaded(handler.model)
    body = json.dumps({"model": handler.model.name, "input": texts})
    out = handler.handle(testing.request("/v1/embeddings", body), None)
    return np.array([d["embedding"] for d in out["data"]], dtype=np.float32)


def test_models_are_listed_openai_style():
    out = handler.handle(testing.request("/v1/models", method="GET"), None)
    assert out["object"] == "list" and [m["id"] for m in out["data"]] == [handler.model.name]


@pytest.mark.parametrize("body, fragment", [(b"{", "malformed JSON"),
                                            (b'{"model": "gpt-x", "input": "hi"}', "gpt-x"),
                                            (b'{"model": "minilm-l6-int8", "input": 5}', "input")])
def test_bad_requests_are_refused(body, fragment):
    with pytest.raises(errors.AigcError, match=fragment):
        handler.handle(testing.request("/v1/embeddings", body), None)


def test_unknown_routes_are_404():
    with pytest.raises(errors.ModelNotFound, match="no route"):
        handler.handle(testing.request("/", method="GET"), None)


@needs_model
def test_cat_and_kitten_are_close_and_unit_length():
    cat, kitten, stocks = embeddings(["A cat sits on the mat.", "A kitten is resting on a rug.",
                                      "The stock market fell sharply today."])
    assert cat.shape == (384,) and abs(float(np.linalg.norm(cat)) - 1) < 1e-4
    assert float(cat @ kitten) > 0.5 > float(cat @ stocks)


@needs_model
def test_root_takes_the_same_body_for_faas_cli_invoke():
    testing.loaded(handler.model)
    body = json.dumps({"model": handler.model.name, "input": "A cat sits on the mat."})
    at_root = handler.handle(testing.request("/", body), None)
    assert at_root == handler.handle(testing.request("/v1/embeddings", body), None)
    assert len(at_root["data"][0]["embedding"]) == 384
