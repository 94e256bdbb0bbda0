"""text-generate's own tests, run by the image's test stage (TEST_ENABLED=true) with the baked model."""

import json

import pytest

from aigc.runtime import errors, testing
from function import handler

needs_model = testing.needs_model(handler.model.entry)


def post(path: str, body: dict):
    return handler.handle(testing.request(path, json.dumps(body)), None)


def test_models_are_listed_openai_style():
    out = handler.handle(testing.request("/v1/models", method="GET"), None)
    assert out["object"] == "list" and out["data"][0]["id"] == handler.model.name


@pytest.mark.parametrize("body, field", [({"prompt": "hi", "temperature": -1}, "temperature"),
                                         ({"prompt": 5}, "prompt"),
                                         ({"prompt": "hi", "max_tokens": 100000}, "max_tokens"),
                                         ({"prompt": "hi", "model": "gpt-x"}, "gpt-x"),
                                         ({"prompt": "hi", "model": "smollm2-135m:../../etc"}, "adapter name")])
def test_bad_requests_are_refused_before_the_model_is_needed(body, field):
    body.setdefault("model", handler.model.name)
    with pytest.raises(errors.AigcError, match=field):
        post("/v1/completions", body)


def test_unknown_routes_are_404():
    with pytest.raises(errors.ModelNotFound, match="no route"):
        handler.handle(testing.request("/v1/images"), None)


@needs_model
def test_the_capital_of_france_is_paris():
    testing.loaded(handler.model)
    # the 8-bit build answers the bare "What is the capital of France?" in French (README's precision table)
    out = post("/v1/chat/completions", {"model": handler.model.name, "max_tokens": 16, "temperature": 0,
                                        "messages": [{"role": "user", "content": "Name the capital of France."}]})
    answer = out["choices"][0]["message"]["content"]
    assert "Paris" in answer, answer
    assert out["usage"]["completion_tokens"] <= 16


@needs_model
def test_root_answers_a_completion_or_a_chat_for_faas_cli_invoke():
    testing.loaded(handler.model)
    completion = post("/", {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})
    assert completion["object"] == "text_completion" and completion["choices"][0]["text"]
    chat = post("/", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0})
    assert chat["object"] == "chat.completion"
