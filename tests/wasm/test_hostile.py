"""Hostile input ends in bounded time, with a correct result or a clear
WasmLimitError, and the next call on the same tokenizer works.

Time bounds are generous (a noisy 2-core CI machine); typical times are 5-20x
lower.  Results for the 1 MB inputs are compared with `tokenizers`.
"""

from __future__ import annotations

import time

import pytest

tokenizers = pytest.importorskip("tokenizers")

from aigc.wasm import Tokenizer, WasmLimitError  # noqa: E402

NAMES = ["gpt2", "smollm2", "minilm"]
MEGABYTE_CASES = {"a*1e6": "a" * 10**6, "ab*5e5": "ab" * 500_000, "space*1e6": " " * 10**6,
                  "newline*1e6": "\n" * 10**6, "digit*1e6": "7" * 10**6,
                  "emoji*2.5e5": "😀" * 250_000, "word*1e6": "hello " * 166_667}
HUGE_CHARS = {"a": "a", "space": " ", "digit": "1", "e-acute": "é"}  # 50 MB each
LIMIT_1MB_S = 20.0
LIMIT_50MB_S = 60.0


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    path = request.getfixturevalue(f"{request.param}_json")
    ref = tokenizers.Tokenizer.from_file(str(path))
    ref.no_padding()
    ref.no_truncation()
    return request.param, Tokenizer.from_file(path), ref


def _timed(fn):
    t0 = time.perf_counter()
    try:
        return fn(), time.perf_counter() - t0
    except WasmLimitError as e:
        return e, time.perf_counter() - t0


@pytest.mark.slow
def test_megabyte_pathologies_are_correct_and_bounded(pair):
    name, ours, ref = pair
    probe = "The next call still works: 123 naïve"
    expected_probe = ours.encode(probe, padding=False, truncation=False)
    for case, text in MEGABYTE_CASES.items():
        got, seconds = _timed(lambda: ours.encode(text, padding=False, truncation=False))
        assert seconds < LIMIT_1MB_S, f"{name} {case}: {seconds:.1f}s"
        assert not isinstance(got, Exception), f"{name} {case}: {got}"
        assert got == ref.encode(text).ids, f"{name} {case}: ids differ from tokenizers"
        assert ours.encode(probe, padding=False, truncation=False) == expected_probe


@pytest.mark.slow
def test_fifty_megabytes_of_one_character(pair):
    name, ours, _ = pair
    probe = "The next call still works."
    expected_probe = ours.encode(probe, padding=False, truncation=False)
    for case, ch in HUGE_CHARS.items():
        text = ch * (50_000_000 // len(ch.encode()))
        got, seconds = _timed(lambda: ours.encode(text, padding=False, truncation=False))
        assert seconds < LIMIT_50MB_S, f"{name} {case}: {seconds:.1f}s"
        if isinstance(got, Exception):
            # The 256 MiB default cap: merge state for one 50 MB "word" or
            # 50M ids do not fit, and the message says which limit was hit.
            assert "memory cap 256 MiB" in str(got) or "cannot allocate" in str(got), str(got)
        else:
            assert len(got) > 0
        assert ours.encode(probe, padding=False, truncation=False) == expected_probe


def test_input_above_max_input_bytes_is_refused_before_wasm(gpt2_json):
    tok = Tokenizer.from_file(gpt2_json)
    text = "x" * (65 << 20)
    got, seconds = _timed(lambda: tok.encode(text))
    assert isinstance(got, WasmLimitError) and "max_input_bytes" in str(got)
    assert seconds < 5 and tok.runtime.instances_created == 1
    assert tok.encode("ok")
