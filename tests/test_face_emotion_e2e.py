"""face-emotion as real gunicorn processes: Keras (stack.yml), TFLite and ONNX twins, real clients.

Marked slow: each instance imports TensorFlow (or ONNX Runtime) and loads the model.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import time

import numpy as np
import pytest
import requests

from aigc import runner
from aigc.models.fer import TFLITE_TOLERANCE

from conftest import REPO, free_port, png_bytes

pytestmark = pytest.mark.slow
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
FACE_BOX = (160, 40, 130, 150)  # left, top, width, height of the face in skimage's astronaut photo


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def face(astronaut):
    left, top, w, h = FACE_BOX
    return np.ascontiguousarray(astronaut[top:top + h, left:left + w])


@pytest.fixture(scope="module")
def keras_url(model_store, stack_file, tmp_path_factory):
    """face-emotion exactly as stack.yml declares it (aigc-tf, AIGC_ENGINE=keras), started once."""
    tmp = tmp_path_factory.mktemp("face-emotion")
    fn = stack_file.functions["face-emotion"]
    assert fn.lang == "aigc-tf" and fn.environment["AIGC_ENGINE"] == "keras"
    inst = runner.start(fn, REPO, free_port(), build_dir=tmp / "build", stdout=open(tmp / "log", "wb"),
                        stderr=subprocess.STDOUT)
    try:
        inst.wait_ready(120)
        yield inst.url
    finally:
        inst.stop()


def emotions(url, body, **params):
    return requests.post(url + "/", data=body, params=params, timeout=30)


def test_astronaut_face_is_happy(keras_url, astronaut, face):
    resp = emotions(keras_url, png_bytes(face))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["label"] == "happy" and out["engine"] == "keras" and list(out["scores"]) == EMOTIONS
    assert max(out["scores"], key=out["scores"].get) == "happy"
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="JPEG", quality=90)
    boxed = emotions(keras_url, buf.getvalue(), box=",".join(map(str, FACE_BOX)))
    assert boxed.status_code == 200 and boxed.json()["label"] == "happy"


def test_tritonclient_reads_metadata_and_infers(keras_url, face):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(keras_url.removeprefix("http://"))
    assert client.is_model_ready("fer-emotion")
    meta = client.get_model_metadata("fer-emotion")
    assert meta["platform"] == "tensorflow_keras" and {i["name"] for i in meta["inputs"]} == {"image", "input"}
    tensor = httpclient.InferInput("image", [1, *face.shape], "UINT8")
    tensor.set_data_from_numpy(face[None], binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("scores", "labels")]
    result = client.infer("fer-emotion", [tensor], outputs=outputs)
    assert result.as_numpy("scores").shape == (1, 7)
    assert result.as_numpy("labels")[0] in (b"happy", "happy")


def _png(mode, size, color) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case, status, fragment", [
    ("text", 400, "not a JPEG or PNG"),
    ("uniform", 400, "no usable pixels"),
    ("huge", 400, "AIGC_MAX_IMAGE_PIXELS"),
    ("zero-box", 400, "zero area"),
    ("outside-box", 400, "does not overlap"),
    ("50MB", 413, "bytes"),
])
def test_bad_input_gets_4xx_and_the_next_request_works(keras_url, face, case, status, fragment):
    body, params = {
        "text": (b"definitely not an image", {}),
        "uniform": (_png("RGB", (120, 90), (250, 200, 180)), {}),
        "huge": (_png("L", (10000, 5000), 0), {}),  # 50 Mpx in a tiny file
        "zero-box": (png_bytes(face), {"box": "10,10,40,0"}),
        "outside-box": (png_bytes(face), {"box": "1000,0,50,50"}),
        "50MB": (b"\0" * (50 << 20), {}),
    }[case]
    bad = emotions(keras_url, body, **params)
    assert bad.status_code == status and fragment in bad.json()["error"], bad.text
    assert emotions(keras_url, png_bytes(face)).json()["label"] == "happy"


def test_engines_agree_through_their_entrypoints(keras_url, serve, stack_file, astronaut, face):
    fn = stack_file.functions["face-emotion"]
    twins = {"tflite": serve(fn, env={"AIGC_ENGINE": "tflite"}),
             # ONNX Runtime lives in the aigc-onnx template; the handler folder is the same
             "onnx": serve(dataclasses.replace(fn, lang="aigc-onnx"), env={"AIGC_ENGINE": "onnx"})}
    crops = [face, np.ascontiguousarray(astronaut[20:220, 140:320]), np.ascontiguousarray(astronaut[300:, :200])]
    for i, crop in enumerate(crops):
        body = png_bytes(crop)
        ref = emotions(keras_url, body).json()
        got = {engine: emotions(inst.url, body).json() for engine, inst in twins.items()}
        keras_scores = np.array([ref["scores"][e] for e in EMOTIONS])
        for engine, out in got.items():
            assert out["engine"] == engine
            diff = np.abs(np.array([out["scores"][e] for e in EMOTIONS]) - keras_scores).max()
            assert diff < (1e-4 if engine == "onnx" else TFLITE_TOLERANCE), (engine, i, diff)
        if i == 0:
            assert {out["label"] for out in got.values()} == {"happy"}


def test_unknown_engine_stops_the_instance_with_a_message(model_store, serve, stack_file, tmp_path):
    inst = serve(stack_file.functions["face-emotion"], env={"AIGC_ENGINE": "pytorch"}, wait=False)
    deadline = time.monotonic() + 60
    while inst.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inst.process.returncode not in (None, 0)
    log = b"".join(p.read_bytes() for p in tmp_path.glob("face-emotion-*.log")).decode(errors="replace")
    assert "AIGC_ENGINE must be one of" in log
