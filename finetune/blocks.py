"""Token blocks: files in a seeded order, tokenized and concatenated (EOS between files), cut into seq_len blocks.

Only as many files are tokenized as the blocks asked for need, so a 300-step
run reads a few MB of the 44 MB training split, and the same seed and
sizes always give the same blocks (which is what makes resume exact).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from . import data

if TYPE_CHECKING:
    import torch


def files_for(corpus: str, data_dir: Path, split: str) -> list[Path]:
    if corpus == "debian":
        return data.split_paths(data_dir, split)
    files = data.corpus_files(Path(corpus))
    # a plain directory has no split: hold out every 10th file (in sorted order) for validation and test
    if split == "train":
        return [f for i, f in enumerate(files) if i % 10 or len(files) < 3]
    return [f for i, f in enumerate(files) if i % 10 == 0] or files


def make_blocks(tokenizer, files: list[Path], seq_len: int, count: int, seed: int) -> "torch.Tensor":
    """`count` blocks (a count x seq_len LongTensor); files are reused in a new order if the split runs out."""
    import torch

    if not files:
        raise data.DataError("no files to make blocks from")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    rng = random.Random(seed)
    tokens: dict[Path, list[int]] = {}  # a small corpus is gone round several times: tokenize each file once
    stream: list[int] = []
    needed = count * seq_len
    while len(stream) < needed:
        order = list(files)
        rng.shuffle(order)
        before = len(stream)
        for path in order:
            if path not in tokens:
                text = path.read_text(errors="replace")
                tokens[path] = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
            stream.extend(tokens[path])
            if len(stream) >= needed:
                break
        if len(stream) - before <= len(files):  # nothing but end-of-file markers
            raise data.DataError("the corpus is empty after tokenization")
    return torch.tensor(stream[:needed], dtype=torch.long).view(count, seq_len)
