"""Runs at image build (TEST_ENABLED=true): the handler imports, reports its state, refuses bad input."""

import pytest

from aigc.runtime import Event, errors
from function import handler


def test_describes_model_before_loading():
    out = handler.handle(None, None)
    assert out["model"] == handler.model.name
    assert out["ready"] is False
    assert out["platform"] == "pytorch_transformers"


@pytest.mark.parametrize("body, field", [(b'{"prompt": "hi", "temperature": -1}', "temperature"),
                                         (b'{"prompt": 5}', "prompt"),
                                         (b'{"prompt": "hi", "max_tokens": 100000}', "max_tokens")])
def test_bad_requests_are_refused_before_the_model_is_needed(body, field):
    event = Event(body=body, headers={}, method="POST", query={}, path="/")
    with pytest.raises(errors.InvalidInput, match=field):
        handler.handle(event, None)
