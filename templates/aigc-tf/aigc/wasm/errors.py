"""Exceptions raised by the wasm layer."""


class WasmError(RuntimeError):
    """A wasm module could not be loaded or a call into it failed.

    The message says what went wrong (trap kind, limit hit, missing module).
    After a failure the instance is discarded, so the next call starts clean.
    """


class WasmLimitError(WasmError):
    """A call hit a resource limit: the memory cap, the fuel budget or the
    maximum input size."""


class UnsupportedTokenizerError(ValueError):
    """The tokenizer.json uses a component or option this layer does not
    implement; the message names the field."""
