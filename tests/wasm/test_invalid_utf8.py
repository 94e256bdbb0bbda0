"""Invalid Unicode in, one documented behaviour out (docs/wasm.md, "Invalid UTF-8").

* Python API: only `str` is accepted; a lone surrogate raises
  UnicodeEncodeError (a ValueError) naming the batch item, nothing is encoded,
  and the tokenizer keeps working.  Bytes raise TypeError.
* wasm ABI (any host): a text that is not strict UTF-8 makes `encode` return
  -5 with err_info() = the text's index and result[0] = the length of its
  valid prefix, exactly where Python's strict decoder reports the error.
* decode: ids whose bytes do not form UTF-8 give U+FFFD, as `tokenizers` does.
"""

from __future__ import annotations

import random

import pytest

tokenizers = pytest.importorskip("tokenizers")

from aigc.wasm import Tokenizer, WasmError  # noqa: E402
from aigc.wasm.tokenizer import _u32  # noqa: E402


@pytest.fixture(scope="module", params=["gpt2", "minilm"])
def tok(request):
    path = request.getfixturevalue(f"{request.param}_json")
    return Tokenizer.from_file(path), tokenizers.Tokenizer.from_file(str(path))


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\ud83d\ude00", "ok \udcff tail"])
def test_lone_surrogates_raise_and_tokenizer_survives(tok, text):
    ours, ref = tok
    before = ours.encode_batch(["fine", "text"], padding=False).ids
    with pytest.raises(UnicodeEncodeError, match=r"lone surrogate in texts\[1\]") as err:
        ours.encode_batch(["fine", text], padding=False)
    assert isinstance(err.value, ValueError)
    assert text[err.value.start] in "\ud800\udfff\ud83d\udcff"  # points at the surrogate
    with pytest.raises(Exception):  # the reference refuses them too (with a TypeError)
        ref.encode(text)
    assert ours.encode_batch(["fine", "text"], padding=False).ids == before
    assert ours.runtime.instances_created == 1  # rejected before reaching wasm


def test_bytes_are_not_accepted(tok):
    ours, _ = tok
    with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
        ours.encode_batch([b"abc"])
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        ours.encode_batch(["x", None])


def _raw_encode(ours: Tokenizer, texts: list[bytes]) -> tuple[int, int, int]:
    """Call the wasm export directly, as a non-Python host would:
    (status, err_info, result[0])."""
    opts = ours._options(True, None, False, False, None)
    bounds = [0]
    for t in texts:
        bounds.append(bounds[-1] + len(t))
    offsets = _u32(bounds)
    data = b"".join(texts)

    def body(rt):
        rt.call("begin_request")
        args = (rt.write(data), len(data), rt.write(offsets), len(texts), rt.write(opts))
        status = rt.func("encode")(*args)
        return status, rt.call("err_info"), rt.read_u32s(rt.call("result_ptr"), 1)[0]

    return ours.runtime.run(body, len(data))


def _python_valid_prefix(raw: bytes) -> int:
    try:
        raw.decode("utf-8")
        return len(raw)
    except UnicodeDecodeError as e:
        return e.start


INVALID = [b"\xff", b"\x80", b"ab\xc0\xaf", b"\xe0\x80\xaf", b"x\xed\xa0\x80", b"\xed\xbf\xbf",
           b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"abc\xe2\x82", b"\xf0\x9f\x98",
           b"\xe2\x28\xa1", b"ok \xc3"]
VALID = [b"", b"\x00", b"\x7f", b"\xc2\x80", b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf",
         b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", "naïve 你好 😀".encode()]


def test_wasm_abi_rejects_invalid_utf8_like_python(tok):
    ours, _ = tok
    for raw in INVALID:
        status, index, prefix = _raw_encode(ours, [b"fine", raw])
        assert (status, index, prefix) == (-5, 1, _python_valid_prefix(raw)), raw
    for raw in VALID:
        status, _, _ = _raw_encode(ours, [b"fine", raw])
        assert status == 0, raw
        # Accepted bytes tokenize exactly as the str they decode to.
        got = ours.encode_batch(["fine", raw.decode()], padding=False, truncation=False)
        assert status == 0 and got.ids


def test_wasm_abi_fuzz_matches_python_decoder(tok):
    """Random byte strings biased towards multi-byte lead and continuation bytes."""
    ours, _ = tok
    rng = random.Random(5)
    alphabet = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
                0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
    samples = [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(3000)]
    mismatches = []
    for raw in samples:
        status, _, prefix = _raw_encode(ours, [raw])
        expected = _python_valid_prefix(raw)
        got = len(raw) if status == 0 else prefix
        if status not in (0, -5) or got != expected:
            mismatches.append((raw, status, got, expected))
    assert not mismatches, mismatches[:5]
    assert sum(_python_valid_prefix(r) == len(r) for r in samples) > 30  # both kinds occur


def test_invalid_utf8_through_runtime_is_a_clear_error(tok):
    ours, _ = tok
    with pytest.raises(WasmError, match="not valid UTF-8"):
        ours.runtime.run(lambda rt: rt.call(
            "encode", rt.write(b"\xff"), 1, rt.write(_u32([0, 1])), 1,
            rt.write(ours._options(True, None, False, False, None))))
    assert ours.encode("still fine", padding=False)


def test_decode_of_partial_characters_gives_replacement_chars(gpt2_json):
    ours = Tokenizer.from_file(gpt2_json)
    ref = tokenizers.Tokenizer.from_file(str(gpt2_json))
    ids = ours.encode("😀你")
    assert len(ids) > 2  # the characters span several byte-level tokens
    cuts = [ours.decode(ids[:cut]) for cut in range(1, len(ids))]
    assert cuts == [ref.decode(ids[:cut]) for cut in range(1, len(ids))]
    assert any("\ufffd" in c for c in cuts)
