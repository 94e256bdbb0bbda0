"""image-classify's own tests, run by the image's test stage (TEST_ENABLED=true) with the baked model.

The same handler is built on aigc-onnx and on aigc-torch (AIGC_ENGINE picks the engine at deploy time),
so the model tests run once per engine whose packages this image has.
testdata/: coffee and chelsea from scikit-image's sample data (CC0), resized to 300 px.
"""

import importlib.util
from pathlib import Path

import pytest

from aigc.runtime import errors, testing
from function import handler

DATA = Path(__file__).parent / "testdata"
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
PACKAGES = {"onnx": "onnxruntime", "torch": "efficientnet_lite_pytorch"}
ENGINES = [e for e in handler.ENGINES if importlib.util.find_spec(PACKAGES[e]) is not None]
needs_model = testing.needs_model(handler.model.name)


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    return testing.loaded(handler.ImageClassifier(handler.model.name, request.param))


@pytest.fixture
def classify(engine, monkeypatch):
    monkeypatch.setattr(handler, "model", engine)

    def run(photo: str, **query) -> list[dict]:
        event = testing.request(body=(DATA / photo).read_bytes(), query={k: str(v) for k, v in query.items()})
        return handler.handle(event, None)["predictions"]
    return run


@pytest.mark.parametrize("method, path", [("GET", "/"), ("POST", "/other")])
def test_only_post_to_root_is_an_image(method, path):
    with pytest.raises(errors.InvalidInput, match="POST a JPEG or PNG"):
        handler.handle(testing.request(path, method=method), None)


@pytest.mark.parametrize("top_k", ["0", "1001", "three"])
def test_top_k_is_checked_before_the_image(top_k):
    with pytest.raises(errors.InvalidInput, match="top_k"):
        handler.handle(testing.request(body=b"x", query={"top_k": top_k}), None)


@needs_model
def test_coffee_is_espresso(classify):
    top = classify("coffee.jpg", top_k=3)
    assert len(top) == 3 and top[0]["label"] == "espresso" and top[0]["index"] == 967


@needs_model
def test_chelsea_is_a_cat(classify):
    assert any(p["index"] in CAT_CLASSES for p in classify("chelsea.jpg"))


@needs_model
def test_a_broken_image_is_refused(classify):
    with pytest.raises(errors.InvalidInput, match="broken or truncated"):
        handler.handle(testing.request(body=(DATA / "coffee.jpg").read_bytes()[:3000]), None)
