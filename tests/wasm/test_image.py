"""Image preprocessing in wasm, resample="bilinear", vs a float64 numpy reference.

(The default, Pillow-compatible resampling is tested in test_image_pil.py.)
Convention: bilinear with half-pixel centres (src = (dst + 0.5) * in / out - 0.5,
clamped to the edge), no antialiasing; centre crop at round((resized - out) / 2);
(x * scale - mean) / std; luma 0.299 R + 0.587 G + 0.114 B.  The wasm side
computes in f64 and rounds to f32 once, so the tolerance is f32 rounding:
atol 1e-5 on normalised values.
"""

from __future__ import annotations

import numpy as np
import pytest

from aigc.wasm import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor, WasmError

ATOL = 1e-5


def _axis(out_size, in_size, offset=0):
    s = (np.arange(out_size, dtype=np.float64) + offset + 0.5) * (in_size / _axis.resized) - 0.5
    s = np.clip(s, 0, in_size - 1)
    lo = np.floor(s).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, s - lo


def ref_resize(img, rh, rw, top=0, left=0, oh=None, ow=None):
    """Bilinear (half-pixel, edge clamp) of img (H, W, C) to rh x rw, window oh x ow."""
    img = img.astype(np.float64)
    h, w = img.shape[:2]
    oh, ow = oh or rh, ow or rw
    _axis.resized = rh
    y0, y1, wy = _axis(oh, h, top)
    _axis.resized = rw
    x0, x1, wx = _axis(ow, w, left)
    wy, wx = wy[:, None, None], wx[None, :, None]
    rows0, rows1 = img[y0], img[y1]
    top_ = rows0[:, x0] * (1 - wx) + rows0[:, x1] * wx
    bot = rows1[:, x0] * (1 - wx) + rows1[:, x1] * wx
    return top_ * (1 - wy) + bot * wy


def ref_pipeline(img, pre: ImagePreprocessor):
    if img.ndim == 2:
        img = img[:, :, None]
    rh, rw, top, left = pre.plan(*img.shape[:2])
    oh, ow = pre.size
    x = ref_resize(img, rh, rw, top, left, oh, ow)
    if img.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    scale, mean, std = pre.params[0], pre.params[1:4].astype(np.float64), pre.params[4:7]
    if pre.grayscale:
        x = (x @ np.array([0.299, 0.587, 0.114]))[:, :, None]
        mean, std = mean[:1], std[:1]
    x = (x * np.float64(scale) - mean) / std.astype(np.float64)
    return x.transpose(2, 0, 1)[None]


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("shape", [(480, 640, 3), (640, 480, 3), (300, 300, 3), (37, 1000, 3),
                                   (12, 9, 3), (256, 256, 1), (100, 150)])
def test_efficientnet_pipeline_matches_reference(rng, shape):
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    pre = ImagePreprocessor.efficientnet_lite0(resample="bilinear")
    out = pre(img)
    assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref_pipeline(img, pre), rtol=0, atol=ATOL)


@pytest.mark.parametrize("resize,size", [(None, (224, 224)), ((200, 300), (180, 250)),
                                         (300, 64), (None, (5, 7))])
def test_resize_modes(rng, resize, size):
    img = rng.integers(0, 256, size=(123, 77, 3), dtype=np.uint8)
    pre = ImagePreprocessor(size, resize, mean=(0.5,), std=(0.25,), resample="bilinear")
    np.testing.assert_allclose(pre(img), ref_pipeline(img, pre), rtol=0, atol=ATOL)


def test_plan_geometry():
    pre = ImagePreprocessor.efficientnet_lite0()
    assert pre.plan(480, 640) == (256, 341, 16, 58)
    assert pre.plan(640, 480) == (341, 256, 58, 16)
    assert pre.plan(224, 224) == (256, 256, 16, 16)


def test_upscale_agrees_with_pil(rng):
    """Independent check of the convention: for upscaling, PIL's bilinear
    filter has no antialiasing and uses the same half-pixel centres."""
    Image = pytest.importorskip("PIL.Image")
    img = rng.integers(0, 256, size=(23, 31), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize(
        (100, 90), Image.Resampling.BILINEAR))
    pre = ImagePreprocessor((90, 100), None, mean=(0.0,), std=(1.0,), scale=1.0, grayscale=True,
                            resample="bilinear")
    np.testing.assert_allclose(pre(img)[0, 0], pil, rtol=0, atol=2e-3)


def test_face_gray64(rng):
    img = rng.integers(0, 256, size=(150, 120, 3), dtype=np.uint8)
    pre = ImagePreprocessor.face_gray64(resample="bilinear")
    out = pre(img)
    assert out.shape == (1, 1, 64, 64) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 255
    np.testing.assert_allclose(out, ref_pipeline(img, pre), rtol=0, atol=1e-4)
    gray = np.full((64, 64, 3), (200, 100, 50), np.uint8)  # luma = 124.2 exactly
    np.testing.assert_allclose(pre(gray), 0.299 * 200 + 0.587 * 100 + 0.114 * 50, atol=1e-4)


def test_batch_and_constant_image(rng):
    pre = ImagePreprocessor.efficientnet_lite0()
    white = np.full((300, 400, 3), 255, np.uint8)
    out = pre.batch([white, rng.integers(0, 256, size=(240, 240, 3), dtype=np.uint8)])
    assert out.shape == (2, 3, 224, 224)
    expected = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[0].reshape(3, -1).mean(axis=1), expected, atol=1e-5)


def test_bad_inputs():
    pre = ImagePreprocessor.efficientnet_lite0()
    with pytest.raises(TypeError, match="uint8"):
        pre(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        pre([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="alpha"):
        pre(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        pre(np.zeros((2, 10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        pre(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="larger than the resized"):
        ImagePreprocessor(300, 256)(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(ValueError, match="mean/std"):
        ImagePreprocessor(grayscale=True)  # ImageNet's 3 means for 1 channel
    with pytest.raises(ValueError, match="batch"):
        pre.batch([])


def test_wasm_rejects_inconsistent_geometry():
    pre = ImagePreprocessor.efficientnet_lite0()
    img = np.zeros((10, 10, 3), np.uint8)
    pre.plan = lambda h, w: (256, 256, 100, 100)  # crop window past the edge
    with pytest.raises(WasmError, match="invalid input"):
        pre(img)
