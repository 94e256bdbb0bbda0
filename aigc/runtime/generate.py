"""Causal language models: a KV-cached token loop and per-request LoRA adapters, on two engines.

`TextModel` is what every engine shares: served names, prompts, budgets and
the token loop (`Generation`); an engine supplies the tokenizer and `step`, one
forward pass on its KV cache. `CausalLM` runs a transformers checkpoint with
torch (the aigc-torch template); `generate_onnx.OnnxCausalLM` runs an ONNX
Runtime GenAI build (text-generate, on the aigc-onnx template).

Why our own loop rather than `model.generate()` with a streamer: generate()
must run on its own thread to stream, so a client that disconnects leaves it
generating until max_tokens unless a stopping criterion polls a flag; and it
holds one adapter for the whole call. Here each token is one forward pass on
the KV cache (`past_key_values`) made by the thread that consumes the stream:
closing the stream (the client went away) raises GeneratorExit at the next
`yield` and the loop is gone. Each forward pass takes the model's lock and
activates the request's adapter first, so concurrent requests with different
adapters interleave token by token on one copy of the base weights.

torch is imported inside methods only: gunicorn's master preloads handlers,
and engines belong in the workers (see gunicorn_conf).
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
import warnings
from typing import Any, Iterator

import numpy as np
from prometheus_client import Counter

from . import adapters, errors, store
from .model import Model
from .openai import Sampling
from .ort import engine_threads

# OpenMP threads that spin while waiting for work collapse when a core is taken by anything else
# (measured on 2 cores with one busy: a 30-token forward pass went from 0.07 s to 2.4 s, decode from 25 to
# ~2 tok/s); sleeping waiters cost nothing measurable when idle. libgomp reads this once, when torch is
# first imported, which happens after this module (handlers import torch inside Model.load()).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TOKENS = Counter("aigc_generated_tokens_total", "Tokens generated, by model and why generation ended",
                 ["model", "finish_reason"])
DEFAULT_MAX_ADAPTERS = 8
_UNKNOWN = object()  # which adapter peft has active after a load or an eviction: set it again


def _torch():
    import torch

    return torch


class Generation:
    """One request's token stream: iterate for text pieces, then read the counts and finish_reason.

    finish_reason: "stop" (end-of-sequence token or a stop string), "length"
    (max_tokens or the context is full), "timeout" (past the deadline), or
    "cancelled" (the stream was closed before the end) or "error".
    """

    def __init__(self, lm: "TextModel", prompt_ids: list[int], adapter: str | None, sampling: Sampling,
                 max_new_tokens: int, deadline: float | None = None):
        self.lm, self.prompt_ids, self.adapter = lm, prompt_ids, adapter
        self.sampling, self.max_new_tokens, self.deadline = sampling, max_new_tokens, deadline
        self.completion_ids: list[int] = []
        self.finish_reason: str | None = None
        self._iter = self._run()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.completion_ids)

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def text(self) -> str:
        return "".join(self._iter)

    def close(self) -> None:
        self._iter.close()

    def _run(self) -> Iterator[str]:
        seed = self.sampling.seed if self.sampling.seed is not None else random.getrandbits(63)
        # per request: a global RNG would be shared by threads. The parser takes any 64-bit seed, signed or not
        # (OpenAI's is a signed integer); numpy wants it non-negative, so a seed is its 64-bit pattern
        rng = np.random.default_rng(seed % (1 << 64))
        stops = self.sampling.stop
        ids, past, emitted, fed = self.prompt_ids, None, 0, 0
        limit = len(self.prompt_ids) + self.max_new_tokens  # the most tokens this request's cache holds
        try:
            while True:
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self.finish_reason = "timeout"
                    return
                logits, past = self.lm.step(ids, past, self.adapter, limit)
                fed += len(ids)
                token = _pick(logits, self.sampling, rng)
                if token in self.lm.eos_ids:
                    self.finish_reason = "stop"
                    break
                self.completion_ids.append(token)
                text = self.lm.decode(self.completion_ids)
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    if cut > emitted:
                        yield text[emitted:cut]
                    emitted = cut
                    self.finish_reason = "stop"
                    return
                full = (len(self.completion_ids) >= self.max_new_tokens
                        or len(self.prompt_ids) + len(self.completion_ids) >= self.lm.context_length)
                if full:
                    self.finish_reason = "length"
                    break
                safe = _safe_end(text, stops)
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
                ids = [token]
            # the end: what was held back (a possible stop-string prefix, a partial UTF-8 character) goes out
            text = self.lm.decode(self.completion_ids)
            if len(text) > emitted:
                yield text[emitted:]
        except GeneratorExit:  # closed mid-stream (the client went away): arrives at a yield
            self.finish_reason = "cancelled"
            raise
        except BaseException:
            self.finish_reason = "error"
            raise
        finally:
            TOKENS.labels(self.lm.name, self.finish_reason).inc(len(self.completion_ids))
            if past is not None:  # its cache may serve the next prompt, unless the request failed midway
                kept = [] if self.finish_reason == "error" else (self.prompt_ids + self.completion_ids)[:fed]
                self.lm.release(past, kept, self.adapter)


def _safe_end(text: str, stops: list[str]) -> int:
    """How much of `text` can be sent: not a trailing partial character, nor a tail that may start a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # bytes of a character that later tokens complete
        end -= 1
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text.endswith(stop[:k], 0, end):
                hold = max(hold, k)
                break
    return end - hold


def _pick(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """The next token from last-position logits: argmax at temperature 0, else a draw (top_p nucleus)."""
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / sampling.temperature
    probs = np.exp(scaled - scaled.max())
    order = None
    if sampling.top_p < 1.0:  # sorting 49k values costs milliseconds: only when a nucleus is asked for
        order = np.argsort(-probs, kind="stable")
        probs = probs[order]
        before = np.cumsum(probs) - probs  # mass of the tokens ranked above each
        probs[before >= sampling.top_p * probs.sum()] = 0.0  # keeps the smallest set reaching top_p (never empty)
    cumulative = np.cumsum(probs)
    index = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(probs) - 1)
    return int(order[index]) if order is not None else index


class TextModel(Model):
    """What every engine shares: the base and its adapters' names, prompts, token budgets, the token loop.

    An engine's load() sets `context_length`, `eos_ids` and `_longest_token`, and it provides
    `_tokenize`, `_chat_text`, `decode`, `step`, `ensure_adapter` and `loaded_adapters`."""

    def __init__(self, name: str, max_adapters: int | None = None):
        super().__init__(name)
        self.max_adapters = max_adapters or DEFAULT_MAX_ADAPTERS
        self.entry = name  # the store entry with the weights; adapters are stored under `name`

    # --- names ----------------------------------------------------------------
    def served_names(self, wanted: Any = None) -> list[str]:
        """The base and its adapters in the store. `wanted`, an adapter of this base that the store
        lacks, is first pulled from AIGC_MODEL_REMOTE when one is set: a new instance serves every
        published adapter on its first request for it, outside the forward-pass lock."""
        names = [self.name] + [adapters.served_name(self.name, a) for a in adapters.list_adapters(self.name)]
        base, adapter = adapters.split_served(wanted) if isinstance(wanted, str) else (None, None)
        if base == self.name and adapter and wanted not in names:
            adapters.check_name(adapter)
            from .remote import RemoteError

            try:
                adapters.open_adapter(self.name, adapter)
            except errors.ModelNotFound:
                return names  # not on the remote either (or none is set): the request gets its 404
            except RemoteError as exc:
                raise errors.ModelNotReady(f"adapter {wanted!r} could not be pulled: {exc}") from None
            except ValueError as exc:  # IntegrityError: the remote copy is corrupt
                raise errors.ServerError(f"adapter {wanted!r} was refused: {exc}") from None
            names.append(wanted)
        return names

    def adapter_of(self, served: str) -> str | None:
        base, adapter = adapters.split_served(served)
        if base != self.name:
            raise errors.ModelNotFound(f"model {served!r} does not exist here; this function serves {self.name!r} "
                                       "and its adapters")
        if adapter is not None:
            self.ensure_adapter(adapter)
        return adapter

    # --- prompts ----------------------------------------------------------------
    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        most = self.context_length * self._longest_token
        if len(text) > most:
            raise errors.InvalidInput(f"the prompt is {len(text)} characters; {self.name}'s context of "
                                      f"{self.context_length} tokens cannot hold more than {most}")
        return self._tokenize(text, special_tokens)

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.encode(self._chat_text(messages), special_tokens=False)  # the template wrote them already

    def budget(self, prompt_ids: list[int], max_tokens: int | None, cap: int, field: str) -> int:
        """Tokens this request may generate; 400 naming the field when the prompt does not fit."""
        if not prompt_ids:  # text the tokenizer drops entirely (e.g. a lone control character): nothing to continue
            raise errors.InvalidInput(f"'{field}' holds no tokens for {self.name}'s tokenizer; send some text")
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise errors.InvalidInput(f"'{field}' is {len(prompt_ids)} tokens; {self.name}'s context is "
                                      f"{self.context_length} tokens, including the completion")
        if max_tokens is None:
            return min(cap, room)
        if max_tokens > room:
            raise errors.InvalidInput(f"'{field}' is {len(prompt_ids)} tokens and 'max_tokens' is {max_tokens}: "
                                      f"together over {self.name}'s context of {self.context_length} tokens")
        return max_tokens

    def release(self, past: Any, tokens: list[int], adapter: str | None) -> None:
        """A finished request's cache, holding `tokens`: an engine that reuses prefixes keeps it."""

    def generate(self, prompt_ids: list[int], adapter: str | None, sampling: Sampling, max_new_tokens: int,
                 deadline: float | None = None) -> Generation:
        return Generation(self, prompt_ids, adapter, sampling, max_new_tokens, deadline)



class CausalLM(TextModel):
    """A causal LM from the store (a transformers directory) run by torch, plus its LoRA adapters (peft)."""

    platform = "pytorch_transformers"

    def __init__(self, name: str, max_adapters: int | None = None):
        super().__init__(name, max_adapters)
        self._step_lock = threading.Lock()  # one forward pass at a time: adapters are model-wide state
        self._tokenizer_lock = threading.Lock()
        self._loaded_adapters: collections.OrderedDict[str, None] = collections.OrderedDict()  # LRU order
        self._peft = None
        self._active: Any = None  # None: base model (adapter layers disabled)

    # --- loading ------------------------------------------------------------
    def load(self) -> None:
        torch = _torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

        torch.set_num_threads(engine_threads())
        stored = store.open_model(self.name)
        # AutoTokenizer takes 1.4 s to resolve what tokenizer.json already says (0.13 s): a tenth of the cold start
        tokenizer_class = PreTrainedTokenizerFast if (stored.path / "tokenizer.json").is_file() else AutoTokenizer
        self.tokenizer = tokenizer_class.from_pretrained(str(stored.path))
        # no token spells more characters than the longest in the vocabulary, so a text longer than
        # context × that cannot fit: refused by its length, before tokenising holds the lock
        self._longest_token = max(len(t) for t in self.tokenizer.get_vocab())
        self.net = AutoModelForCausalLM.from_pretrained(str(stored.path), dtype="auto").eval()
        config = self.net.config
        self.context_length = int(getattr(config, "max_position_embeddings", None) or config.n_positions)
        eos = self.net.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        with torch.inference_mode():  # first pass pays one-time kernel setup, here rather than in a request
            self.net(input_ids=torch.tensor([[next(iter(self.eos_ids), 0)]]))

    # --- tokenizer ----------------------------------------------------------------
    def _tokenize(self, text: str, special_tokens: bool) -> list[int]:
        # a fast tokenizer's __call__ may reset its Rust-side truncation state: not safe from two threads at once
        with self._tokenizer_lock:
            return list(self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"])

    def _chat_text(self, messages: list[dict[str, str]]) -> str:
        if not self.tokenizer.chat_template:
            raise errors.InvalidInput(f"model {self.name!r} has no chat template; use /v1/completions")
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # templates raise on orders they do not accept (e.g. two system turns)
            raise errors.InvalidInput(f"'messages' cannot be formatted by {self.name}'s chat template: {exc}") from None

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # --- forward passes and adapters ------------------------------------------------
    def step(self, ids: list[int], past: Any, adapter: str | None, limit: int):
        """One forward pass on the KV cache with `adapter` active: (last-position logits, new cache)."""
        torch = _torch()
        with self._step_lock:
            self._activate(adapter)  # outside inference_mode: adapter tensors made inside it stay frozen forever
            with torch.inference_mode():
                out = self.net(input_ids=torch.tensor([ids]), past_key_values=past, use_cache=True)
        return out.logits[0, -1].float().numpy(), out.past_key_values

    def ensure_adapter(self, adapter: str) -> None:
        """Load an adapter now (404 if unknown), so a broken one fails the request before it streams."""
        with self._step_lock:
            self._load_adapter(adapter)

    def _load_adapter(self, adapter: str) -> None:  # caller holds _step_lock
        if adapter in self._loaded_adapters:
            self._loaded_adapters.move_to_end(adapter)
            return
        stored = adapters.open_adapter(self.name, adapter)
        from peft import PeftModel

        if self._peft is None:
            # injects LoRA layers into self.net in place; the base weights are shared, never copied
            self._peft = PeftModel.from_pretrained(self.net, str(stored.path), adapter_name=adapter,
                                                   is_trainable=False)
        else:
            self._peft.load_adapter(str(stored.path), adapter_name=adapter, is_trainable=False)
        self._loaded_adapters[adapter] = None
        self._active = _UNKNOWN
        while len(self._loaded_adapters) > self.max_adapters:  # load first, then evict: peft keeps >= 1
            oldest, _ = self._loaded_adapters.popitem(last=False)
            with warnings.catch_warnings():  # "adapter was active, now deleted": we activate per step anyway
                warnings.simplefilter("ignore", UserWarning)
                self._peft.delete_adapter(oldest)  # a stream still using it reloads it on its next step

    def _activate(self, adapter: str | None) -> None:  # caller holds _step_lock
        if adapter is not None:
            self._load_adapter(adapter)
        if self._peft is None or adapter == self._active:
            return
        if adapter is None:
            self._peft.base_model.disable_adapter_layers()
        else:
            if not isinstance(self._active, str):  # disabled, or unknown after a load
                self._peft.base_model.enable_adapter_layers()
            self._peft.base_model.set_adapter(adapter)
        self._active = adapter

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._loaded_adapters)
