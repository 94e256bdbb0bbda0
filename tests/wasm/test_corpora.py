"""Token ids identical to `tokenizers` on whole real corpora, for GPT-2, SmolLM2
and all-MiniLM-L6-v2, and lossless decode(encode(x)) for byte-level BPE.

Corpora: every .py file of this interpreter's standard library (31 MB; read
as UTF-8 with errors="replace", see wasm_fixtures.stdlib_texts), every .v file
of Debian's libcoq-stdlib (7 MB of Unicode-heavy proof scripts), the
hand-written edge cases in data/edge_cases.json, and a generated 1 MB single
line.  Each file is one text, as a caller would pass it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")

from aigc.wasm import Tokenizer  # noqa: E402

EDGE_CASES = Path(__file__).resolve().parent / "data" / "edge_cases.json"
BYTE_LEVEL = ("gpt2", "smollm2")
CHUNK_BYTES = 4 << 20  # keeps both sides' result buffers small


def byte_alphabet() -> list[str]:
    """The byte-level BPE alphabet: the character that stands for each byte.
    Printable Latin-1 bytes stand for themselves; the other 68 bytes take the
    code points from 256 upwards, in byte order."""
    own = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    extra = iter(range(256, 512))
    return [chr(b) if b in own else chr(next(extra)) for b in range(256)]


def lost_bytes(path: Path) -> bytes:
    """Bytes the vocabulary has no token for: BPE without an unk token drops
    them (both implementations), so they cannot survive a round trip.
    SmolLM2 lacks 21 (e.g. 0x04, 0x1d, 0xc0); GPT-2 has all 256."""
    vocab = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    return bytes(b for b, ch in enumerate(byte_alphabet()) if ch not in vocab)


def round_trip_expected(text: str, lost: bytes) -> str:
    if not lost:
        return text
    raw = text.encode("utf-8")
    return raw.translate(None, lost).decode("utf-8", "replace") if any(b in raw for b in lost) \
        else text


@pytest.fixture(scope="module", params=["gpt2", "smollm2", "minilm"])
def pair(request):
    path = request.getfixturevalue(f"{request.param}_json")
    ref = tokenizers.Tokenizer.from_file(str(path))
    ref.no_padding()
    ref.no_truncation()
    ours = Tokenizer.from_file(path)
    ours.lost_bytes = lost_bytes(path) if request.param in BYTE_LEVEL else b""
    return request.param, ours, ref


def _chunks(texts: list[str]):
    start, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= CHUNK_BYTES:
            yield start, texts[start:i + 1]
            start, size = i + 1, 0
    if start < len(texts):
        yield start, texts[start:]


def _first_difference(text: str, got: list[int], exp: list[int], ours) -> str:
    k = next((i for i, (a, b) in enumerate(zip(got, exp)) if a != b), min(len(got), len(exp)))
    where = len(ours.decode(got[:k], skip_special_tokens=False)) if ours.info["decoder"] else 0
    return (f"first difference at token {k} (of {len(got)} vs {len(exp)}), near text offset "
            f"{where}: {text[max(0, where - 40):where + 40]!r}; ours {got[k:k + 8]} vs "
            f"reference {exp[k:k + 8]}")


def check_corpus(name, ours, ref, texts: list[str]) -> int:
    """Compare ids for every text and, for byte-level BPE, decode(encode(x)) == x.
    Returns the number of tokens compared."""
    n_tokens = 0
    for start, chunk in _chunks(texts):
        got = ours.encode_batch(chunk, padding=False, truncation=False).ids
        exp = [e.ids for e in ref.encode_batch(chunk)]
        for i, (text, g, e) in enumerate(zip(chunk, got, exp)):
            assert g == e, f"{name}: text #{start + i} differs; " + _first_difference(text, g, e, ours)
        n_tokens += sum(map(len, got))
        if name in BYTE_LEVEL:
            decoded = ours.decode_batch(got, skip_special_tokens=False)
            lost = getattr(ours, "lost_bytes", b"")
            bad = [start + i for i, (t, d) in enumerate(zip(chunk, decoded))
                   if d != round_trip_expected(t, lost)]
            assert not bad, f"{name}: decode(encode(x)) != x for texts {bad[:10]}"
    return n_tokens


@pytest.mark.slow
def test_python_stdlib(pair, stdlib_texts):
    name, ours, ref = pair
    assert len(stdlib_texts) > 1000  # the whole library, not a sample
    assert check_corpus(name, ours, ref, stdlib_texts) > 5_000_000


@pytest.mark.slow
def test_coq_stdlib(pair, coq_texts):
    name, ours, ref = pair
    joined = "".join(coq_texts)
    assert any(ord(c) > 0x2000 for c in joined)  # the math symbols are there
    assert check_corpus(name, ours, ref, coq_texts) > 1_000_000


def _edge_cases() -> list[str]:
    cases = json.loads(EDGE_CASES.read_text(encoding="utf-8"))
    assert "" in cases and len(cases) > 100
    return cases


def test_edge_cases(pair):
    name, ours, ref = pair
    cases = _edge_cases()
    # Each case alone, all of them run together in one text, and pairwise
    # concatenations (a case's end meeting the next one's start).
    texts = cases + ["".join(cases), "\n".join(cases)] + [a + b for a, b in zip(cases, cases[1:])]
    check_corpus(name, ours, ref, texts)
    if name in BYTE_LEVEL:
        assert ours.decode(ours.encode("")) == ""
        assert len(ours.lost_bytes) == (21 if name == "smollm2" else 0)
        # The reference decodes those ids to the same lossy text.
        assert ours.decode_batch(ref_ids := [e.ids for e in ref.encode_batch(cases)],
                                 skip_special_tokens=False) == \
            [ref.decode(i, skip_special_tokens=False) for i in ref_ids]
    # Ids must also agree with added/special tokens removed from the output.
    got = ours.encode_batch(cases, add_special_tokens=False, padding=False, truncation=False).ids
    assert got == [e.ids for e in ref.encode_batch(cases, add_special_tokens=False)]


def one_megabyte_line(seed: int = 0) -> str:
    """~1 MB without a newline: words, numbers, runs of spaces and tabs, and
    characters from the edge cases, so every pre-tokenizer rule fires."""
    rng = random.Random(seed)
    chars = sorted({c for case in _edge_cases() for c in case if c not in "\r\n\x85\u2028\u2029"})
    words = ["the", "tokenizer", "Straße", "naïve", "你好", "😀", "don't", "x1", "__init__",
             "<|endoftext|>", "<|im_start|>", "[SEP]", "3.14", "1,000", "e\u0301"]
    parts, size = [], 0
    while size < 1_000_000:
        r = rng.random()
        if r < 0.55:
            part = rng.choice(words)
        elif r < 0.75:
            part = " " * rng.randint(1, 9) + "\t" * rng.randint(0, 2)
        elif r < 0.9:
            part = str(rng.randint(0, 10 ** rng.randint(1, 12)))
        else:
            part = "".join(rng.choice(chars) for _ in range(rng.randint(1, 6)))
        parts.append(part)
        size += len(part.encode())
    return "".join(parts)


def test_one_megabyte_single_line(pair):
    name, ours, ref = pair
    line = one_megabyte_line()
    assert "\n" not in line and len(line.encode()) >= 1_000_000
    check_corpus(name, ours, ref, [line])


def test_smollm2_tokenizer_from_gguf(smollm2_jsons, corpus):
    """The SmolLM2 fixture really is SmolLM2: 49,152 entries, its chat tokens,
    digits split one by one; the file exactly as transformers converted it
    (plain ByteLevel pre-tokenizer) also matches the reference."""
    ours = Tokenizer.from_file(smollm2_jsons["real"])
    ref = tokenizers.Tokenizer.from_file(str(smollm2_jsons["real"]))
    assert ours.vocab_size == ref.get_vocab_size() == 49152
    assert (ours.token_to_id("<|im_start|>"), ours.token_to_id("<|im_end|>")) == (1, 2)
    digits = ours.encode("12345")
    assert len(digits) == 5 and digits == ref.encode("12345").ids
    chat = "<|im_start|>user\nWhat is 12*34?<|im_end|>\n<|im_start|>assistant\n408<|im_end|>"
    check_corpus("smollm2", ours, ref, corpus + [chat])
    assert ours.encode(chat).count(1) == 2

    converted = Tokenizer.from_file(smollm2_jsons["converted"])
    ref_converted = tokenizers.Tokenizer.from_file(str(smollm2_jsons["converted"]))
    check_corpus("smollm2", converted, ref_converted, corpus + [chat])
    assert json.loads(smollm2_jsons["converted"].read_text())["pre_tokenizer"]["type"] == "ByteLevel"
