"""face-emotion in-process: the store entry, face preprocessing, the three engines, bad input.

The engines load in this process (TensorFlow once, ~3 s); test_face_emotion_e2e.py
runs the same handler as real gunicorn processes.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from aigc import models
from aigc.models import fer as fer_builder
from aigc.runtime import Event, errors, fastpath

from conftest import REPO, png_bytes

HANDLER = REPO / "functions" / "face-emotion" / "handler.py"
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FACE_BOX = (40, 190, 160, 290)  # rows, cols of Eileen Collins' face in skimage's astronaut photo


def load_handler(monkeypatch, engine: str):
    monkeypatch.setenv("AIGC_ENGINE", engine)
    spec = importlib.util.spec_from_file_location(f"face_emotion_{engine}_{time.monotonic_ns()}", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fer_store():
    return models.build("fer-emotion")


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def face(astronaut):
    t, b, l, r = FACE_BOX
    return np.ascontiguousarray(astronaut[t:b, l:r])


@pytest.fixture(scope="module")
def handlers(fer_store):
    """One loaded handler module per engine (the TF import is paid once for the module)."""
    loaded = {}
    with pytest.MonkeyPatch.context() as mp:
        for engine in ("keras", "tflite", "onnx"):
            loaded[engine] = load_handler(mp, engine)
            loaded[engine].model.load()
    return loaded


def post(handler, body: bytes, **query):
    return handler.handle(Event(body=body, headers={}, method="POST", query=query, path="/"), None)


# --- the store entry ---------------------------------------------------------------------------

def test_store_entry_records_sources_and_engine_checks(fer_store):
    m = fer_store.manifest
    assert m["sources"][0]["package"] == "fer" and m["sources"][0]["version"] == "25.10.3"
    assert m["sources"][0]["license"] == "MIT"
    assert set(m["engines"]) == {"keras", "tflite", "onnx"} and all(f in m["files"] for f in m["engines"].values())
    assert m["export"]["onnx"]["max_abs_diff_vs_keras"] < 1e-4
    assert m["export"]["tflite"]["max_abs_diff_vs_keras"] <= fer_builder.TFLITE_TOLERANCE
    assert fer_store.verify() == []
    import json

    assert json.loads(fer_store.file("labels.json").read_text()) == EMOTIONS


def test_labels_are_read_from_the_package_source(tmp_path):
    fer_py = models.package_dir("fer") / "fer.py"
    assert fer_builder.labels_from_source(fer_py) == EMOTIONS
    swapped = tmp_path / "fer.py"  # a changed package must change the labels, not be masked by a constant
    swapped.write_text("class FER:\n    def _get_labels():\n        return {1: 'sad', 0: 'happy'}\n")
    assert fer_builder.labels_from_source(swapped) == ["happy", "sad"]
    (tmp_path / "gone.py").write_text("x = 1\n")
    with pytest.raises(RuntimeError, match="_get_labels"):
        fer_builder.labels_from_source(tmp_path / "gone.py")


# --- preprocessing -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["wasm", "native"])
def test_face_preprocessing_scales_grey_to_minus_one_one(backend):
    pre = fastpath.FacePreprocessor(fer_builder.PREPROCESS, backend)
    rgb = (200, 100, 50)
    out = pre(np.full((30, 20, 3), rgb, np.uint8))
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    assert out.shape == (64, 64, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out, (luma / 255 - 0.5) * 2, atol=1e-6)
    np.testing.assert_allclose(pre(np.zeros((5, 5, 3), np.uint8)), -1.0, atol=1e-6)
    np.testing.assert_allclose(pre(np.full((5, 5, 3), 255, np.uint8)), 1.0, atol=1e-6)


def test_wasm_and_native_face_preprocessing_are_identical(face):
    wasm = fastpath.FacePreprocessor(fer_builder.PREPROCESS, "wasm")
    native = fastpath.FacePreprocessor(fer_builder.PREPROCESS, "native")
    rng = np.random.default_rng(1)
    for img in (face, rng.integers(0, 256, (37, 500, 3), dtype=np.uint8), rng.integers(0, 256, (3, 2, 3), dtype=np.uint8)):
        np.testing.assert_array_equal(wasm(img), native(img))


def test_face_preprocessor_refuses_other_specs():
    with pytest.raises(ValueError, match="unsupported"):
        fastpath.FacePreprocessor(dict(fer_builder.PREPROCESS, grayscale=False), "native")


# --- the engines -------------------------------------------------------------------------------

def test_every_engine_finds_the_astronaut_happy(handlers, face):
    for engine, handler in handlers.items():
        out = post(handler, png_bytes(face))
        assert out["engine"] == engine and out["label"] == "happy", out
        assert list(out["scores"]) == EMOTIONS and out["scores"]["happy"] > 0.9
        assert abs(sum(out["scores"].values()) - 1) < 1e-4


def test_engines_agree_on_faces_photos_and_noise(handlers, astronaut, face):
    import skimage.data

    rng = np.random.default_rng(2)
    crops = [face, np.ascontiguousarray(astronaut[30:200, 150:300]), skimage.data.chelsea(), skimage.data.coffee(),
             rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    batch = np.stack([handlers["keras"].model.face(c) for c in crops])
    keras = handlers["keras"].model.run(batch)
    onnx = handlers["onnx"].model.run(batch)
    tflite = handlers["tflite"].model.run(batch)
    assert np.abs(onnx - keras).max() < 1e-4
    assert np.abs(tflite - keras).max() <= fer_builder.TFLITE_TOLERANCE
    assert tflite[0].argmax() == keras[0].argmax() == EMOTIONS.index("happy")


def test_oip_predict_batches_and_refuses_bad_batches(handlers, face):
    model = handlers["tflite"].model  # the engine that loops over a fixed batch of 1
    two = np.stack([face, face[:, ::-1]])
    out = model.predict({"image": two}, {})
    assert out["scores"].shape == (2, 7) and list(out["labels"]) == ["happy", "happy"]
    raw = model.predict({"input": np.stack([model.face(face)])}, {})
    np.testing.assert_allclose(raw["scores"][0], out["scores"][0], atol=1e-6)
    with pytest.raises(errors.InvalidInput, match="exactly one"):
        model.predict({"image": two, "input": raw["scores"]}, {})
    with pytest.raises(errors.InvalidInput, match="empty"):
        model.predict({"image": np.zeros((0, 8, 8, 3), np.uint8)}, {})
    with pytest.raises(errors.InvalidInput, match="no usable pixels"):
        model.predict({"image": np.full((1, 8, 8, 3), 90, np.uint8)}, {})


# --- bad input ---------------------------------------------------------------------------------

def _png(mode: str, size, color=0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("body, query, fragment", [
    (b"GIF89a not really", {}, "not a JPEG or PNG"),
    (b"", {}, "empty"),
    ("uniform", {}, "no usable pixels"),
    ("transparent", {}, "no usable pixels"),
    ("one-pixel", {}, "no usable pixels"),
    ("huge", {}, "AIGC_MAX_IMAGE_PIXELS"),
    ("face", {"box": "10,10,0,5"}, "zero area"),
    ("face", {"box": "500,500,20,20"}, "does not overlap"),
    ("face", {"box": "1,2,3"}, "four integers"),
])
def test_bad_input_is_refused_with_a_clear_message(handlers, face, body, query, fragment):
    bodies = {"uniform": _png("RGB", (80, 60), (30, 140, 200)), "transparent": _png("RGBA", (40, 40), (0, 0, 0, 0)),
              "one-pixel": _png("RGB", (1, 1), (1, 2, 3)), "huge": _png("L", (10000, 5000)), "face": png_bytes(face)}
    with pytest.raises(errors.InvalidInput, match=fragment):
        post(handlers["keras"], bodies.get(body, body), **query)


def test_box_crops_the_face_out_of_the_whole_photo(handlers, astronaut, face):
    t, b, l, r = FACE_BOX
    cropped = post(handlers["onnx"], png_bytes(astronaut), box=f"{l},{t},{r - l},{b - t}")
    direct = post(handlers["onnx"], png_bytes(face))
    assert cropped["scores"] == direct["scores"]
    clipped = post(handlers["onnx"], png_bytes(face), box=f"-50,-50,{face.shape[1] + 50},{face.shape[0] + 50}")
    assert clipped["scores"] == direct["scores"]  # a box larger than the image is clipped to it


def test_wrong_method_or_path_is_400(handlers):
    with pytest.raises(errors.InvalidInput, match="POST a JPEG or PNG face"):
        handlers["keras"].handle(Event(body=b"", headers={}, method="GET", query={}, path="/"), None)


def test_unknown_engine_stops_the_import(monkeypatch):
    with pytest.raises(ValueError, match="AIGC_ENGINE must be one of"):
        load_handler(monkeypatch, "caffe")


def test_handler_import_does_not_import_tensorflow():
    code = (f"import importlib.util, sys; s = importlib.util.spec_from_file_location('h', {str(HANDLER)!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "sys.exit('tensorflow' in sys.modules or 'onnxruntime' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_tflite_engine_serves_without_tensorflow(fer_store, face):
    # the point of the TFLite option: LiteRT alone, no 500 MiB TensorFlow import in the worker
    code = (f"import importlib.util, os, sys; os.environ['AIGC_ENGINE'] = 'tflite'; "
            f"s = importlib.util.spec_from_file_location('h', {str(HANDLER)!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); m.model.load(); "
            "import numpy as np; print(m.model.run(np.zeros((1, 64, 64, 1), np.float32)).shape, "
            "'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "(1, 7) False False"
