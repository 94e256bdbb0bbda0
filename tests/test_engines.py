"""One set of weights, several engines, chosen by AIGC_ENGINE: in-process checks.

image-classify runs EfficientNet-Lite0 on ONNX Runtime (the exported model.onnx) or on
PyTorch (the package checkpoint it was exported from); they must agree to float precision.
The aigc-tf template's sample handler serves any Keras model in the store.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aigc import models
from aigc.runtime import Event, errors

from conftest import REPO, png_bytes

CLASSIFY = REPO / "functions" / "image-classify" / "handler.py"
TF_SAMPLE = REPO / "templates" / "aigc-tf" / "function" / "handler.py"


def load_module(path, monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(f"engine_test_{time.monotonic_ns()}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def classifiers():
    models.build("efficientnet-lite0")
    loaded = {}
    with pytest.MonkeyPatch.context() as mp:
        for engine in ("onnx", "torch"):
            loaded[engine] = load_module(CLASSIFY, mp, AIGC_ENGINE=engine, MODEL_NAME="efficientnet-lite0")
            loaded[engine].model.load()
    return loaded


def test_default_engine_is_onnx(monkeypatch):
    monkeypatch.delenv("AIGC_ENGINE", raising=False)
    spec = importlib.util.spec_from_file_location("classify_default", CLASSIFY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.model.engine == "onnx" and module.model.platform == "onnxruntime_onnx"


def test_unknown_engine_stops_the_import(monkeypatch):
    with pytest.raises(ValueError, match="AIGC_ENGINE must be one of"):
        load_module(CLASSIFY, monkeypatch, AIGC_ENGINE="tensorrt")


def test_onnx_and_torch_agree_on_photos_in_request_threads(classifiers, photos):
    onnx, torch_ = classifiers["onnx"].model, classifiers["torch"].model
    assert torch_.platform == "pytorch_libtorch"
    batches = [onnx.preprocess(p)[None] for p in photos.values()]
    batches.append(np.random.default_rng(0).standard_normal((2, 3, 224, 300)).astype(np.float32))
    # run torch on pool threads, as gunicorn's gthread workers do: grad mode is per thread, and
    # .numpy() on an output that tracks gradients would raise, so this also checks inference_mode
    with ThreadPoolExecutor(2) as pool:
        torch_out = list(pool.map(torch_.probabilities, batches))
    assert threading.current_thread() is threading.main_thread()
    for batch, t in zip(batches, torch_out):
        assert np.abs(onnx.probabilities(batch) - t).max() < 1e-4


def test_torch_engine_answers_the_handler_like_onnx(classifiers, photos):
    event = Event(body=png_bytes(photos["coffee"]), headers={}, method="POST", query={"top_k": "3"}, path="/")
    by_engine = {e: m.handle(event, None)["predictions"] for e, m in classifiers.items()}
    assert [p["index"] for p in by_engine["torch"]] == [p["index"] for p in by_engine["onnx"]]
    assert by_engine["torch"][0]["label"] == "espresso"
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(by_engine["torch"], by_engine["onnx"]))


# --- the aigc-tf template's sample ---------------------------------------------------------------

def test_tf_template_sample_serves_a_keras_model_from_the_store(monkeypatch):
    models.build("fer-emotion")
    sample = load_module(TF_SAMPLE, monkeypatch, MODEL_NAME="fer-emotion")
    sample.model.wait_ready(120)  # the lifecycle path, so `ready` flips as in a served instance
    assert sample.model.input_shape == (-1, 64, 64, 1)
    assert sample.handle(None, None)["input_shape"] == [-1, 64, 64, 1]
    grey = np.linspace(-1, 1, 64 * 64, dtype=np.float32).reshape(64, 64, 1)
    body = ('{"instances": [%s, %s]}' % (grey.tolist(), np.zeros_like(grey).tolist())).encode()
    out = sample.handle(Event(body=body, headers={}, method="POST", query={}, path="/"), None)
    scores = np.array(out["predictions"])
    assert scores.shape == (2, 7) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert np.abs(scores[0] - scores[1]).max() > 1e-3  # different faces, different scores
    oip = sample.model.predict({"input": grey[None]}, {})["output"]
    np.testing.assert_allclose(oip[0], scores[0], atol=1e-6)
    wrong = Event(body=b'{"instances": [[1, 2, 3]]}', headers={}, method="POST", query={}, path="/")
    with pytest.raises(errors.InvalidInput, match=r"shape \[64, 64, 1\]"):
        sample.handle(wrong, None)
