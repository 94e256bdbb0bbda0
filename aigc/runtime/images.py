"""Image decoding and classifier preprocessing (numpy/PIL path).

Decoding refuses anything that is not a whole JPEG or PNG of sane size, with
a message saying what is wrong, before any pixel reaches a model.

A small file can declare a huge raster (a 154 KB PNG of 6300x6300 pixels is
119 MB decoded, and more in copies), so decoding is bounded three ways: at most
`AIGC_MAX_DECODES` (2) decodes at once per process; a pixel limit that is the
smaller of AIGC_MAX_IMAGE_PIXELS and what the process's memory limit (its
cgroup's) can hold for that many decodes; and a caller that needs only a small
picture (`min_side`) gets JPEGs decoded at a reduced scale and anything else
reduced right after decoding, so no full-size copy travels on.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import errors

FORMATS = ("JPEG", "PNG")
Image.MAX_IMAGE_PIXELS = None  # we check sizes ourselves, with a clear 400 instead of a warning


BYTES_PER_PIXEL = 8  # a decode's peak: the raster (up to 4 bytes/px for RGBA) and its RGB copy
MEMORY_SHARE = 0.5   # of the memory limit, for all decodes together; the model and runtime need the rest
_decodes: threading.BoundedSemaphore | None = None


def max_decodes() -> int:
    return max(1, int(os.environ.get("AIGC_MAX_DECODES", 2)))


def memory_limit(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This process's cgroup memory limit in bytes (v1 or v2), None when unlimited or unknown."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates = [root / "memory" / path.lstrip("/") / "memory.limit_in_bytes",
                          root / "memory" / "memory.limit_in_bytes"]  # in a container: its own root
        elif controllers == "":
            candidates = [root / path.lstrip("/") / "memory.max", root / "memory.max"]
        else:
            continue
        for file in candidates:
            try:
                text = file.read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 1 << 60:  # v1 says "unlimited" with a huge number
                return int(text)
            return None
    return None


@functools.cache
def _own_memory_limit() -> int | None:
    return memory_limit()  # read once per process: a replica's limit does not change while it runs


def max_pixels() -> int:
    configured = int(os.environ.get("AIGC_MAX_IMAGE_PIXELS", 40_000_000))
    limit = _own_memory_limit()
    if limit is None:
        return configured
    return min(configured, int(limit * MEMORY_SHARE / (max_decodes() * BYTES_PER_PIXEL)))


def decode(data: bytes, min_side: int | None = None) -> np.ndarray:
    """JPEG/PNG bytes -> HWC uint8 RGB array; with `min_side`, as small as keeps the shorter side >= it."""
    global _decodes
    if not data:
        raise errors.InvalidInput("request body is empty; send a JPEG or PNG image")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise errors.InvalidInput("request body is not a JPEG or PNG image") from None
    if img.format not in FORMATS:
        raise errors.InvalidInput(f"{img.format} images are not accepted; send JPEG or PNG")
    width, height = img.size
    most = max_pixels()
    if width * height > most:
        raise errors.InvalidInput(f"image is {width}x{height} pixels; the limit here is {most} pixels "
                                  "(AIGC_MAX_IMAGE_PIXELS, and what this function's memory limit allows)")
    if _decodes is None:
        _decodes = threading.BoundedSemaphore(max_decodes())
    with _decodes:  # a burst of large images waits here instead of decoding all at once
        if min_side and img.format == "JPEG":
            img.draft("RGB", (min_side, min_side))  # libjpeg decodes at 1/2, 1/4 or 1/8 scale, still >= min_side
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise errors.InvalidInput(f"image data is broken or truncated: {exc}") from None
        if min_side and min(img.size) >= 4 * min_side:
            img = img.reduce(min(img.size) // (2 * min_side))  # box-averaged, shorter side still >= 2x min_side
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
