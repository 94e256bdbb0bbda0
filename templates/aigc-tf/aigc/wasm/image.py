"""Image preprocessing in wasm: uint8 HWC -> normalised float32 NCHW.

    pre = ImagePreprocessor.classifier(224, 448)   # image-classify's geometry (below)
    x = pre(image)                                 # (1, 3, H, W) float32, H, W in 224..448
    pre = ImagePreprocessor.efficientnet_lite0()   # shorter side 256, centre crop 224
    faces = ImagePreprocessor.face_gray64()(crop)  # (1, 1, 64, 64) float32, luma 0..255

Geometry (all decided here, the pixels are computed in wasm):
* size=None (classifier geometry, as aigc.runtime.images.classifier_input):
  shorter side to `resize`, longer side round(long * resize / short) with
  Python's round, whole frame kept; a side longer than `max_longer` is
  centre-cropped to it at offset floor((resized - max_longer) / 2).
* size given: resize=int is the shorter side, longer side floor(resize * long /
  short) (torchvision's Resize); resize=(h, w) is exact; resize=None goes
  straight to the output size; centre crop at round((resized - out) / 2).
* resample="pil" (default): Pillow's BILINEAR on uint8 pixels, bit for bit
  (triangle filter widened by the downscale factor, so it antialiases; two
  separable passes, each rounded to uint8).  resample="bilinear": float
  bilinear with half-pixel centres, edge-clamped, no antialiasing (torchvision
  with antialias=False).  docs/wasm.md says why PIL is the default.
* value = (pixel * scale - mean) / std per channel; grayscale uses
  0.299 R + 0.587 G + 0.114 B after resizing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import WasmLimitError
from .instance import MiB, Runtime

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(v, what: str) -> tuple[int, int]:
    h, w = (v, v) if isinstance(v, int) else tuple(v)
    if h <= 0 or w <= 0:
        raise ValueError(f"{what} must be positive, got {v!r}")
    return int(h), int(w)


class ImagePreprocessor:
    def __init__(self, size: int | tuple[int, int] = 224,
                 resize: int | tuple[int, int] | None = 256, *,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 scale: float = 1 / 255, grayscale: bool = False, resample: str = "pil",
                 max_longer: int | None = None, fuel: bool = True,
                 memory_limit: int = 512 * MiB, max_pixels: int = 64_000_000):
        self.size = None if size is None else _pair(size, "size")
        self.resize = resize if resize is None or isinstance(resize, int) else _pair(resize, "resize")
        if isinstance(self.resize, int) and self.resize <= 0:
            raise ValueError(f"resize must be positive, got {resize!r}")
        if self.size is None and not isinstance(self.resize, int):
            raise ValueError("size=None (classifier geometry) needs resize=<shorter side>")
        if max_longer is not None and (self.size is not None or max_longer < self.resize):
            raise ValueError("max_longer applies to size=None and must be >= resize")
        if resample not in ("pil", "bilinear"):
            raise ValueError(f"resample must be 'pil' or 'bilinear', not {resample!r}")
        self.resample = resample
        self.max_longer = max_longer
        channels = 1 if grayscale else 3
        mean, std = list(mean), list(std)
        if len(mean) == 1:
            mean *= channels
        if len(std) == 1:
            std *= channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} value(s) for "
                             f"{'grayscale' if grayscale else 'RGB'} output")
        if any(s == 0 for s in std):
            raise ValueError("std must be non-zero")
        self.grayscale = grayscale
        self.max_pixels = int(max_pixels)
        self.params = np.zeros(8, "<f4")
        self.params[0] = scale
        self.params[1:1 + channels] = mean
        self.params[4:4 + channels] = std
        self.runtime = Runtime("image", memory_limit=memory_limit, fuel_per_byte=2_000, fuel=fuel)

    @classmethod
    def classifier(cls, resize_shorter: int = 224, max_longer: int | None = 448,
                   **kwargs) -> "ImagePreprocessor":
        """image-classify's geometry: shorter side to `resize_shorter`, aspect kept,
        longer side centre-cropped to at most `max_longer`; output size varies."""
        return cls(None, resize_shorter, max_longer=max_longer, **kwargs)

    @classmethod
    def from_preprocess(cls, spec: dict, **kwargs) -> "ImagePreprocessor":
        """From a model store preprocess.json (resize_shorter, max_longer, mean, std)."""
        if spec.get("interpolation", "bilinear") != "bilinear" or \
                spec.get("layout", "NCHW") != "NCHW":
            raise ValueError(f"unsupported preprocess spec: {spec!r}")
        return cls.classifier(spec["resize_shorter"], spec.get("max_longer"),
                              mean=spec["mean"], std=spec["std"], **kwargs)

    @classmethod
    def efficientnet_lite0(cls, **kwargs) -> "ImagePreprocessor":
        """224x224 RGB, shorter side resized to 256 then centre-cropped, ImageNet mean/std."""
        return cls(224, 256, **kwargs)

    @classmethod
    def face_gray64(cls, **kwargs) -> "ImagePreprocessor":
        """64x64 grayscale face crop, raw luma 0..255 (FER+-style input)."""
        kwargs.setdefault("mean", (0.0,))
        kwargs.setdefault("std", (1.0,))
        kwargs.setdefault("scale", 1.0)
        return cls(64, None, grayscale=True, **kwargs)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(out_h, out_w) for an h x w input."""
        if self.size is not None:
            return self.size
        rh, rw, _, _ = self.plan(h, w)
        cap = self.max_longer or max(rh, rw)
        return min(rh, cap), min(rw, cap)

    def plan(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(resized_h, resized_w, crop_top, crop_left) for an h x w input."""
        if self.size is None:
            # Same arithmetic as the native classifier_input, so sizes agree exactly.
            s = self.resize / min(h, w)
            rh, rw = max(1, round(h * s)), max(1, round(w * s))
            cap = self.max_longer or max(rh, rw)
            return rh, rw, (rh - min(rh, cap)) // 2, (rw - min(rw, cap)) // 2
        oh, ow = self.size
        if self.resize is None:
            rh, rw = oh, ow
        elif isinstance(self.resize, int):
            s = self.resize
            rh, rw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        else:
            rh, rw = self.resize
        if oh > rh or ow > rw:
            raise ValueError(f"crop {oh}x{ow} is larger than the resized image {rh}x{rw}")
        return rh, rw, int(round((rh - oh) / 2.0)), int(round((rw - ow) / 2.0))

    @staticmethod
    def _check(image) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected a numpy uint8 array (H, W, C), got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"expected dtype uint8, got {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ValueError(f"expected shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}"
                             + ("; drop the alpha channel first" if image.ndim == 3
                                and image.shape[2] == 4 else ""))
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"empty image {image.shape}")
        return np.ascontiguousarray(image)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One image -> float32 array (1, C, H, W)."""
        image = self._check(image)
        h, w, c = image.shape
        if h * w > self.max_pixels:
            raise WasmLimitError(f"image of {h}x{w} pixels exceeds max_pixels={self.max_pixels}")
        rh, rw, top, left = self.plan(h, w)
        oh, ow = self.output_size(h, w)
        out_c = 1 if self.grayscale else 3
        export = "preprocess_pil" if self.resample == "pil" else "preprocess"
        out_bytes = out_c * oh * ow * 4

        def body(rt: Runtime):
            rt.call("reset")
            src = rt.write(image)
            params = rt.write(self.params)
            out = rt.alloc(out_bytes)
            rt.call(export, src, h, w, c, rh, rw, top, left, oh, ow, params,
                    int(self.grayscale), out)
            return rt.read(out, out_bytes)

        # Fuel scales with what the passes touch: source pixels and output values.
        flat = self.runtime.run(body, h * w * c + oh * ow * out_c)
        return np.frombuffer(flat, np.float32).reshape(1, out_c, oh, ow).copy()

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Several images (any sizes) -> float32 array (N, C, H, W); with the
        classifier geometry the outputs must come out the same size."""
        if not images:
            raise ValueError("batch() needs at least one image")
        outs = [self(img) for img in images]
        if len({o.shape for o in outs}) > 1:
            raise ValueError(f"outputs differ in size ({sorted({o.shape[2:] for o in outs})}); "
                             "run them one by one")
        return np.concatenate(outs, axis=0)
