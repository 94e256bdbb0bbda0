"""Hostile input: memory cap, fuel budget, size limit; the tokenizer survives each."""

from __future__ import annotations

import pytest

from aigc.wasm import Tokenizer, WasmError, WasmLimitError
from aigc.wasm.image import ImagePreprocessor


@pytest.fixture()
def gpt2(gpt2_json):
    return lambda **kw: Tokenizer.from_file(gpt2_json, **kw)


def test_memory_cap_gives_clear_error_and_next_call_works(gpt2):
    tok = gpt2(memory_limit=48 << 20)
    expected = tok.encode("still works")
    with pytest.raises(WasmLimitError, match="out of memory.*memory cap 48 MiB"):
        tok.encode("a" * (12 << 20))  # one 12 MB word needs > 48 MiB of merge state
    assert tok.encode("still works") == expected
    with pytest.raises(WasmLimitError, match="cannot allocate"):
        tok.encode("b" * (60 << 20))  # the input itself does not fit
    assert tok.encode("still works") == expected


def test_input_size_limit(gpt2):
    tok = gpt2(max_input_bytes=1000)
    with pytest.raises(WasmLimitError, match="exceeds max_input_bytes=1000"):
        tok.encode_batch(["x" * 600, "y" * 600])
    assert tok.encode_batch(["x" * 600]).ids[0]


def test_fuel_exhaustion_gives_clear_error_and_recovers(gpt2):
    tok = gpt2()
    text = "The quick brown fox jumps over the lazy dog. " * 2000
    expected = tok.encode(text)
    assert tok.runtime.instances_created == 1
    tok.runtime.fuel_base, tok.runtime.fuel_per_byte = 100_000, 1
    with pytest.raises(WasmLimitError, match="ran out of fuel"):
        tok.encode(text)
    tok.runtime.fuel_base, tok.runtime.fuel_per_byte = 200_000_000, 50_000
    assert tok.encode(text) == expected
    assert tok.runtime.instances_created == 2  # the trapped instance was replaced


def test_default_fuel_covers_pathological_wordpiece(minilm_json):
    # 100-char words that match only char by char are the worst case for greedy
    # WordPiece; the default budget must still let them through.
    tok = Tokenizer.from_file(minilm_json)
    ids = tok.encode_batch([("qz" * 50 + " ") * 500], truncation=False, padding=False).ids[0]
    assert len(ids) > 1000


def test_image_limits():
    pre = ImagePreprocessor(224, 256, memory_limit=16 << 20)
    import numpy as np

    big = np.zeros((3000, 3000, 3), np.uint8)  # 27 MB does not fit in 16 MiB
    with pytest.raises(WasmLimitError, match="cannot allocate"):
        pre(big)
    assert pre(np.zeros((300, 300, 3), np.uint8)).shape == (1, 3, 224, 224)
    with pytest.raises(WasmLimitError, match="max_pixels"):
        ImagePreprocessor(max_pixels=100)(np.zeros((20, 20, 3), np.uint8))


def test_missing_module_is_reported(monkeypatch, tmp_path, gpt2):
    from aigc.wasm import engine

    monkeypatch.setenv("AIGC_WASM_DIR", str(tmp_path))
    engine.forget_modules()
    try:
        with pytest.raises(WasmError, match="wasm/build.py"):
            gpt2(snapshot=False)
    finally:
        engine.forget_modules()
