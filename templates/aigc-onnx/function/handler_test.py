"""The sample handler's test, run at image build (TEST_ENABLED=true): the handler imports and reports its state.
A function made from this template should replace this file with tests of its own
handler (as functions/* in the project do); until then it skips itself.
"""

import pytest

from function import handler

pytestmark = pytest.mark.skipif(getattr(handler, "SAMPLE", None) != "aigc-onnx",
                                reason="the template's sample test; this function has no handler_test.py")


def test_describes_model_before_loading():
    out = handler.handle(None, None)
    assert out["model"] == handler.model.name
    assert out["ready"] is False
    assert out["infer"].endswith("/infer")
