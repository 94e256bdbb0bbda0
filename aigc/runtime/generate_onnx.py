"""Causal language models on ONNX Runtime GenAI: 4-bit kernels, no torch, LoRA adapters per request.

Serves a store entry that aigc.models.smollm2_onnx builds (`<model>-onnx`): a
base graph, and beside it the same graph with LoRA inputs, loaded on the first
request that names an adapter (it costs ~10% per token, which requests without
one do not pay; its weights are a second copy in memory).
the token loop, sampling, stop strings and budgets are generate.py's, shared
with the torch engine; this engine supplies the forward pass. Each request
owns an `og.Generator` (its KV cache, sized to its prompt plus max_tokens), so
requests run side by side on one copy of the weights with no model-wide lock,
each with its own adapter: an adapter is a set of values for the graph's LoRA
inputs (aigc.runtime.lora_onnx), converted from peft's files on first use.

A finished request's generator is kept (a few, AIGC_PREFIX_CACHE, default 4)
with the tokens its cache holds: a new prompt that starts the same way (a
system prompt, a chat's earlier turns, a few-shot preamble) with the same
adapter takes it over, rewinds it to the common prefix and computes only the
rest. The tokenizer is the `tokenizers` library on the entry's tokenizer.json
and the chat template is rendered by Jinja2 in a sandbox, as transformers does.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter

from . import adapters, errors, lora_onnx, store
from .generate import TextModel
from .ort import engine_threads

FORMAT = "onnxruntime-genai"
LORA_GRAPH = "model-lora.onnx"  # aigc.models.smollm2_onnx writes it beside the base graph
REUSED = Counter("aigc_prompt_tokens_reused_total", "Prompt tokens taken from a kept cache instead of computed")
MIN_REUSE = 16  # a shorter common prefix costs about as much to recompute as to look up


def _prefix_cache_size() -> int:
    raw = os.environ.get("AIGC_PREFIX_CACHE", "4")
    if not raw.isdigit() or int(raw) > 64:
        raise ValueError(f"invalid AIGC_PREFIX_CACHE={raw!r}: a whole number from 0 to 64 (finished requests' "
                         "caches kept for prefix reuse)")
    return int(raw)


class _Kept:
    """A finished request's generator and the tokens in its cache."""

    def __init__(self, generator: Any, tokens: list[int], adapter: str | None, limit: int):
        self.generator, self.tokens, self.adapter, self.limit = generator, tokens, adapter, limit


def entry_of(name: str) -> str:
    """The store entry holding a model's ONNX build."""
    return f"{name}-onnx"


class OnnxCausalLM(TextModel):
    platform = "onnxruntime_genai"

    def __init__(self, name: str, max_adapters: int | None = None):
        super().__init__(name, max_adapters)
        self.entry = entry_of(name)
        self._adapter_lock = threading.Lock()
        self._loaded_adapters: collections.OrderedDict[str, None] = collections.OrderedDict()  # LRU order
        self._kept: collections.deque[_Kept] = collections.deque()
        self._kept_lock = threading.Lock()
        self._kept_max = _prefix_cache_size()
        self._limits: dict[int, int] = {}  # id(generator) -> its cache length, for generators in use

    # --- loading ------------------------------------------------------------
    def load(self) -> None:
        import onnxruntime_genai as og
        from tokenizers import Tokenizer

        stored = store.open_model(self.entry)
        if stored.manifest.get("format") != FORMAT:
            raise errors.ServerError(f"store entry {self.entry!r} is not an ONNX Runtime GenAI model "
                                     f"(format {stored.manifest.get('format')!r}); rebuild it with "
                                     f"`aigc models build {self.entry}`")
        self._og, self._path = og, stored.path
        self._model = self._open(None)
        self._lora_model = self._adapters = None
        self._layout = stored.manifest["lora"]
        self.context_length = int(stored.manifest["context_length"])
        self.tokenizer = Tokenizer.from_file(str(stored.path / "tokenizer.json"))
        self._longest_token = max(len(t) for t in self.tokenizer.get_vocab())
        special = json.loads((stored.path / "tokenizer_config.json").read_text())
        self._template = _chat_template(stored.path / "chat_template.jinja", special)
        genai = json.loads((stored.path / "genai_config.json").read_text())["model"]
        eos = genai.get("eos_token_id")
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if isinstance(special.get("eos_token"), str) and self.tokenizer.token_to_id(special["eos_token"]) is not None:
            eos.add(self.tokenizer.token_to_id(special["eos_token"]))
        self.eos_ids = frozenset(eos)
        _, warm = self.step([next(iter(self.eos_ids), 0)], None, None, 2)  # kernels set up here, not in a request
        self.release(warm, [], None)

    def _open(self, graph: str | None):
        config = self._og.Config(str(self._path))
        # severity 3: the LoRA graph's inputs with defaults draw one warning per input (300) at every load
        decoder: dict[str, Any] = {"session_options": {"intra_op_num_threads": engine_threads(),
                                                       "inter_op_num_threads": 1, "log_severity_level": 3}}
        if graph:
            decoder["filename"] = graph
        config.overlay(json.dumps({"model": {"decoder": decoder}}))
        return self._og.Model(config)

    # --- tokenizer ----------------------------------------------------------------
    def _tokenize(self, text: str, special_tokens: bool) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=special_tokens).ids)

    def _chat_text(self, messages: list[dict[str, str]]) -> str:
        if self._template is None:
            raise errors.InvalidInput(f"model {self.name!r} has no chat template; use /v1/completions")
        try:
            return self._template(messages)
        except Exception as exc:  # templates raise on orders they do not accept (e.g. two system turns)
            raise errors.InvalidInput(f"'messages' cannot be formatted by {self.name}'s chat template: {exc}") from None

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # --- forward passes and adapters ------------------------------------------------
    def step(self, ids: list[int], past: Any, adapter: str | None, limit: int):
        """Append `ids` to the request's generator (made on the first step, its cache `limit` tokens long,
        with `adapter` active) and return the last position's logits with the generator."""
        if past is None:
            past, ids = self._reuse(ids, adapter, limit)
        if past is None:
            if adapter is None:
                model = self._model
            else:
                with self._adapter_lock:
                    self._load_adapter(adapter)
                    model = self._lora_model
            params = self._og.GeneratorParams(model)
            params.set_search_options(max_length=limit, batch_size=1)
            past = self._og.Generator(model, params)
            self._limits[id(past)] = limit
            if adapter is not None:
                with self._adapter_lock:
                    self._load_adapter(adapter)  # again: evicted meanwhile by another request's adapter
                    past.set_active_adapter(self._adapters, adapter)
        past.append_tokens(ids)
        return np.asarray(past.get_logits(), dtype=np.float32).reshape(-1), past

    def _reuse(self, prompt: list[int], adapter: str | None, limit: int) -> tuple[Any, list[int]]:
        """A kept generator whose cache starts like `prompt` (same adapter, long enough), rewound to the
        common prefix, with the part of the prompt still to compute; or (None, prompt)."""
        best, best_len = None, MIN_REUSE - 1
        with self._kept_lock:
            for kept in self._kept:
                if kept.adapter != adapter or kept.limit < limit:
                    continue
                n = 0
                for a, b in zip(kept.tokens, prompt):
                    if a != b:
                        break
                    n += 1
                n = min(n, len(prompt) - 1)  # the last prompt token is computed again: its logits are needed
                if n > best_len:
                    best, best_len = kept, n
            if best is None:
                return None, prompt
            self._kept.remove(best)
        best.generator.rewind_to(best_len)
        self._limits[id(best.generator)] = best.limit
        REUSED.inc(best_len)
        return best.generator, prompt[best_len:]

    def release(self, past: Any, tokens: list[int], adapter: str | None) -> None:
        limit = self._limits.pop(id(past), None)
        if not self._kept_max or limit is None or len(tokens) < MIN_REUSE:
            return
        with self._kept_lock:
            self._kept.append(_Kept(past, tokens, adapter, limit))
            while len(self._kept) > self._kept_max:  # oldest first: each holds its cache's memory
                self._kept.popleft()

    def ensure_adapter(self, adapter: str) -> None:
        """Load an adapter now (404 if unknown, 400 if this engine cannot apply it), before a stream starts."""
        with self._adapter_lock:
            self._load_adapter(adapter)

    def _load_adapter(self, adapter: str) -> None:  # caller holds _adapter_lock
        if adapter in self._loaded_adapters:
            self._loaded_adapters.move_to_end(adapter)
            return
        stored = adapters.open_adapter(self.name, adapter)
        if self._lora_model is None:
            self._lora_model = self._open(LORA_GRAPH)
            self._adapters = self._og.Adapters(self._lora_model)
        try:
            params = lora_onnx.adapter_params(stored.path, self._layout)
        except (ValueError, KeyError, OSError) as exc:
            raise lora_onnx.refuse(adapters.served_name(self.name, adapter), str(exc)) from None
        # the converted file lives only while it is read: a folder kept for the process's life would stay behind
        # in /tmp after every replica killed or recycled (atexit does not run on SIGKILL)
        with tempfile.TemporaryDirectory(prefix="aigc-adapters-") as folder:
            path = Path(folder) / f"{adapter}.onnx_adapter"
            lora_onnx.write_adapter(params, path)
            self._adapters.load(str(path), adapter)
        self._loaded_adapters[adapter] = None
        while len(self._loaded_adapters) > self.max_adapters:
            oldest = next(iter(self._loaded_adapters))
            with self._kept_lock:  # kept caches computed with it go too
                self._kept = collections.deque(k for k in self._kept if k.adapter != oldest)
            try:
                self._adapters.unload(oldest)
            except Exception:  # a generator still uses it: stays loaded until a later eviction finds it idle
                break
            del self._loaded_adapters[oldest]

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._loaded_adapters)


def _chat_template(path: Path, special: dict[str, Any]):
    """The model's chat template as a function of the messages, or None when it has none."""
    if not path.is_file():
        return None
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(path.read_text())
    tokens = {k: v for k, v in special.items() if k.endswith("_token") and isinstance(v, str)}
    return lambda messages: template.render(messages=messages, add_generation_prompt=True, **tokens)
