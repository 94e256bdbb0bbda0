"""Image decoding and classifier preprocessing (numpy/PIL path).

Decoding refuses anything that is not a whole JPEG or PNG of sane size, with
a message saying what is wrong, before any pixel reaches a model.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import errors

FORMATS = ("JPEG", "PNG")
Image.MAX_IMAGE_PIXELS = None  # we check sizes ourselves, with a clear 400 instead of a warning


def max_pixels() -> int:
    return int(os.environ.get("AIGC_MAX_IMAGE_PIXELS", 40_000_000))


def decode(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> HWC uint8 RGB array."""
    if not data:
        raise errors.InvalidInput("request body is empty; send a JPEG or PNG image")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise errors.InvalidInput("request body is not a JPEG or PNG image") from None
    if img.format not in FORMATS:
        raise errors.InvalidInput(f"{img.format} images are not accepted; send JPEG or PNG")
    width, height = img.size
    if width * height > max_pixels():
        raise errors.InvalidInput(f"image is {width}x{height} pixels; the limit is {max_pixels()} pixels "
                                  "(AIGC_MAX_IMAGE_PIXELS)")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise errors.InvalidInput(f"image data is broken or truncated: {exc}") from None
    return np.asarray(img.convert("RGB"))


def check_hwc(array: np.ndarray) -> None:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise errors.InvalidInput(f"expected an HxWx3 uint8 RGB image, got shape {list(array.shape)} {array.dtype}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise errors.InvalidInput("image has no pixels")


def classifier_input(hwc: np.ndarray, resize_shorter: int, max_longer: int, mean, std) -> np.ndarray:
    """Resize the shorter side (bilinear), centre-crop the longer side to at most `max_longer`,
    normalise: HWC uint8 -> CHW float32."""
    check_hwc(hwc)
    h, w = hwc.shape[:2]
    scale = resize_shorter / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = np.asarray(Image.fromarray(hwc).resize(size, Image.BILINEAR), dtype=np.float32)
    crop_h, crop_w = min(size[1], max_longer), min(size[0], max_longer)
    top, left = (size[1] - crop_h) // 2, (size[0] - crop_w) // 2
    cropped = resized[top:top + crop_h, left:left + crop_w] / 255.0
    normalised = (cropped - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)
