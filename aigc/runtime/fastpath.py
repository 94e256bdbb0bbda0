"""Tokenizers and image preprocessing: WebAssembly by default, native libraries to compare.

`AIGC_FAST_PATH=wasm` (default) uses the Zig-built modules in `aigc.wasm`,
run in-process by wasmtime; `AIGC_FAST_PATH=native` uses the `tokenizers`
library and PIL/numpy. Both give the same token ids; functions call only
this module, so switching needs no code change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import errors, images

if TYPE_CHECKING:
    import numpy as np

MODES = ("wasm", "native")


def mode() -> str:
    value = os.environ.get("AIGC_FAST_PATH", "wasm")
    if value not in MODES:
        raise ValueError(f"AIGC_FAST_PATH must be one of {MODES}, got {value!r}")
    return value


class TextTokenizer:
    """Ids with special tokens added, never truncated or padded (callers check lengths)."""

    def __init__(self, path: Path, backend: str | None = None):
        self.backend = backend or mode()
        if self.backend == "wasm":
            from aigc.wasm import Tokenizer

            self._wasm = Tokenizer.from_file(path)
        else:
            from tokenizers import Tokenizer

            self._native = Tokenizer.from_file(str(path))
            self._native.no_truncation()
            self._native.no_padding()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.backend == "native":
            return [e.ids for e in self._native.encode_batch(list(texts))]
        from aigc.wasm import WasmError, WasmLimitError

        try:
            return self._wasm.encode_batch(list(texts), truncation=False, padding=False).ids
        except WasmLimitError as exc:
            raise errors.InvalidInput(f"input is too large to tokenize: {exc}") from None
        except WasmError as exc:
            raise errors.ServerError(f"tokenizer failed: {exc}") from None


class ClassifierPreprocessor:
    """HWC uint8 RGB -> CHW float32, with the geometry of a store model's preprocess.json."""

    def __init__(self, spec: dict, backend: str | None = None):
        self.backend = backend or mode()
        self.spec = spec
        if self.backend == "wasm":
            from aigc.wasm import ImagePreprocessor

            self._wasm = ImagePreprocessor.from_preprocess(spec)

    def __call__(self, hwc) -> np.ndarray:
        images.check_hwc(hwc)
        if self.backend == "native":
            s = self.spec
            return images.classifier_input(hwc, s["resize_shorter"], s["max_longer"], s["mean"], s["std"])
        from aigc.wasm import WasmError, WasmLimitError

        try:
            return self._wasm(hwc)[0]
        except WasmLimitError as exc:
            raise errors.InvalidInput(f"image is too large to preprocess: {exc}") from None
        except WasmError as exc:
            raise errors.ServerError(f"image preprocessing failed: {exc}") from None


class FacePreprocessor:
    """HWC uint8 RGB face crop -> (size, size, 1) float32 grey, scaled as a store model's preprocess.json says.

    The spec gives `size`, `scale`, one-value `mean` and `std`: value = (luma * scale - mean) / std,
    with luma = 0.299 R + 0.587 G + 0.114 B taken after the resize, as the WASM module computes it.
    """

    def __init__(self, spec: dict, backend: str | None = None):
        self.backend = backend or mode()
        if spec.get("interpolation", "bilinear") != "bilinear" or not spec.get("grayscale", False):
            raise ValueError(f"unsupported face preprocess spec: {spec!r}")
        self.size = int(spec["size"])
        self.scale, self.mean, self.std = float(spec["scale"]), float(spec["mean"][0]), float(spec["std"][0])
        if self.backend == "wasm":
            from aigc.wasm import ImagePreprocessor

            self._wasm = ImagePreprocessor(self.size, None, grayscale=True, scale=self.scale,
                                           mean=(self.mean,), std=(self.std,))

    def __call__(self, hwc) -> np.ndarray:
        images.check_hwc(hwc)
        if self.backend == "native":
            return self._native(hwc)
        from aigc.wasm import WasmError, WasmLimitError

        try:
            return self._wasm(hwc)[0].reshape(self.size, self.size, 1)  # one channel: CHW and HWC coincide
        except WasmLimitError as exc:
            raise errors.InvalidInput(f"image is too large to preprocess: {exc}") from None
        except WasmError as exc:
            raise errors.ServerError(f"image preprocessing failed: {exc}") from None

    def _native(self, hwc):
        import numpy as np
        from PIL import Image

        # PIL's BILINEAR on the uint8 RGB pixels is what the WASM "pil" resampler reproduces bit for bit;
        # luma and scaling in float64 as the module does, so the two paths differ only by float32 rounding
        small = np.asarray(Image.fromarray(hwc).resize((self.size, self.size), Image.BILINEAR), np.float64)
        luma = small @ np.array([0.299, 0.587, 0.114])
        scale, mean, std = (float(np.float32(v)) for v in (self.scale, self.mean, self.std))  # WASM gets f32 params
        return ((luma * scale - mean) / std).astype(np.float32)[:, :, None]
