"""A fine-tuning run's configuration: one YAML or JSON file per run, validated before anything loads.

Every field has a default except `run_id`; an unknown field, a wrong type or
an out-of-range value is a ConfigError naming the field, raised before a
model or a corpus is touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("lora", "dora", "ia3", "prompt", "full")
ATTENTIONS = ("sdpa", "eager")
TASKS = ("text", "proofs")
# upper bounds: a request cannot ask for a run that never ends or a batch that fills any memory
MAXIMA = {"steps": 100_000, "batch_size": 256, "lora_r": 512, "lora_alpha": 4096, "num_virtual_tokens": 1024,
          "log_every": 100_000, "eval_blocks": 4096, "warmup_steps": 100_000, "eval_every": 100_000,
          "save_every": 100_000, "threads": 256}
MAX_EXTRA_BYTES = 16 << 10
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(ValueError):
    """A run configuration that cannot be trained. `field` names the field at fault when the message starts
    with one (every check below names its field first), so a form can show the message beside that field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field or field_of(message)


def field_of(message: str) -> str | None:
    """The RunConfig field a message is about (its first word), or None; also for a function's 400 text."""
    first = re.match(r"[a-z_][a-z0-9_]*", message or "")
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return first[0] if first and first[0] in names else None


def confined_corpus(corpus: str, root: Path) -> str:
    """A corpus named in a request: "debian", or a folder directly under `root` (the function's corpora),
    never a path of the caller's choosing (whose errors would tell what exists on the machine)."""
    if corpus == "debian":
        return corpus
    if not RUN_ID.fullmatch(corpus) or ".." in corpus:
        raise ConfigError("corpus: give 'debian' or the name of a folder of .v files under the function's "
                          f"corpora folder ({root.name}/), not a path")
    folder = root / corpus
    if not folder.is_dir():
        raise ConfigError(f"corpus {corpus!r} is not a folder under {root.name}/")
    return str(folder)


def default_data_dir() -> Path:
    return Path(os.environ.get("AIGC_FINETUNE_DATA") or Path(__file__).resolve().parent / "data")


def default_jobs_dir() -> Path:
    return Path(os.environ.get("AIGC_JOBS_DIR") or Path.home() / ".local/share/aigc/jobs")


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    method: str = "lora"
    base: str = "smollm2-135m"        # a text-generation entry of the model store
    adapter: str | None = None        # publish as store entry <base>--<adapter> (None: do not publish)
    init_adapter: str | None = None   # start from this published adapter of base (lora/dora, same rank and alpha)
    corpus: str = "debian"            # "debian" (the split of `python -m finetune data`) or a directory of .v files
    task: str = "text"                # "text": token blocks of the files; "proofs": retrieval prompt -> proof
    seed: int = 0
    steps: int = 300                  # optimiser steps
    batch_size: int = 4
    seq_len: int = 512
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # peft knobs (ignored by methods that do not use them)
    lora_r: int = 4
    lora_alpha: int = 8
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    num_virtual_tokens: int = 16
    # bookkeeping
    log_every: int = 5
    eval_every: int = 50              # validation loss every N steps (0: only at the end)
    eval_blocks: int = 16             # validation blocks of seq_len tokens
    save_every: int = 50              # checkpoint every N steps (0: only at the end)
    threads: int = 0                  # torch threads (0: torch's default)
    # memory and speed levers (finetune/levers.py); none changes what is learned except bf16's rounding
    attention: str = "sdpa"           # "sdpa" (fused, no T×T matrix kept per head) or "eager"
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward
    loss_chunk: int = 0               # tokens per cross-entropy chunk; 0: the whole logits tensor at once
    bf16: bool = False                # bfloat16 autocast for the forward pass (the CPU must support it)
    malloc_mmap_threshold: int = 0    # bytes: larger blocks are mmap'd and returned at free (0: glibc's default)
    micro_batch: int = 0              # rows per forward/backward, gradients added up over the batch (0: all rows)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, copied to the model card

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if not RUN_ID.fullmatch(self.run_id):
            raise ConfigError(f"run_id {self.run_id!r}: 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit")
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is unknown; use one of {', '.join(METHODS)}")
        if self.adapter is not None:
            _check_adapter_name("adapter", self.adapter)
            if self.method == "full":
                raise ConfigError("adapter: full fine-tuning makes a whole model, not an adapter; leave it unset")
        if self.init_adapter is not None:
            _check_adapter_name("init_adapter", self.init_adapter)
            if self.method not in ("lora", "dora"):
                raise ConfigError(f"init_adapter: a published adapter is LoRA weights; method {self.method!r} "
                                  "cannot start from it (use lora or dora)")
        for name in ("steps", "batch_size", "seq_len", "lora_r", "lora_alpha", "num_virtual_tokens",
                     "log_every", "eval_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "save_every", "threads", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ConfigError("weight_decay must be >= 0 and max_grad_norm > 0")
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r} is unknown; use one of {', '.join(TASKS)}")
        if self.task == "proofs" and self.seq_len < 256:
            raise ConfigError(f"seq_len must be >= 256 for task 'proofs' (a retrieval prompt and a proof), "
                              f"got {self.seq_len}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention {self.attention!r} is unknown; use one of {', '.join(ATTENTIONS)}")
        if self.loss_chunk < 0 or self.loss_chunk > 1 << 20:
            raise ConfigError(f"loss_chunk must be 0 (off) or a token count up to {1 << 20}, got {self.loss_chunk}")
        if self.loss_chunk and self.method == "prompt":
            raise ConfigError("loss_chunk: prompt tuning adds its virtual tokens inside peft's forward, so the loss "
                              "cannot be taken from the hidden states; leave loss_chunk at 0")
        if not 0 <= self.micro_batch <= self.batch_size:
            raise ConfigError(f"micro_batch must be 0 (the whole batch) to batch_size ({self.batch_size}), "
                              f"got {self.micro_batch}")
        if self.malloc_mmap_threshold and not 4096 <= self.malloc_mmap_threshold <= 32 << 20:
            raise ConfigError("malloc_mmap_threshold must be 0 (glibc's default) or 4096 to 33554432 bytes "
                              f"(glibc's maximum), got {self.malloc_mmap_threshold}")
        if self.seq_len > 8192:
            raise ConfigError(f"seq_len {self.seq_len} is over 8192")
        for name, most in MAXIMA.items():
            if getattr(self, name) > most:
                raise ConfigError(f"{name} must be <= {most}, got {getattr(self, name)}")
        if len(json.dumps(self.extra, default=str)) > MAX_EXTRA_BYTES:
            raise ConfigError(f"extra holds at most {MAX_EXTRA_BYTES} bytes of notes")
        from aigc.runtime import errors, store
        try:
            store.check_entry(self.base)
        except errors.InvalidInput as exc:
            raise ConfigError(f"base: {exc}") from None

    @classmethod
    def from_dict(cls, raw: Any) -> "RunConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"a run config is a mapping of fields, got {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        if "run_id" not in raw:
            raise ConfigError("run_id is required")
        return cls(**raw)

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml
            try:
                raw = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        else:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def _check_adapter_name(name: str, value: str) -> None:
    """The store's own rule for adapter names (aigc.runtime.adapters), reported as a config error on `name`."""
    from aigc.runtime import adapters, errors
    try:
        adapters.check_name(value)
    except errors.InvalidInput as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _check_type(name: str, value: Any, annotation: str) -> None:
    ok = {
        "str": isinstance(value, str),
        "str | None": value is None or isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "list[str] | str": isinstance(value, str) or (isinstance(value, list) and value
                                                       and all(isinstance(v, str) for v in value)),
        "dict[str, Any]": isinstance(value, dict),
    }[annotation]
    if not ok:
        raise ConfigError(f"{name} must be {annotation.replace(' | ', ' or ')}, got {value!r}")
