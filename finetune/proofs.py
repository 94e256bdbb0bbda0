"""The proof-completion set: short proofs of lemmas from held-out (test split) files, each checked to compile.

    python -m finetune proofs          # -> $AIGC_FINETUNE_DATA/proofs.jsonl

The checker has Coq's standard library only (`apt-get install coq`), so
problems come from the test split's `libcoq-stdlib` files. A lemma qualifies
when its proof is short (at most MAX_PROOF_CHARS characters, MAX_SENTENCES
tactic sentences) and the original proof compiles in its context under
`coqc`; at most PER_FILE per file, in file order, so no single file dominates.
The context is not copied: a problem names its file and offset, and the
context's sha256 is checked when it is read back.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from . import coq, data

PACKAGES = ("libcoq-stdlib",)
MAX_PROOF_CHARS = 200
MAX_SENTENCES = 4
PER_FILE = 8


@dataclass(frozen=True)
class Problem:
    id: str
    file: str            # split key: <package>/<path>
    name: str
    statement: str
    reference_proof: str
    offset: int
    context_sha256: str

    def context(self, data_dir: Path) -> str:
        text = (Path(data_dir) / "debs" / self.file).read_text()[:self.offset]
        if hashlib.sha256(text.encode()).hexdigest() != self.context_sha256:
            raise data.DataError(f"context of {self.id} changed: rebuild with `python -m finetune proofs`")
        return text


def candidates(data_dir: Path) -> list[tuple[Problem, str]]:
    found = []
    for path in data.split_paths(data_dir, "test"):
        key = path.relative_to(Path(data_dir) / "debs").as_posix()
        if key.split("/")[0] not in PACKAGES:
            continue
        text = path.read_text()
        for lemma in coq.lemmas(text):
            if len(lemma.proof) > MAX_PROOF_CHARS or lemma.proof.count(".") > MAX_SENTENCES:
                continue
            context = text[:lemma.offset]
            problem = Problem(f"{Path(key).stem}.{lemma.name}", key, lemma.name, lemma.statement, lemma.proof,
                              lemma.offset, hashlib.sha256(context.encode()).hexdigest())
            found.append((problem, context))
    return found


def build(data_dir: Path, timeout: float = 30.0, workers: int = 2) -> list[Problem]:
    found = candidates(data_dir)
    with ThreadPoolExecutor(workers) as pool:  # coqc runs in its own process: threads suffice
        results = list(pool.map(lambda pc: coq.check(pc[1], pc[0].statement, pc[0].reference_proof, timeout),
                                found))
    kept: list[Problem] = []
    per_file: dict[str, int] = {}
    for (problem, _), result in zip(found, results):
        if result.ok and per_file.get(problem.file, 0) < PER_FILE:
            per_file[problem.file] = per_file.get(problem.file, 0) + 1
            kept.append(problem)
    out = Path(data_dir) / "proofs.jsonl"
    tmp = out.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(asdict(p), sort_keys=True) + "\n" for p in kept))
    tmp.replace(out)
    return kept


def load(data_dir: Path) -> list[Problem]:
    path = Path(data_dir) / "proofs.jsonl"
    if not path.is_file():
        raise data.DataError(f"{path} does not exist: run `python -m finetune proofs` first")
    return [Problem(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
