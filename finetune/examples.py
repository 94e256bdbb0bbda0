"""Proof examples for `task: proofs`: the prompt evaluation uses, for lemmas of training files, and their proofs.

Each example is retrieval.build's prompt for one lemma (library premises from
the training files other than the lemma's own, earlier premises of its file,
the tail, the statement, "Proof.") followed by the lemma's proof, "Qed." and
end-of-text; only the proof and what follows it are targets (labels -100 on
the prompt). Lemmas are taken in file order from files in a seeded order, so
the examples, like token blocks, are a function of the config alone.
"""

from __future__ import annotations

import random
from pathlib import Path

from . import blocks, coq, data, proofs, retrieval

PACKAGES = proofs.PACKAGES  # the checker's library: what proofs are evaluated in, and so what is learned from
MAX_PROOF_CHARS = 400   # twice the evaluation set's bound: longer proofs teach little a 135M model can use
IGNORE = -100


def sources(corpus: str, data_dir: Path, split: str) -> list[tuple[str, Path]]:
    """(key, path) of a split's files: the checker library's files of the Debian split, or a corpus folder's."""
    if corpus == "debian":
        return data.package_files(data_dir, split, PACKAGES)
    root = Path(corpus)
    return [(path.relative_to(root).as_posix(), path) for path in blocks.files_for(corpus, data_dir, split)]


def library(corpus: str, data_dir: Path) -> retrieval.Library:
    if corpus == "debian":
        return retrieval.Library.training(data_dir, PACKAGES)
    return retrieval.Library(sources(corpus, data_dir, "train"))


def make_examples(tokenizer, corpus: str, data_dir: Path, split: str, lib: retrieval.Library, seq_len: int,
                  count: int, seed: int):
    """`count` examples as (input_ids, labels), each count x seq_len, right-padded with end-of-text."""
    import torch

    files = sources(corpus, data_dir, split)
    if not files:
        raise data.DataError(f"no {split} files to make proof examples from")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    rng = random.Random(seed)
    rows: list[tuple[list[int], list[int]]] = []
    while len(rows) < count:
        order = list(files)
        rng.shuffle(order)
        before = len(rows)
        for key, path in order:
            text = path.read_text(errors="replace")
            for lemma in coq.lemmas(text):
                if len(lemma.proof) > MAX_PROOF_CHARS or coq.FORBIDDEN.search(lemma.proof):
                    continue
                prompt = retrieval.build(tokenizer, text[:lemma.offset], lemma.statement, key, split, lib).text
                target = tokenizer(f"{lemma.proof}\n{lemma.closer}.", add_special_tokens=False)["input_ids"] + [eos]
                if len(target) > seq_len // 2:
                    continue
                head = tokenizer(prompt, add_special_tokens=False)["input_ids"][-(seq_len - len(target)):]
                rows.append((head + target, [IGNORE] * len(head) + target))
                if len(rows) >= count:
                    break
            if len(rows) >= count:
                break
        if len(rows) == before:
            raise data.DataError(f"the {split} files have no lemma with a proof of at most {MAX_PROOF_CHARS} "
                                 "characters to learn from")
    ids = torch.full((count, seq_len), eos, dtype=torch.long)
    labels = torch.full((count, seq_len), IGNORE, dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, :len(row_ids)] = torch.tensor(row_ids)
        labels[i, :len(row_labels)] = torch.tensor(row_labels)
    return ids, labels


def trim(ids, labels):
    """A batch cut after its last target column: padding past every row's end costs compute and adds nothing."""
    targets = (labels != IGNORE).any(dim=0).nonzero()
    width = int(targets[-1]) + 1 if len(targets) else ids.shape[1]
    return ids[:, :width], labels[:, :width]
