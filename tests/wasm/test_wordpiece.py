"""BERT WordPiece (all-MiniLM-L6-v2) in wasm vs the `tokenizers` library."""

from __future__ import annotations

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from aigc.wasm import Tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def minilm(minilm_json):
    return Tokenizer.from_file(minilm_json), tokenizers.Tokenizer.from_file(str(minilm_json))


def _ref(ref_base, *, trunc=None, pad=False, pad_kwargs=None, trunc_dir="right"):
    """A reference tokenizer with explicit settings; pad: False, "longest" or a length."""
    ref = tokenizers.Tokenizer.from_str(ref_base.to_str())
    ref.no_truncation()
    ref.no_padding()
    if trunc:
        ref.enable_truncation(trunc, direction=trunc_dir)
    if pad is not False:
        ref.enable_padding(pad_id=0, pad_token="[PAD]", length=None if pad == "longest" else pad,
                           **(pad_kwargs or {}))
    return ref


def _compare(got, exp, texts):
    for name, ref_name in (("ids", "ids"), ("attention_mask", "attention_mask"),
                           ("type_ids", "type_ids")):
        bad = [(t, g, getattr(e, ref_name)) for t, g, e in zip(texts, getattr(got, name), exp)
               if g != getattr(e, ref_name)]
        assert not bad, f"{name}: {len(bad)}/{len(texts)} differ; first: {bad[0]!r}"[:3000]


def test_matches_reference_without_padding(minilm, corpus):
    ours, ref0 = minilm
    ref = _ref(ref0)
    got = ours.encode_batch(corpus, padding=False, truncation=False)
    _compare(got, ref.encode_batch(corpus), corpus)
    assert sum(len(x) for x in got.ids) > 50_000
    assert all(x[0] == 101 and x[-1] == 102 for x in got.ids)


def test_defaults_follow_tokenizer_json(minilm, corpus):
    """The file asks for truncation and fixed padding to 128, as the reference applies."""
    ours, ref = minilm
    texts = corpus[:300]
    got = ours.encode_batch(texts)
    assert {len(x) for x in got.ids} == {128}
    _compare(got, ref.encode_batch(texts), texts)


@pytest.mark.parametrize("case", ["trunc16_longest", "trunc_left_multiple8", "fixed40", "no_special"])
def test_truncation_and_padding_options(minilm, minilm_json, corpus, case):
    ours_path = minilm_json
    ours, ref0 = minilm
    texts = corpus[100:260]
    if case == "trunc16_longest":
        got = ours.encode_batch(texts, max_length=16, truncation=True, padding="longest")
        ref = _ref(ref0, trunc=16, pad="longest")
    elif case == "trunc_left_multiple8":
        ours_left = Tokenizer.from_file(ours_path)
        ours_left.truncation = {"max_length": 21, "direction": "Left"}
        ours_left.padding = {"length": None, "multiple": 8, "direction": "Left", "pad_id": 0,
                             "pad_type_id": 0}
        got = ours_left.encode_batch(texts)
        ref = _ref(ref0, trunc=21, trunc_dir="left", pad="longest",
                   pad_kwargs={"pad_to_multiple_of": 8, "direction": "left"})
        assert {len(x) for x in got.ids} == {24}
    elif case == "fixed40":
        got = ours.encode_batch(texts, max_length=40, truncation=False, padding="max_length")
        ref = _ref(ref0, pad=40)
        assert any(len(x) > 40 for x in got.ids) and any(len(x) == 40 for x in got.ids)
    else:
        got = ours.encode_batch(texts, add_special_tokens=False, padding=False, truncation=False)
        ref = _ref(ref0)
        _compare(got, ref.encode_batch(texts, add_special_tokens=False), texts)
        return
    _compare(got, ref.encode_batch(texts), texts)


def test_numpy_batch_for_onnx(minilm):
    ours, ref0 = minilm
    texts = ["A short one.", "A somewhat longer sentence, with punctuation!", ""]
    arrays = ours.encode_batch_numpy(texts, truncation=False)
    ref = _ref(ref0, pad="longest")
    exp = ref.encode_batch(texts)
    assert arrays["input_ids"].dtype == np.int64 and arrays["input_ids"].shape == (3, len(exp[0].ids))
    assert arrays["input_ids"].tolist() == [e.ids for e in exp]
    assert arrays["attention_mask"].tolist() == [e.attention_mask for e in exp]
    assert arrays["token_type_ids"].tolist() == [e.type_ids for e in exp]
    with pytest.raises(ValueError, match="different lengths"):
        ours.encode_batch_numpy(texts, padding=False, truncation=False)


def test_unk_specials_and_long_words(minilm):
    ours, _ = minilm
    ids = ours.encode("x" * 101, padding=False)
    assert ids == [101, 100, 102]  # longer than max_input_chars_per_word
    assert ours.encode("x" * 100, padding=False) != ids
    assert ours.encode("hi [SEP] there", padding=False).count(102) == 2  # matched on raw text
    assert ours.encode("hi [sep] there", padding=False).count(102) == 1
    assert ours.encode("", padding=False) == [101, 102]


def test_decode_matches_reference(minilm, corpus):
    ours, ref0 = minilm
    ref = _ref(ref0)
    enc = ours.encode_batch(corpus, padding=False, truncation=False)
    assert ours.decode_batch(enc.ids) == ref.decode_batch(enc.ids)
    some = enc.ids[5]
    assert ours.decode(some, skip_special_tokens=False) == ref.decode(some, skip_special_tokens=False)
    assert ours.decode(ours.encode("Hello, World!", padding=False)) == "hello, world!"


def test_bad_arguments(minilm):
    ours, _ = minilm
    with pytest.raises(TypeError):
        ours.encode_batch("not a list")
    with pytest.raises(ValueError, match="padding"):
        ours.encode_batch(["x"], padding="sideways")
    with pytest.raises(Exception, match="invalid input"):
        ours.encode_batch(["x"], max_length=1, truncation=True)  # shorter than [CLS] [SEP]
    with pytest.raises(ValueError, match="non-negative"):
        ours.decode([-1])
