"""face-emotion's own tests, run by the image's test stage (TEST_ENABLED=true) with the baked model.

testdata/astronaut-face.jpg: Eileen Collins' face cropped from scikit-image's `astronaut` (NASA, public domain).
"""

from pathlib import Path

import pytest

from aigc.runtime import errors, testing
from function import handler

FACE = Path(__file__).parent / "testdata" / "astronaut-face.jpg"
needs_model = testing.needs_model(handler.model.name)


@pytest.mark.parametrize("method, path", [("GET", "/"), ("POST", "/faces")])
def test_only_post_to_root_is_a_face(method, path):
    with pytest.raises(errors.InvalidInput, match="POST a JPEG or PNG face"):
        handler.handle(testing.request(path, method=method), None)


@pytest.mark.parametrize("box", ["1,2,3", "0,0,0,10", "500,500,10,10", "a,b,c,d"])
def test_bad_boxes_are_refused(box):
    with pytest.raises(errors.InvalidInput, match="box"):
        handler.handle(testing.request(body=FACE.read_bytes(), query={"box": box}), None)


@needs_model
def test_the_astronaut_is_happy():
    testing.loaded(handler.model)
    out = handler.handle(testing.request(body=FACE.read_bytes()), None)
    assert out["label"] == "happy" and out["scores"]["happy"] > 0.5, out
    assert len(out["scores"]) == 7 and abs(sum(out["scores"].values()) - 1) < 1e-3
