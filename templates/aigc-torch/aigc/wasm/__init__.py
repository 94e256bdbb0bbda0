"""WebAssembly tokenizers and image preprocessing, run in-process with wasmtime.

Importing this package loads wasmtime's shared library through a small ctypes
binding (`capi`; wasmtime's own Python bindings are not imported) and nothing
heavy (numpy only once an image function or a numpy batch is used).  The
Zig-built modules (`python wasm/build.py`) are compiled or loaded from the
module cache on first use, once per process.
"""

from .errors import UnsupportedTokenizerError, WasmError, WasmLimitError
from .tokenizer import BatchEncoding, Tokenizer

_IMAGE_NAMES = ("IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocessor")


def __getattr__(name):
    # The image module needs numpy; import it only when asked for.
    if name in _IMAGE_NAMES:
        from . import image

        return getattr(image, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BatchEncoding",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImagePreprocessor",
    "Tokenizer",
    "UnsupportedTokenizerError",
    "WasmError",
    "WasmLimitError",
]
