"""image-classify on ONNX Runtime and on PyTorch, as stack.yml declares them, through real processes.

Marked slow: it starts gunicorn instances of both templates and loads the real weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from conftest import png_bytes

pytestmark = pytest.mark.slow


def oip_probabilities(url: str, image: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "image", "shape": [1, *image.shape], "datatype": "UINT8",
                        "data": image.reshape(-1).tolist()}],
            "outputs": [{"name": "probabilities"}]}
    resp = requests.post(url + "/v2/models/efficientnet-lite0/infer", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    out = resp.json()["outputs"][0]
    return np.array(out["data"], dtype=np.float64).reshape(out["shape"])


def test_torch_and_onnx_serve_the_same_weights(served_functions, serve, stack_file, photos):
    import skimage.data

    fn = stack_file.functions["image-classify-torch"]
    assert fn.lang == "aigc-torch" and fn.environment["AIGC_ENGINE"] == "torch"
    assert fn.handler == stack_file.functions["image-classify"].handler  # one handler, two engines
    torch_url = serve(fn).url
    onnx_url = served_functions["image-classify"]
    assert requests.get(torch_url + "/v2/models/efficientnet-lite0").json()["platform"] == "pytorch_libtorch"
    assert requests.get(onnx_url + "/v2/models/efficientnet-lite0").json()["platform"] == "onnxruntime_onnx"
    for name, image in {**photos, "astronaut": skimage.data.astronaut()}.items():
        onnx, torch_ = oip_probabilities(onnx_url, image), oip_probabilities(torch_url, image)
        assert onnx.shape == torch_.shape == (1, 1000)
        assert np.abs(onnx - torch_).max() < 1e-4, name
        assert onnx.argmax() == torch_.argmax(), name
    coffee = requests.post(torch_url + "/", data=png_bytes(photos["coffee"]), timeout=30).json()
    assert coffee["predictions"][0]["label"] == "espresso"
    bad = requests.post(torch_url + "/", data=b"not an image", timeout=30)
    assert bad.status_code == 400 and "not a JPEG or PNG" in bad.json()["error"]

