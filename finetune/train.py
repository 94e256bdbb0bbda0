"""Training: a base model from the store, wrapped by one peft method (or fully trained), on Coq token blocks.

    python -m finetune train finetune/configs/smollm2-lora.yaml

The loop is plain torch (AdamW, warmup then cosine decay, gradient clipping)
so that what a checkpoint must hold is explicit: the trainable tensors, the
optimiser and schedule, the RNG state and the step. Blocks are a function of
the config alone, so a resumed run sees exactly the batches it would have seen.

A run lives in $AIGC_JOBS_DIR/<run_id>/ (the UI's jobs format):
    config.json, status.json, metrics.jsonl, checkpoint/state.pt,
    adapter/ (peft: adapter_config.json, adapter_model.safetensors, README.md)
    or model/ (full fine-tuning), metrics.json, loss.png
"""

from __future__ import annotations

import json
import math
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import blocks, card, examples, jobs, levers
from .config import ConfigError, RunConfig, default_data_dir, default_jobs_dir

EVAL_SEED = 0  # validation blocks do not depend on the run's seed, so runs are compared on the same tokens


class Cancelled(Exception):
    """The run stopped at a step boundary because a cancel was asked for; its checkpoint is saved."""


def base_entry(base: str, store_root: Path | None = None):
    """The store entry of a text-generation base model, or a ConfigError saying why it cannot be one."""
    from aigc.runtime import errors, store

    try:
        stored = store.open_model(base, store_root)
    except errors.ModelNotFound as exc:
        raise ConfigError(f"base {base!r}: {exc}") from None
    task = stored.manifest.get("task")
    if task != "text-generation":
        raise ConfigError(f"base {base!r} is a {task!r} model, not text-generation")
    return stored


def load_base(base: str, store_root: Path | None = None, attention: str = "sdpa"):
    """(fp32 model, tokenizer, store entry) of a text-generation store entry."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stored = base_entry(base, store_root)
    tokenizer = AutoTokenizer.from_pretrained(str(stored.path))
    # fp32: this CPU has no fast bf16 matmul, and adapters are trained in fp32 anyway
    model = AutoModelForCausalLM.from_pretrained(str(stored.path), dtype=torch.float32,
                                                 attn_implementation=attention)
    return model, tokenizer, stored


def peft_config(cfg: RunConfig):
    from peft import IA3Config, LoraConfig, PromptTuningConfig, TaskType

    if cfg.method in ("lora", "dora"):
        return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.target_modules, use_dora=cfg.method == "dora",
                          task_type=TaskType.CAUSAL_LM)
    if cfg.method == "ia3":
        # the peft defaults for Llama-like models: scale keys, values and the MLP's input to down_proj
        return IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                         task_type=TaskType.CAUSAL_LM)
    if cfg.method == "prompt":
        return PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type=TaskType.CAUSAL_LM)
    raise ConfigError(f"method {cfg.method!r} has no peft config")


def wrap(model, cfg: RunConfig):
    if cfg.method == "full":
        return model
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config(cfg))
    except ValueError as exc:  # e.g. target modules that the base does not have
        raise ConfigError(f"{cfg.method} does not fit base {cfg.base!r}: {exc}") from None


def init_entry(cfg: RunConfig, store_root: Path | None = None):
    """The published adapter a run starts from, checked against the run's LoRA settings (same shapes and
    scale, so its weights mean what they meant when it was trained), or a ConfigError saying what differs."""
    from aigc.runtime import adapters, errors

    try:
        stored = adapters.open_adapter(cfg.base, cfg.init_adapter, store_root)
    except errors.ModelNotFound as exc:
        raise ConfigError(f"init_adapter: {exc}") from None
    saved = {"use_dora": False, **json.loads(stored.file("adapter_config.json").read_text())}  # older peft: no key
    wanted = {"peft_type": "LORA", "r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "use_dora": cfg.method == "dora"}
    differs = [f"{k} {saved.get(k)!r} (the run has {v!r})" for k, v in wanted.items() if saved.get(k) != v]
    if differs:
        raise ConfigError(f"init_adapter {cfg.init_adapter!r} does not fit this run: its " + ", ".join(differs))
    return stored


def load_init(model, cfg: RunConfig, store_root: Path | None = None) -> None:
    """Copy the init adapter's weights into the freshly wrapped model; every adapter tensor must be matched."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    stored = init_entry(cfg, store_root)
    weights = load_file(str(stored.file("adapter_model.safetensors")))
    result = set_peft_model_state_dict(model, weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ConfigError(f"init_adapter {cfg.init_adapter!r} targets other modules than this run "
                          f"(unmatched: {(result.unexpected_keys or missing)[:3]})")


def parameter_counts(model, cfg: RunConfig) -> tuple[int, int]:
    """(trainable, base) parameters; base excludes what the method added."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total if cfg.method == "full" else total - trainable


def schedule(cfg: RunConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine down to 10%
    return factor


def mean_loss(model, batches, cfg: RunConfig | None = None) -> float:
    """Mean validation loss; with a run's config, computed with its levers (chunked logits, bf16)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            ids, labels = batch if isinstance(batch, tuple) else (batch, batch)
            step_loss = levers.loss(model, batch, cfg) if cfg else model(input_ids=ids, labels=labels).loss
            total += float(step_loss) * len(ids)
            count += len(ids)
    model.train(was_training)
    return total / count


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Run:
    """One training run: prepare (validates and loads), then train()."""

    def __init__(self, cfg: RunConfig, jobs_dir: Path | None = None, store_root: Path | None = None,
                 data_dir: Path | None = None, progress: bool = True,
                 cancel: threading.Event | None = None):
        self.cfg = cfg
        self.dir = jobs.RunDir(Path(jobs_dir or default_jobs_dir()) / cfg.run_id)
        self.store_root = store_root
        self.data_dir = Path(data_dir or default_data_dir())
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self._check_before_loading()

    def _check_before_loading(self) -> None:
        # everything that can be wrong with the input is found here, before a model is loaded
        for split in ("train", "validation"):
            blocks.files_for(self.cfg.corpus, self.data_dir, split)
        base_entry(self.cfg.base, self.store_root)
        if self.cfg.init_adapter:
            init_entry(self.cfg, self.store_root)
        saved = self.dir.path / "config.json"
        # read back as a config: a field added since the run began takes its default, not "another config"
        if saved.is_file() and RunConfig.from_dict(json.loads(saved.read_text())).to_dict() != self.cfg.to_dict():
            raise ConfigError(f"run_id {self.cfg.run_id!r} exists with another config; "
                              "use a new run_id or the same config to resume")

    @property
    def checkpoint_path(self) -> Path:
        return self.dir.path / "checkpoint" / "state.pt"

    def train(self) -> dict[str, Any]:
        import torch
        from tqdm import tqdm

        cfg = self.cfg
        self.dir.path.mkdir(parents=True, exist_ok=True)
        (self.dir.path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        self.dir.set_status("running", step=0, total=cfg.steps, base=cfg.base, adapter=cfg.adapter,
                            message="loading the base model")
        try:
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            levers.set_allocator(cfg)
            model, tokenizer, _ = load_base(cfg.base, self.store_root, cfg.attention)
            torch.manual_seed(cfg.seed)  # adapter initialisation and dropout
            model = wrap(model, cfg)
            if cfg.init_adapter:
                load_init(model, cfg, self.store_root)
            levers.enable(model, cfg)
            trainable, base_params = parameter_counts(model, cfg)
            train_ids, train_labels, val_batches = self._data(tokenizer)
            order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(cfg.seed))
            self._count_tokens(train_ids, train_labels, order)

            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(cfg))
            start, train_seconds = self._resume(model, optimizer, scheduler)
            if start == 0:
                self.dir.truncate_metrics(0)
                self.dir.log({"step": 0, "eval_loss": mean_loss(model, val_batches, cfg)})
            model.train()
            bar = tqdm(total=cfg.steps, initial=start, disable=not self.progress, desc=cfg.run_id, unit="step")
            loss_window: list[float] = []
            for step in range(start, cfg.steps):
                if self.cancel.is_set() or self.dir.cancel_requested:
                    self._save(model, optimizer, scheduler, step, train_seconds)
                    raise Cancelled(f"cancelled at step {step}")
                began = time.perf_counter()
                rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                loss = levers.backward(model, examples.trim(train_ids[rows], train_labels[rows]), cfg)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                train_seconds += time.perf_counter() - began
                loss_window.append(loss)
                done = step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_window[-1]:.3f}")
                record: dict[str, Any] = {}
                if done % cfg.log_every == 0 or done == cfg.steps:
                    record = {"step": done, "loss": sum(loss_window) / len(loss_window),
                              "lr": scheduler.get_last_lr()[0], "train_seconds": round(train_seconds, 2)}
                    loss_window = []
                if (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps:
                    record = dict(record, step=done, eval_loss=mean_loss(model, val_batches, cfg))
                if record:
                    self.dir.log(record)
                    self.dir.set_status("running", step=done, total=cfg.steps,
                                        message=f"loss {record.get('loss', float('nan')):.3f}")
                if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
                    self._save(model, optimizer, scheduler, done, train_seconds)
            bar.close()
            metrics = self._finish(model, tokenizer, trainable, base_params, train_seconds)
        except Cancelled as exc:
            self.dir.set_status("cancelled", message=str(exc))
            raise
        except KeyboardInterrupt:
            self.dir.set_status("cancelled", message="interrupted; rerun the same config to resume")
            raise
        except Exception as exc:
            self.dir.set_status("failed", message=f"{type(exc).__name__}: {exc}"[:500])
            raise
        self.dir.clear_cancel()
        self.dir.set_status("succeeded", step=cfg.steps, total=cfg.steps, progress=1.0,
                            message=f"eval loss {metrics['eval_loss']:.3f}")
        return metrics

    def _data(self, tokenizer):
        """Training rows (input_ids, labels) for every step, and the validation batches; labels are the ids
        themselves for token blocks, the proof only for proof examples."""
        cfg = self.cfg
        count = cfg.steps * cfg.batch_size
        if cfg.task == "proofs":
            lib = examples.library(cfg.corpus, self.data_dir)
            ids, labels = examples.make_examples(tokenizer, cfg.corpus, self.data_dir, "train", lib, cfg.seq_len,
                                                 count, cfg.seed)
            val_ids, val_labels = examples.make_examples(tokenizer, cfg.corpus, self.data_dir, "validation", lib,
                                                         cfg.seq_len, cfg.eval_blocks, EVAL_SEED)
        else:
            ids = labels = blocks.make_blocks(tokenizer, blocks.files_for(cfg.corpus, self.data_dir, "train"),
                                              cfg.seq_len, count, cfg.seed)
            val_ids = val_labels = blocks.make_blocks(
                tokenizer, blocks.files_for(cfg.corpus, self.data_dir, "validation"), cfg.seq_len, cfg.eval_blocks,
                EVAL_SEED)
        val = [examples.trim(i, l) for i, l in zip(val_ids.split(cfg.batch_size), val_labels.split(cfg.batch_size))]
        return ids, labels, val

    def _count_tokens(self, ids, labels, order) -> None:
        """Tokens the whole run computes on (rows as trimmed per batch) and of those the targets: for token
        blocks both are steps x batch x seq_len; proof examples are shorter and mostly prompt."""
        size = self.cfg.batch_size
        if labels is ids:  # token blocks: every row is whole and every token a target, no loop needed
            self.tokens = self.targets = self.cfg.steps * size * ids.shape[1]
            return
        self.tokens = self.targets = 0
        for step in range(self.cfg.steps):
            rows = order[step * size:(step + 1) * size]
            batch_ids, batch_labels = examples.trim(ids[rows], labels[rows])
            self.tokens += batch_ids.numel()
            self.targets += int((batch_labels != examples.IGNORE).sum())

    # --- checkpoints --------------------------------------------------------------
    def _trainable_state(self, model) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def _save(self, model, optimizer, scheduler, step: int, train_seconds: float) -> None:
        import torch

        state = {"step": step, "train_seconds": train_seconds, "config": self.cfg.to_dict(),
                 "trainable": self._trainable_state(model), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()}
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)  # an interrupted save leaves the previous checkpoint intact

    def _resume(self, model, optimizer, scheduler) -> tuple[int, float]:
        import torch

        if not self.checkpoint_path.is_file():
            return 0, 0.0
        state = torch.load(self.checkpoint_path, weights_only=False)
        # read back as a config, as config.json is: a field added since the checkpoint takes its default
        if RunConfig.from_dict(state["config"]).to_dict() != self.cfg.to_dict():
            raise ConfigError(f"checkpoint {self.checkpoint_path} was made with another config")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                params[name].copy_(tensor)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.dir.truncate_metrics(state["step"])
        return state["step"], state["train_seconds"]

    # --- outputs ------------------------------------------------------------------
    def _finish(self, model, tokenizer, trainable: int, base_params: int, train_seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        rows = self.dir.metrics()
        evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
        losses = [r["loss"] for r in rows if "loss" in r]
        metrics = {
            "run_id": cfg.run_id, "method": cfg.method, "base": cfg.base, "steps": cfg.steps,
            "train_tokens": self.tokens, "target_tokens": self.targets,
            "trainable_parameters": trainable, "base_parameters": base_params,
            "trainable_percent": round(100 * trainable / base_params, 4),
            "train_seconds": round(train_seconds, 1),
            "train_tokens_per_second": round(self.tokens / max(train_seconds, 1e-9), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "initial_eval_loss": evals[0] if evals else None, "eval_loss": evals[-1] if evals else None,
            "final_train_loss": losses[-1] if losses else None,
        }
        out = self.dir.path / ("model" if cfg.method == "full" else "adapter")
        model.save_pretrained(out)  # peft: adapter_config.json + adapter_model.safetensors
        if cfg.method == "full":
            tokenizer.save_pretrained(out)
        (out / "README.md").write_text(card.model_card(cfg, metrics, data_dir=self.data_dir))
        (self.dir.path / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        card.loss_plot(rows, self.dir.path / "loss.png", title=f"{cfg.run_id} ({cfg.method})")
        if cfg.adapter:
            from . import publish
            publish.publish(out, cfg, metrics, self.store_root)
        return metrics
