"""Retrieved context for a proof problem: what a prover needs besides the last lines before the lemma.

A prompt for the lemma at `offset` of file F holds, within a token budget:
1. library premises: lemmas (with their proofs) and definitions from the
   training split's files of the checker's library, ranked by BM25 against
   the statement — worked examples of similar goals;
2. local premises: the lemmas and definitions of F before `offset` (the
   names the proof may use), ranked the same way, the proofs of short lemmas
   kept while the budget allows;
3. the tail of F before `offset`, then the statement and "Proof.".

Provenance is the point: every premise carries its file, split and span,
and the only text of a test file ever read is the problem's own file up to
the lemma (tests/test_finetune_retrieval.py checks both, with an audit hook
on `open`). Training examples are built by the same function from training
files, so the model learns the format it is evaluated with.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from . import coq, data

# token budgets of the three parts (SmolLM2's window is 2,048: prompt + proof stay well inside it)
LIBRARY_TOKENS = 320
LOCAL_TOKENS = 192
TAIL_TOKENS = 256
MAX_PREMISE_CHARS = 600    # a premise longer than this is cut off at a sentence end, or left out
LIBRARY_PER_FILE = 2       # so one file's many similar lemmas do not fill the budget
DEFINITION = re.compile(
    r"^[ \t]*(?P<kind>Definition|Fixpoint|Inductive|CoInductive|Record|Structure|Class|Notation|Infix)\s+"
    r"(?P<name>\"[^\"\n]+\"|[A-Za-z_][\w']*)(?P<rest>.*?\.)(?=\s)", re.M | re.S)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_']*|\d+")


@dataclass(frozen=True)
class Premise:
    file: str     # split key: <package>/<path>
    split: str
    kind: str     # Lemma, Theorem, ..., Definition, Fixpoint, ...
    name: str
    text: str     # the statement with its proof (lemmas) or the whole sentence (definitions)
    start: int    # span in the file
    end: int


def words(text: str) -> list[str]:
    """BM25 terms: identifiers, their `_`-separated parts and numbers, lowercased."""
    out = []
    for word in _WORD.findall(text):
        lowered = word.lower()
        out.append(lowered)
        parts = [p for p in lowered.split("_") if p]
        if len(parts) > 1:
            out.extend(parts)
    return out


def signature(statement: str) -> tuple[str, str]:
    """A statement's name and its proposition with blanks normalised ("Lemma a : x  = y." -> ("a", ": x = y."))."""
    parts = statement.split(None, 2)
    if len(parts) < 2:
        return "", " ".join(statement.split())
    name, _, rest = parts[1].partition(":")
    rest = (":" + rest if _ else "") + (" " + parts[2] if len(parts) > 2 else "")
    return name, " ".join(rest.split())


def premises(text: str, file: str, split: str) -> list[Premise]:
    """The lemmas (with proofs) and definitions of `text`, in file order; over-long ones left out."""
    found = []
    for lemma in coq.lemmas(text):
        body = f"{lemma.statement}\nProof.\n{lemma.proof}\n{lemma.closer}."
        if len(body) <= MAX_PREMISE_CHARS:
            found.append(Premise(file, split, lemma.statement.split()[0], lemma.name, body, lemma.offset, lemma.end))
    for m in DEFINITION.finditer(text):
        body = m[0].strip()
        if len(body) <= MAX_PREMISE_CHARS and "Proof." not in body:
            found.append(Premise(file, split, m["kind"], m["name"], body, m.start(), m.end()))
    return sorted(found, key=lambda p: p.start)


class BM25:
    """Okapi BM25 over premises (k1 1.2, b 0.75), with an inverted index so a query touches only its terms."""

    def __init__(self, docs: list[Premise], k1: float = 1.2, b: float = 0.75):
        self.docs = docs
        self.k1, self.b = k1, b
        self.lengths = []
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, doc in enumerate(docs):
            terms = Counter(words(doc.text))
            self.lengths.append(sum(terms.values()))
            for term, count in terms.items():
                self.postings[term].append((i, count))
        self.mean_length = sum(self.lengths) / len(docs) if docs else 1.0

    def ranked(self, query: str) -> list[tuple[float, Premise]]:
        scores: dict[int, float] = defaultdict(float)
        n = len(self.docs)
        for term in set(words(query)):
            posting = self.postings.get(term, ())
            if not posting:
                continue
            idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for i, count in posting:
                norm = count + self.k1 * (1 - self.b + self.b * self.lengths[i] / self.mean_length)
                scores[i] += idf * count * (self.k1 + 1) / norm
        # ties: the later premise first (nearer the goal in its file)
        order = sorted(scores, key=lambda i: (-scores[i], -self.docs[i].start, self.docs[i].file))
        return [(scores[i], self.docs[i]) for i in order]


class Library:
    """The premises of a set of training files, indexed once."""

    def __init__(self, sources: list[tuple[str, Path]], split: str = "train"):
        if split != "train":
            raise data.DataError("a retrieval library is built from the training split only")
        self.files = [key for key, _ in sources]
        docs: list[Premise] = []
        for key, path in sources:
            docs.extend(premises(path.read_text(errors="replace"), key, split))
        self.index = BM25(docs)

    @classmethod
    def training(cls, data_dir: Path, packages: tuple[str, ...], split: str = "train") -> "Library":
        """The training split's files of `packages` (the split of `python -m finetune data`)."""
        if split != "train":
            raise data.DataError("a retrieval library is built from the training split only")
        return cls(data.package_files(data_dir, split, packages))

    def search(self, query: str, exclude_file: str | None = None, twins_of: str | None = None) -> list[Premise]:
        """Best premises for `query`; none of `exclude_file`, and with `twins_of` (a lemma's statement) none
        with that lemma's name or statement: several stdlib files are near copies of each other (FSets and
        MSets), and copying a twin's proof says nothing about proving."""
        hits, per_file = [], Counter()
        twin = signature(twins_of) if twins_of else None
        for _, premise in self.index.ranked(query):
            if premise.file == exclude_file or per_file[premise.file] >= LIBRARY_PER_FILE:
                continue
            if twin and (premise.name == twin[0] or signature(premise.text.split("\nProof.\n")[0])[1] == twin[1]):
                continue
            per_file[premise.file] += 1
            hits.append(premise)
            if len(hits) >= 64:
                break
        return hits


@dataclass(frozen=True)
class Prompt:
    text: str
    retrieved: tuple[Premise, ...]   # what went into it, library first, then local (for provenance checks)


def _fill(tokenizer, candidates: list[Premise], budget: int, header: str) -> tuple[str, list[Premise]]:
    chosen, used = [], 0
    for premise in candidates:
        cost = len(tokenizer(premise.text + "\n", add_special_tokens=False)["input_ids"])
        if used + cost > budget:
            continue
        chosen.append(premise)
        used += cost
    if not chosen:
        return "", []
    # the most relevant last: nearest to the goal, where a small model attends most
    return header + "".join(p.text + "\n" for p in reversed(chosen)), chosen


def build(tokenizer, context: str, statement: str, file: str, split: str, library: Library | None,
          library_tokens: int = LIBRARY_TOKENS, local_tokens: int = LOCAL_TOKENS,
          tail_tokens: int = TAIL_TOKENS, twins: bool = False) -> Prompt:
    """The prompt for proving `statement` after `context` (its file `file` up to the lemma); `twins` lets the
    library offer lemmas with the same name or statement from other files (left out by default)."""
    # only the end of the context is tokenised: no token is longer than 16 characters in practice
    base = max(0, len(context) - 16 * tail_tokens)
    offsets = tokenizer(context[base:], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    tail_start = base + offsets[-tail_tokens][0] if len(offsets) > tail_tokens else base
    tail = context[tail_start:]
    query = statement
    library_part, from_library = "", []
    if library is not None and library_tokens:
        library_part, from_library = _fill(tokenizer, library.search(query, exclude_file=file,
                                                                           twins_of=None if twins else statement), library_tokens,
                                           "(* Similar lemmas from the library: *)\n")
    local_part, local = "", []
    if local_tokens and tail_start:
        # premises the tail shows only part of count as earlier: the model sees their statement whole
        earlier = [p for p in premises(context, file, split) if p.start < tail_start]
        ranked = [p for _, p in BM25(earlier).ranked(query)] if earlier else []
        local_part, local = _fill(tokenizer, ranked, local_tokens, "(* Earlier in this file: *)\n")
    gap = "(* ... *)\n" if tail_start else ""
    text = f"{library_part}{local_part}{gap}{tail.lstrip() if tail_start else tail}\n\n{statement}\nProof.\n"
    return Prompt(text, tuple(from_library + local))
