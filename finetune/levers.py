"""Memory and speed levers of a training run, each switched by one field of the run config.

What dominates a small model's training memory is not its weights (135M
parameters are 0.5 GB in fp32) but what the backward pass keeps: every
layer's activations, and the output layer's logits over the whole
vocabulary with their softmax and gradient — for SmolLM2 at batch 4 × 512
tokens, 2,048 × 49,152 fp32 values are 0.4 GB per copy. Hence:

- `attention` ("sdpa" | "eager"): fused scaled-dot-product attention never
  keeps the T × T attention matrix per head; eager does.
- `gradient_checkpointing`: each decoder layer's activations are recomputed
  in backward instead of kept (transformers' own, non-reentrant, so a frozen
  base under an adapter needs no input gradients).
- `loss_chunk`: the causal-LM loss from the last hidden state, `loss_chunk`
  tokens at a time, each chunk's logits recomputed in backward
  (torch.utils.checkpoint), so the whole logits tensor never exists.
- `bf16`: bfloat16 autocast of the forward pass; the only lever that changes
  the numbers (rounding), and only faster on CPUs with bf16 instructions.
- `micro_batch`: the batch's rows go through forward and backward this many
  at a time and their gradients add up to the whole batch's (each part's
  mean loss weighted by its share of the batch's targets), so activations
  are kept for a micro-batch only; the optimiser step is unchanged. With
  dropout on, each micro-batch draws its own masks: the same distribution,
  not the same numbers.
- `malloc_mmap_threshold`: glibc serves blocks above its mmap threshold with
  mmap and returns them to the system at free, but it raises that threshold
  on its own after each such free, so a training step's large transient
  tensors soon come from the heap, whose freed space the process keeps: the
  peak RSS then far exceeds the peak of live tensors. A fixed threshold
  (mallopt(M_MMAP_THRESHOLD), which also stops the adjusting) keeps RSS at
  what is live, at the cost of an mmap and fresh zeroed pages per large block.

With the same seed, the first three and `micro_batch` give the same losses as without them
(tests/test_finetune.py checks 5 steps to 1e-4); bench/finetune_levers.py
measures each one alone.
"""

from __future__ import annotations

import contextlib

from .config import RunConfig


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def set_allocator(cfg: RunConfig) -> bool:
    """Fix glibc's mmap threshold for this process (before the model loads); False where that is not glibc."""
    if not cfg.malloc_mmap_threshold:
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, cfg.malloc_mmap_threshold))
    except (OSError, AttributeError):  # musl and others have no mallopt: the run goes on with their default
        return False


def enable(model, cfg: RunConfig) -> None:
    """Switch on the levers that are properties of the model (after the peft wrap)."""
    if cfg.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False  # a cache is useless in training and refused with checkpointing


def autocast(cfg: RunConfig):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()


def loss(model, batch, cfg: RunConfig):
    """Mean next-token cross-entropy of `batch`, as transformers computes it for a causal LM: a token tensor
    (every next token is a target) or an (input_ids, labels) pair whose -100 labels are not targets."""
    ids, labels = batch if isinstance(batch, tuple) else (batch, batch)
    with autocast(cfg):
        if not cfg.loss_chunk or cfg.method == "prompt":  # prompt tuning prepends tokens inside peft's forward
            return model(input_ids=ids, labels=labels).loss
        return chunked_loss(model, ids, labels, cfg.loss_chunk)


def backward(model, batch, cfg: RunConfig) -> float:
    """Forward and backward of one optimiser step's (input_ids, labels), `cfg.micro_batch` rows at a time;
    the gradients are the whole batch's mean loss's, which is returned."""
    ids, labels = batch
    size = cfg.micro_batch or len(ids)
    total = int((labels[:, 1:] != -100).sum())
    value = 0.0
    for start in range(0, len(ids), size):
        part = labels[start:start + size]
        targets = int((part[:, 1:] != -100).sum())
        if not targets:
            continue  # nothing to predict in these rows
        weighted = loss(model, (ids[start:start + size], part), cfg) * (targets / max(total, 1))
        weighted.backward()
        value += weighted.item()  # the number only: a float() of a graph tensor warns on every step
    return value


def chunked_loss(model, ids, labels, chunk: int):
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.model(input_ids=ids).last_hidden_state  # after the final norm
    states = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    head = causal_lm.lm_head

    def piece(h, y):
        return F.cross_entropy(head(h).float(), y, reduction="sum", ignore_index=-100)

    total = torch.zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk):
        if (targets[start:start + chunk] == -100).all():
            continue  # nothing to predict here (a prompt): its logits need not exist at all
        total = total + checkpoint(piece, states[start:start + chunk], targets[start:start + chunk],
                                   use_reentrant=False)
    return total / (targets != -100).sum().clamp(min=1)
