"""Read a Hugging Face tokenizer.json into the compact form the wasm module loads.

Only the pipelines the project needs are accepted; anything else raises
`UnsupportedTokenizerError` naming the field, rather than tokenizing
differently from the reference in silence:

* BPE: no normalizer; pre-tokenizer ByteLevel, Sequence[Digits, ByteLevel],
  or Sequence[Split(GPT-2 regex), ByteLevel(use_regex=false)]  (GPT-2,
  SmolLM2/StarCoder); ByteLevel decoder.
* WordPiece: BertNormalizer (or none) + BertPreTokenizer; WordPiece decoder.
* Post-processors: none, ByteLevel, TemplateProcessing, BertProcessing,
  RobertaProcessing, or a Sequence of those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UnsupportedTokenizerError

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|"
                r"\s+(?!\S)|\s+")


@dataclass
class Template:
    pre_ids: list[int] = field(default_factory=list)
    pre_types: list[int] = field(default_factory=list)
    suf_ids: list[int] = field(default_factory=list)
    suf_types: list[int] = field(default_factory=list)
    seq_type: int = 0


@dataclass
class TokenizerSpec:
    model: str  # "bpe" | "wordpiece"
    vocab_blob: bytes
    vocab_count: int
    added: list[tuple[int, str, bool]]
    template: Template
    decoder: str | None  # "bytelevel" | "wordpiece" | None
    merges_blob: bytes = b""
    merges_count: int = 0
    bpe_flags: int = 0  # 1 add_prefix_space, 2 use_regex, 4 ignore_merges
    digits: int = 0  # 0 none, 1 individual, 2 grouped
    unk_id: int = -1
    wp_prefix: str = "##"
    wp_max_chars: int = 100
    wp_flags: int = 0  # 1 clean, 2 chinese, 4 strip accents, 8 lowercase, 16 decoder cleanup
    truncation: dict | None = None  # {"max_length": int, "direction": "Right"|"Left"}
    padding: dict | None = None  # {"length": int|None, "multiple": int|None, ...}
    token_ids: dict[str, int] = field(default_factory=dict)  # added tokens by content

    @property
    def vocab_size(self) -> int:
        return max([self.vocab_count - 1, *(i for i, _, _ in self.added)]) + 1


def info(spec: TokenizerSpec) -> dict:
    """What the host needs besides the wasm state (JSON-serialisable, so it can
    be stored next to a memory snapshot)."""
    return {"model": spec.model, "decoder": spec.decoder, "vocab_size": spec.vocab_size,
            "token_ids": dict(spec.token_ids), "truncation": spec.truncation,
            "padding": spec.padding}


def _fail(where: str, value) -> UnsupportedTokenizerError:
    return UnsupportedTokenizerError(f"unsupported tokenizer.json {where}: {value!r}"[:300])


def _vocab_blob(vocab: dict) -> tuple[bytes, int]:
    ids = list(vocab.values())
    if ids == list(range(len(ids))):
        tokens = list(vocab)  # the usual case: saved in id order
    else:
        if any(not isinstance(i, int) or i < 0 for i in ids):
            raise _fail("model.vocab ids", "negative or non-integer id")
        tokens = [""] * (max(ids) + 1 if ids else 0)
        for tok, i in vocab.items():
            tokens[i] = tok
    joined = "\0".join(tokens)
    if len(tokens) > 1 and joined.count("\0") != len(tokens) - 1:
        raise _fail("model.vocab", "a token contains NUL")
    return joined.encode("utf-8", "surrogatepass"), len(tokens)


def _merges_blob(merges: list) -> tuple[bytes, int]:
    if not merges:
        return b"", 0
    if isinstance(merges[0], str):
        joined = "\n".join(merges)
    else:
        joined = "\n".join(a + " " + b for a, b in merges)
    n = len(merges)
    if joined.count("\n") != n - 1 or joined.count(" ") != n:
        raise _fail("model.merges", "merge tokens containing spaces or newlines")
    return joined.encode("utf-8", "surrogatepass"), n


def _bpe_pretokenizer(pre) -> tuple[int, int]:
    """Returns (flags, digits) for the supported byte-level pipelines."""
    def bytelevel(p, regex_default=True):
        flags = 1 if p.get("add_prefix_space", True) else 0
        if p.get("use_regex", regex_default):
            flags |= 2
        return flags

    if not isinstance(pre, dict):
        raise _fail("pre_tokenizer for BPE", pre)
    if pre.get("type") == "ByteLevel":
        return bytelevel(pre), 0
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if steps and len(steps) == 2 and steps[1].get("type") == "ByteLevel":
        first, last = steps
        if first.get("type") == "Digits":
            return bytelevel(last), 1 if first.get("individual_digits", False) else 2
        if (first.get("type") == "Split" and first.get("pattern") == {"Regex": GPT2_PATTERN}
                and first.get("behavior") == "Isolated" and not first.get("invert", False)
                and not last.get("use_regex", True)):
            return bytelevel(last) | 2, 0
    raise _fail("pre_tokenizer for BPE", pre)


def _template(post, token_ids: dict[str, int]) -> Template:
    t = Template()
    if post is None or post.get("type") == "ByteLevel":
        return t
    kind = post.get("type")
    if kind == "Sequence":
        parts = [p for p in post.get("processors", []) if p.get("type") != "ByteLevel"]
        if len(parts) > 1:
            raise _fail("post_processor", post)
        return _template(parts[0] if parts else None, token_ids)
    if kind in ("BertProcessing", "RobertaProcessing"):
        cls, sep = post["cls"], post["sep"]
        return Template([cls[1]], [0], [sep[1]], [0], 0)
    if kind != "TemplateProcessing":
        raise _fail("post_processor", post)
    specials = post.get("special_tokens", {})
    seen_seq = False
    for piece in post["single"]:
        if "Sequence" in piece:
            if piece["Sequence"]["id"] != "A" or seen_seq:
                raise _fail("post_processor.single", post["single"])
            t.seq_type = piece["Sequence"].get("type_id", 0)
            seen_seq = True
            continue
        name = piece["SpecialToken"]["id"]
        type_id = piece["SpecialToken"].get("type_id", 0)
        ids = specials[name]["ids"] if name in specials else [token_ids[name]]
        (t.suf_ids if seen_seq else t.pre_ids).extend(ids)
        (t.suf_types if seen_seq else t.pre_types).extend([type_id] * len(ids))
    return t


def _truncation(tr) -> dict | None:
    if tr is None:
        return None
    return {"max_length": int(tr["max_length"]), "direction": tr.get("direction", "Right")}


def _padding(pad) -> dict | None:
    if pad is None:
        return None
    strategy = pad.get("strategy", "BatchLongest")
    length = strategy["Fixed"] if isinstance(strategy, dict) else None
    return {"length": length, "multiple": pad.get("pad_to_multiple_of"),
            "direction": pad.get("direction", "Right"), "pad_id": pad.get("pad_id", 0),
            "pad_type_id": pad.get("pad_type_id", 0)}


def parse(cfg: dict) -> TokenizerSpec:
    model = cfg.get("model") or {}
    mtype = model.get("type")
    if mtype not in ("BPE", "WordPiece"):
        raise _fail("model.type (expected BPE or WordPiece)", mtype)
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise _fail("model.vocab", type(vocab).__name__)
    normalizer = cfg.get("normalizer")

    added = []
    token_ids = {}
    for a in cfg.get("added_tokens") or []:
        for flag in ("lstrip", "rstrip", "single_word"):
            if a.get(flag):
                raise _fail(f"added_tokens[{a.get('content')!r}].{flag}", True)
        if a.get("normalized") and not a.get("special") and normalizer is not None:
            raise _fail(f"added_tokens[{a.get('content')!r}].normalized with a normalizer", True)
        if not a.get("content"):
            raise _fail("added_tokens content", a.get("content"))
        added.append((int(a["id"]), a["content"], bool(a.get("special"))))
        token_ids[a["content"]] = int(a["id"])

    blob, count = _vocab_blob(vocab)
    template = _template(cfg.get("post_processor"), {**vocab, **token_ids})
    dec = cfg.get("decoder") or {}
    spec = TokenizerSpec(model=mtype.lower(), vocab_blob=blob, vocab_count=count, added=added,
                         template=template, decoder=None, token_ids=token_ids,
                         truncation=_truncation(cfg.get("truncation")),
                         padding=_padding(cfg.get("padding")))
    unk = model.get("unk_token")
    if unk is not None:
        if unk not in vocab:
            raise _fail("model.unk_token (not in vocab)", unk)
        spec.unk_id = vocab[unk]

    if mtype == "BPE":
        if normalizer is not None:
            raise _fail("normalizer for BPE", normalizer)
        if model.get("dropout") not in (None, 0, 0.0):
            raise _fail("model.dropout", model.get("dropout"))
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise _fail(f"model.{key}", model.get(key))
        if model.get("byte_fallback"):
            raise _fail("model.byte_fallback", True)
        spec.merges_blob, spec.merges_count = _merges_blob(model.get("merges") or [])
        flags, spec.digits = _bpe_pretokenizer(cfg.get("pre_tokenizer"))
        spec.bpe_flags = flags | (4 if model.get("ignore_merges") else 0)
        spec.decoder = "bytelevel" if dec.get("type") == "ByteLevel" else None
        return spec

    if spec.unk_id < 0:
        raise _fail("model.unk_token for WordPiece", None)
    if (cfg.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer":
        raise _fail("pre_tokenizer for WordPiece", cfg.get("pre_tokenizer"))
    if normalizer is not None:
        if normalizer.get("type") != "BertNormalizer":
            raise _fail("normalizer for WordPiece", normalizer)
        lower = normalizer.get("lowercase", True)
        strip = normalizer.get("strip_accents")
        strip = lower if strip is None else strip
        spec.wp_flags = ((1 if normalizer.get("clean_text", True) else 0)
                         | (2 if normalizer.get("handle_chinese_chars", True) else 0)
                         | (4 if strip else 0) | (8 if lower else 0))
    spec.wp_prefix = model.get("continuing_subword_prefix", "##")
    spec.wp_max_chars = int(model.get("max_input_chars_per_word", 100))
    if dec.get("type") == "WordPiece":
        spec.decoder = "wordpiece"
        if dec.get("prefix", "##") != spec.wp_prefix:
            raise _fail("decoder.prefix (differs from the model's)", dec.get("prefix"))
        if dec.get("cleanup", True):
            spec.wp_flags |= 16
    return spec
