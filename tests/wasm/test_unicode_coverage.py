"""Every Unicode code point, through both the wasm tokenizers and `tokenizers`.

This is what pins the generated tables (letters, numbers, white space,
punctuation, marks, controls, NFD, lowercase, CJK ranges) to the reference,
including the reference's older Unicode data for BERT (wasm/legacy_unicode.py).
"""

from __future__ import annotations

import pytest

tokenizers = pytest.importorskip("tokenizers")

from aigc.wasm import Tokenizer  # noqa: E402

# Each probe puts the character inside a word, after a space and at the end,
# so splitting, stripping, removal and case mapping all show up in the ids.
CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def _mismatches(ours, ref, chunk=100_000):
    bad = []
    for start in range(0, len(CODE_POINTS), chunk):
        cps = CODE_POINTS[start:start + chunk]
        texts = [f"xa{chr(c)}Ab {chr(c)}" for c in cps]
        got = ours.encode_batch(texts, padding=False, truncation=False).ids
        exp = ref.encode_batch(texts)
        bad += [c for c, g, e in zip(cps, got, exp) if g != e.ids]
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("which", ["gpt2", "minilm"])
def test_every_code_point_matches_reference(which, request):
    path = request.getfixturevalue(f"{which}_json")
    ours = Tokenizer.from_file(path)
    ref = tokenizers.Tokenizer.from_file(str(path))
    ref.no_padding()
    ref.no_truncation()
    bad = _mismatches(ours, ref)
    assert not bad, f"{len(bad)} code points differ, e.g. {[hex(c) for c in bad[:20]]}"
