"""Tokenizer running in a wasm module, token-identical to `tokenizers`.

    tok = Tokenizer.from_file("tokenizer.json")
    enc = tok.encode_batch(["a", "b"])       # enc.ids, enc.attention_mask, enc.type_ids
    arrays = tok.encode_batch_numpy(texts)  # int64 arrays for ONNX
    text = tok.decode(enc.ids[0])

A whole batch is one call into wasm: texts go in as one buffer, ids come back
as one buffer.  Truncation and padding follow the tokenizer.json unless the
call overrides them, as `tokenizers.Tokenizer.from_file` does.
"""

from __future__ import annotations

import os
import struct
from itertools import accumulate

from . import engine as _engine
from . import snapshot as _snapshot
from .errors import UnsupportedTokenizerError, WasmLimitError
from .instance import MiB, Runtime

# typing, json and pathlib cost milliseconds each at import; none is needed on
# the cold-start path (annotations are strings, see `from __future__` above).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

    from .tokenizer_spec import TokenizerSpec

DEFAULT_MAX_INPUT_BYTES = 64 * MiB


class BatchEncoding:
    """Per-text lists of ids, attention_mask and type_ids (a plain class:
    dataclasses would add ~8 ms of imports to every cold start)."""

    __slots__ = ("ids", "attention_mask", "type_ids")

    def __init__(self, ids: list[list[int]], attention_mask: list[list[int]],
                 type_ids: list[list[int]]):
        self.ids, self.attention_mask, self.type_ids = ids, attention_mask, type_ids

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"BatchEncoding({len(self.ids)} sequences)"


def _u32(values) -> bytes:
    """Little-endian uint32 words, ready for Runtime.write."""
    values = values if isinstance(values, (list, tuple)) else list(values)
    return struct.pack(f"<{len(values)}I", *values)


def _offsets(lengths) -> bytes:
    return _u32(accumulate(lengths, initial=0))


def _utf8(text, index: int) -> bytes:
    """UTF-8 of one batch item, or the documented error (docs/wasm.md): only
    `str` is accepted, and a str holding a lone surrogate (U+D800..U+DFFF,
    e.g. from os.fsdecode or surrogateescape) raises UnicodeEncodeError, a
    ValueError, instead of being altered in silence."""
    if not isinstance(text, str):
        raise TypeError(f"texts[{index}] is {type(text).__name__}; the tokenizer takes str "
                        "(decode bytes first, choosing how to handle invalid UTF-8)")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UnicodeEncodeError(e.encoding, e.object, e.start, e.end,
                                 f"lone surrogate in texts[{index}]: {e.reason}") from None


class Tokenizer:
    def __init__(self, spec: "TokenizerSpec | None", *, memory_limit: int = 256 * MiB,
                 max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES, fuel_base: int = 200_000_000,
                 fuel_per_byte: int = 50_000, fuel: bool = True, eager: bool = True,
                 _info: dict | None = None, _image: bytes | None = None,
                 _snapshot_file: "_snapshot.Snapshot | None" = None):
        """Normally built by from_file / from_str.

        eager=True loads the vocabulary into wasm now, so a bad tokenizer.json
        fails here rather than on the first request.  A process that forks
        afterwards is fine: children build their own instance on first use."""
        self._spec = spec
        self._image = _image  # memory snapshot once loaded: re-instantiation copies it
        self._snap = _snapshot_file  # or a snapshot file, read straight into wasm memory
        if _info is None:
            from .tokenizer_spec import info

            _info = info(spec)
        self.info = _info
        self.max_input_bytes = int(max_input_bytes)
        self.truncation = self.info["truncation"]
        self.padding = self.info["padding"]
        self.runtime = Runtime("tokenizer", self._setup, memory_limit=memory_limit,
                               fuel_base=fuel_base, fuel_per_byte=fuel_per_byte, fuel=fuel)
        if eager:
            self.warm_up()

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, snapshot: bool = True, **kwargs) -> "Tokenizer":
        """Load a Hugging Face tokenizer.json (model.type BPE or WordPiece).

        snapshot=True reuses a saved memory image of this exact file and module
        build when there is one (no JSON parsing), and saves one otherwise."""
        tried = None
        if snapshot:
            # An unchanged file is not even read: its sha256 comes from the index.
            tried = _snapshot.key_for_file(path)
            tok = cls._from_snapshot(tried, kwargs)
            if tok is not None:
                return tok
        with open(path, "rb") as f:
            return cls._from_source(f.read(), snapshot, kwargs, tried)

    @classmethod
    def from_str(cls, text: str, *, snapshot: bool = False, **kwargs) -> "Tokenizer":
        return cls._from_source(text.encode(), snapshot, kwargs)

    @classmethod
    def _from_snapshot(cls, key: str, kwargs: dict) -> "Tokenizer | None":
        saved = _snapshot.open_snapshot(key)
        if saved is None:
            return None
        if isinstance(saved, tuple):  # read and checked in full
            meta, image = saved
            return cls(None, _info=meta, _image=image, **kwargs)
        try:
            tok = cls(None, _info=saved.meta, _snapshot_file=saved, **kwargs)
        except _snapshot.SnapshotError:
            saved.close()
            _engine.stats["snapshot_rejected"] += 1
            return None
        _engine.stats["snapshot_loaded"] += 1
        return tok

    @classmethod
    def _from_source(cls, raw: bytes, use_snapshot: bool, kwargs: dict,
                     tried: str | None = None) -> "Tokenizer":
        key = _snapshot.key_for(raw) if use_snapshot else None
        if key and key != tried:  # (tried: looked up already, from the file's digest)
            tok = cls._from_snapshot(key, kwargs)
            if tok is not None:
                return tok
        import json

        from .tokenizer_spec import parse  # only needed without a snapshot

        tok = cls(parse(json.loads(raw)), **kwargs)
        if key:
            if tok._image is None:
                tok.warm_up()
            _snapshot.save(key, tok.info, tok._image)
        return tok

    @property
    def model_type(self) -> str:
        return self.info["model"]

    @property
    def vocab_size(self) -> int:
        return self.info["vocab_size"]

    def token_to_id(self, token: str) -> int | None:
        """Ids of added/special tokens (the full vocabulary lives in wasm)."""
        return self.info["token_ids"].get(token)

    def warm_up(self) -> None:
        """Instantiate and load now instead of on the first call."""
        self.runtime.run(lambda rt: None)

    # -- loading (runs inside the runtime lock, once per instance) -------------------

    def _setup(self, rt: Runtime) -> None:
        if self._image is not None:
            rt.restore_memory(self._image)
            return
        if self._snap is not None:
            rt.restore_into(len(self._snap), self._snap.read_into)
            return
        self._load(rt)
        self._image = rt.read(0, rt.call("mem_top"))
        self._spec = None  # the image replaces the parsed blobs

    def _load(self, rt: Runtime) -> None:
        s = self._spec
        assert s is not None
        rt.call("load_vocab", rt.write(s.vocab_blob), len(s.vocab_blob), s.vocab_count)
        if s.added:
            blob = "\0".join(c for _, c, _ in s.added).encode("utf-8", "surrogatepass")
            meta = _u32([i for i, _, _ in s.added] + [int(sp) for _, _, sp in s.added])
            rt.call("load_added", rt.write(blob), len(blob), len(s.added), rt.write(meta))
        if s.model == "bpe":
            try:
                rt.call("load_bpe", rt.write(s.merges_blob), len(s.merges_blob), s.merges_count,
                        s.bpe_flags, s.digits, s.unk_id)
            except Exception as e:
                if "unknown token" in str(e):
                    bad = rt.call("err_info")
                    raise UnsupportedTokenizerError(
                        f"merge #{bad} uses a token that is not in the vocabulary") from None
                raise
        else:
            prefix = s.wp_prefix.encode()
            rt.call("load_wordpiece", rt.write(prefix), len(prefix), s.unk_id, s.wp_max_chars,
                    s.wp_flags)
        t = s.template
        words = [len(t.pre_ids), len(t.suf_ids), t.seq_type, *t.pre_ids, *t.pre_types,
                 *t.suf_ids, *t.suf_types]
        rt.call("set_template", rt.write(_u32(words)), len(words))
        rt.call("finish_load")

    # -- encoding ------------------------------------------------------------------

    def _options(self, add_special_tokens, max_length, truncation, padding, pad_to_multiple_of):
        if truncation is None:
            truncation = self.truncation is not None or max_length is not None
        trunc_max = 0
        trunc_left = False
        if truncation:
            trunc_max = max_length or (self.truncation or {}).get("max_length") or 0
            if trunc_max <= 0:
                raise ValueError("truncation needs max_length (none in the call or tokenizer.json)")
            trunc_left = (self.truncation or {}).get("direction") == "Left"
        pad = self.padding or {}
        if padding is None:
            padding = "max_length" if pad.get("length") else ("longest" if self.padding else False)
        if padding is True:
            padding = "longest"
        pad_mode, pad_len = 0, 0
        if padding == "longest":
            pad_mode = 1
        elif padding == "max_length":
            pad_mode, pad_len = 2, max_length or pad.get("length") or trunc_max
            if not pad_len:
                raise ValueError("padding='max_length' needs max_length")
        elif padding not in (False, "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', not {padding!r}")
        multiple = pad_to_multiple_of if pad_to_multiple_of is not None else pad.get("multiple")
        return _u32([int(add_special_tokens), trunc_max, int(trunc_left), pad_mode, pad_len,
                     multiple or 0, int(pad.get("direction") == "Left"),
                     pad.get("pad_id", self._default_pad_id()), pad.get("pad_type_id", 0)])

    def _default_pad_id(self) -> int:
        for name in ("[PAD]", "<pad>", "<|padding|>"):
            if name in self.info["token_ids"]:
                return self.info["token_ids"][name]
        return 0

    def _encode_raw(self, texts: Sequence[str], opts: bytes):
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings; use encode() for one")
        try:
            encoded = [t.encode("utf-8") for t in texts]
        except (AttributeError, UnicodeEncodeError):
            encoded = [_utf8(t, i) for i, t in enumerate(texts)]  # raises with details
        offsets = _offsets(len(b) for b in encoded)
        data = b"".join(encoded)
        if len(data) > self.max_input_bytes:
            raise WasmLimitError(f"input of {len(data)} bytes exceeds max_input_bytes="
                                 f"{self.max_input_bytes}")

        def body(rt: Runtime):
            rt.call("begin_request")
            text_ptr = rt.write(data)
            offs_ptr = rt.write(offsets)
            opts_ptr = rt.write(opts)
            rt.call("encode", text_ptr, len(data), offs_ptr, len(encoded), opts_ptr)
            n, total, ids_p, types_p, mask_p, offs_p = rt.read_u32s(rt.call("result_ptr"), 6)
            return (rt.read_array(ids_p, total, "i"), rt.read_array(types_p, total, "i"),
                    rt.read_array(mask_p, total, "i"), rt.read_array(offs_p, n + 1, "I"))

        return self.runtime.run(body, len(data))

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = True,
                     max_length: int | None = None, truncation: bool | None = None,
                     padding: bool | str | None = None,
                     pad_to_multiple_of: int | None = None) -> BatchEncoding:
        """Encode a batch of texts in one wasm call.

        truncation/padding=None follow tokenizer.json; padding may be False,
        True/"longest" or "max_length"; max_length overrides the file's length.
        """
        opts = self._options(add_special_tokens, max_length, truncation, padding, pad_to_multiple_of)
        ids, types, mask, offs = self._encode_raw(texts, opts)
        bounds = offs.tolist()
        spans = list(zip(bounds, bounds[1:]))
        ids_l, types_l, mask_l = ids.tolist(), types.tolist(), mask.tolist()
        return BatchEncoding([ids_l[a:b] for a, b in spans], [mask_l[a:b] for a, b in spans],
                             [types_l[a:b] for a, b in spans])

    def encode(self, text: str, **kwargs) -> list[int]:
        """Ids for one text (same options as encode_batch)."""
        return self.encode_batch([text], **kwargs).ids[0]

    def encode_batch_numpy(self, texts: Sequence[str], *, padding: bool | str | None = "longest",
                           **kwargs) -> dict:
        """int64 numpy arrays input_ids / attention_mask / token_type_ids, shape
        (batch, length), ready for ONNX Runtime."""
        import numpy as np  # only this form needs numpy; keep it off the import path

        opts = self._options(kwargs.pop("add_special_tokens", True), kwargs.pop("max_length", None),
                             kwargs.pop("truncation", None), padding,
                             kwargs.pop("pad_to_multiple_of", None))
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        ids, types, mask, offs = self._encode_raw(texts, opts)
        lengths = np.diff(np.frombuffer(offs, np.uint32).astype(np.int64))
        n = len(lengths)
        width = int(lengths[0]) if n else 0
        if n and not (lengths == width).all():
            raise ValueError("sequences have different lengths; use padding='longest' or enable "
                             "truncation with padding='max_length'")
        return {name: np.frombuffer(buf, np.int32).astype(np.int64).reshape(n, width)
                for name, buf in (("input_ids", ids), ("attention_mask", mask),
                                  ("token_type_ids", types))}

    # -- decoding ------------------------------------------------------------------

    def decode_batch(self, sequences: Sequence[Sequence[int]], *,
                     skip_special_tokens: bool = True) -> list[str]:
        if self.info["decoder"] is None:
            raise UnsupportedTokenizerError(
                "decoding needs a ByteLevel (BPE) or WordPiece decoder in tokenizer.json")
        flat = [int(i) for seq in sequences for i in seq]
        if any(i < 0 or i > 0xFFFFFFFF for i in flat):
            raise ValueError("token ids must be non-negative 32-bit integers")
        ids = _u32(flat)
        offs = _offsets(len(s) for s in sequences)

        def body(rt: Runtime):
            rt.call("begin_request")
            ids_ptr = rt.write(ids)
            offs_ptr = rt.write(offs)
            rt.call("decode", ids_ptr, offs_ptr, len(sequences), int(skip_special_tokens))
            n, total, data_p, offs_p = rt.read_u32s(rt.call("result_ptr"), 4)
            return rt.read(data_p, total), rt.read_u32s(offs_p, n + 1)

        data, bounds = self.runtime.run(body, 16 * len(flat))
        # Same lossy UTF-8 handling as the reference: bad sequences become U+FFFD.
        return [data[a:b].decode("utf-8", "replace") for a, b in zip(bounds, bounds[1:])]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.decode_batch([ids], skip_special_tokens=skip_special_tokens)[0]
