"""Runs at image build (TEST_ENABLED=true): the handler imports and reports its state."""

from function import handler


def test_describes_model_before_loading():
    out = handler.handle(None, None)
    assert out["model"] == handler.model.name
    assert out["ready"] is False
    assert out["infer"].endswith("/infer")
