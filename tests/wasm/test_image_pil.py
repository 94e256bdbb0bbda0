"""The default, Pillow-compatible resampling (resample="pil") and the
classifier geometry, against three references:

* a numpy implementation of the same fixed-point algorithm (exact equality,
  any sizes): triangle filter widened by the downscale factor, weights
  normalised and rounded to 22-bit fixed point, horizontal pass then vertical
  pass, each rounded and clamped to uint8;
* image-classify's native path, aigc.runtime.images.classifier_input (PIL +
  numpy), on real photos: max abs difference <= 1e-3 after normalisation;
* the EfficientNet-Lite0 model itself: same top-1 class on those photos.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aigc.wasm import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor

PHOTOS = ("chelsea", "coffee", "astronaut")


def fixed_weights(in_size: int, out_size: int) -> list[tuple[int, np.ndarray]]:
    """(first source index, int64 weights) per output position."""
    scale = in_size / out_size
    widen = max(scale, 1.0)
    rows = []
    for o in range(out_size):
        centre = (o + 0.5) * scale
        lo = max(int(centre - widen + 0.5), 0)
        hi = min(int(centre + widen + 0.5), in_size)
        taps = np.arange(lo, hi, dtype=np.float64)
        w = np.maximum(0.0, 1.0 - np.abs((taps - centre + 0.5) * (1.0 / widen)))
        w = w / w.sum() if w.sum() else w
        rows.append((lo, np.trunc(w * (1 << 22) + 0.5).astype(np.int64)))
    return rows


def filter_axis(a: np.ndarray, in_size: int, out_size: int, axis: int) -> np.ndarray:
    if in_size == out_size:
        return a  # an unchanged axis is not filtered at all
    a = np.moveaxis(a.astype(np.int64), axis, 0)
    out = np.empty((out_size,) + a.shape[1:], np.int64)
    for o, (lo, w) in enumerate(fixed_weights(in_size, out_size)):
        acc = np.tensordot(w, a[lo:lo + len(w)], axes=1) + (1 << 21)
        out[o] = np.clip(acc >> 22, 0, 255)
    return np.moveaxis(out, 0, axis)


def reference_resize(img: np.ndarray, rh: int, rw: int) -> np.ndarray:
    h, w = img.shape[:2]
    return filter_axis(filter_axis(img, w, rw, 1), h, rh, 0).astype(np.uint8)


def raw(size, resize=None):
    """Preprocessor that returns resized pixel values unchanged (0..255)."""
    return ImagePreprocessor(size, resize, mean=(0.0,), std=(1.0,), scale=1.0)


@pytest.mark.parametrize("shape,out", [
    ((300, 451, 3), (224, 337)), ((451, 300, 3), (337, 224)), ((97, 131, 3), (31, 400)),
    ((40, 30, 1), (120, 7)), ((1, 1, 3), (5, 9)), ((5, 700, 3), (3, 2)), ((999, 3, 1), (10, 1)),
    ((64, 64, 3), (64, 32)), ((64, 64, 3), (17, 64)), ((224, 224, 3), (224, 224)),
])
def test_matches_fixed_point_reference_exactly(shape, out):
    rng = np.random.default_rng(sum(shape) + sum(out))
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    got = raw(out)(img)[0].transpose(1, 2, 0)
    exp = reference_resize(img, *out)
    if shape[2] == 1:
        exp = np.repeat(exp, 3, axis=2)
    np.testing.assert_array_equal(got, exp)


def test_matches_pil_on_aspect_preserving_resizes():
    """Resizes like the classifier's (both axes by the same factor) of
    landscape and square images are bit-identical to PIL."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    for _ in range(40):
        w = int(rng.integers(60, 900))
        h = int(rng.integers(40, w + 1))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        s = 224 / h
        rh, rw = 224, max(1, round(w * s))
        pil = np.asarray(Image.fromarray(img).resize((rw, rh), Image.BILINEAR))
        np.testing.assert_array_equal(raw((rh, rw))(img)[0].transpose(1, 2, 0), pil,
                                      err_msg=f"{h}x{w} -> {rh}x{rw}")


def test_arbitrary_sizes_within_one_level_of_pil():
    """For unrelated scale factors per axis, the installed Pillow build
    sometimes runs its vertical pass first (docs/wasm.md); the two orders
    differ by at most one uint8 level (7% of pixels on uniform noise)."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(9)
    differing = total = 0
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(2, 300, 2))
        oh, ow = (int(v) for v in rng.integers(1, 300, 2))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR)).astype(int)
        got = raw((oh, ow))(img)[0].transpose(1, 2, 0).astype(int)
        assert np.abs(got - pil).max() <= 1, f"{h}x{w} -> {oh}x{ow}"
        differing += int((got != pil).sum())
        total += pil.size
    assert differing < 0.15 * total  # uniform noise is the worst case for rounding


@pytest.fixture(scope="module")
def photos():
    data = pytest.importorskip("skimage.data")
    return {name: getattr(data, name)() for name in PHOTOS}


def test_classifier_geometry():
    pre = ImagePreprocessor.classifier(224, 448)
    assert pre.plan(300, 451) == (224, 337, 0, 0)  # whole frame kept
    assert pre.plan(100, 1000) == (224, 2240, 0, 896)  # longer side cropped to 448
    assert pre.plan(1000, 100) == (2240, 224, 896, 0)
    assert pre.output_size(100, 1000) == (224, 448)
    assert ImagePreprocessor.classifier(224, None).output_size(100, 1000) == (224, 2240)
    with pytest.raises(ValueError, match="max_longer"):
        ImagePreprocessor.classifier(224, 100)


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_match_native_classifier_input(photos, name):
    from aigc.runtime.images import classifier_input

    img = photos[name]
    pre = ImagePreprocessor.classifier(224, 448)
    got = pre(img)[0]
    exp = classifier_input(img, 224, 448, IMAGENET_MEAN, IMAGENET_STD)
    assert got.shape == exp.shape and got.dtype == exp.dtype == np.float32
    assert float(np.abs(got - exp).max()) <= 1e-3
    # Cropped geometry too: a panorama made of the photo side by side.
    wide = np.concatenate([img, img[:, ::-1]], axis=1)
    got = pre(wide)[0]
    exp = classifier_input(wide, 224, 448, IMAGENET_MEAN, IMAGENET_STD)
    assert got.shape == exp.shape == (3, 224, min(448, exp.shape[2]))
    assert float(np.abs(got - exp).max()) <= 1e-3


def _model_dir() -> Path:
    from aigc.runtime import store

    return store.store_root() / "efficientnet-lite0"


def test_efficientnet_top1_unchanged(photos):
    model = _model_dir()
    if not (model / "model.onnx").is_file():
        pytest.skip(f"{model}/model.onnx is absent; build it with `aigc models build efficientnet-lite0`")
    ort = pytest.importorskip("onnxruntime")
    from aigc.runtime.images import classifier_input

    spec = json.loads((model / "preprocess.json").read_text())
    labels = json.loads((model / "labels.json").read_text())
    session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
    pre = ImagePreprocessor.from_preprocess(spec)
    for name, img in photos.items():
        ours = session.run(None, {"input": pre(img)})[0][0]
        native = session.run(None, {"input": classifier_input(
            img, spec["resize_shorter"], spec["max_longer"], spec["mean"], spec["std"])[None]})[0][0]
        assert int(ours.argmax()) == int(native.argmax()), (name, labels[int(native.argmax())])
        assert math.isclose(float(ours.max()), float(native.max()), rel_tol=1e-3, abs_tol=1e-3)
