"""The sample handler's test, run at image build (TEST_ENABLED=true): the handler imports, reports its state, refuses bad input.
A function made from this template should replace this file with tests of its own
handler (as functions/* in the project do); until then it skips itself.
"""

import pytest

from aigc.runtime import Event, errors
from function import handler

pytestmark = pytest.mark.skipif(getattr(handler, "SAMPLE", None) != "aigc-torch",
                                reason="the template's sample test; this function has no handler_test.py")


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
