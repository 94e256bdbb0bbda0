"""Coq sources read just enough to cut out lemmas, and `coqc` to check a proof in its file's context.

A proof problem is a lemma of a held-out file: everything before it in the
file is its context, the statement is given, the proof is to be written. A
candidate proof is checked by compiling context + statement + proof with
`coqc` under a time limit, after closing the sections and modules the context
left open (coqc refuses a file that ends inside one).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LEMMA = re.compile(
    r"^[ \t]*(?P<kind>Lemma|Theorem|Fact|Remark|Corollary|Proposition)\s+(?P<name>[A-Za-z_][\w']*)"
    r"(?P<rest>[^\n]*?(?:\n(?!\s*\n)[^\n]*?)*?\.)(?=\s)\s*\n[ \t]*Proof\.[ \t]*\n?(?P<proof>.*?)(?P<end>Qed|Defined)\.",
    re.M | re.S)
# a proof must earn its Qed: these would prove anything or change the context
FORBIDDEN = re.compile(r"\b(Admitted|admit|Abort|Axiom|Axioms|Parameter|Parameters|Conjecture|Hypothesis|"
                       r"Variable|Variables|Require|Load|Declare|Drop|Reset|Back|Proof|Lemma|Theorem)\b")
_COMMENT = re.compile(r"\(\*.*?\*\)", re.S)
_OPEN = re.compile(r"^\s*(?:Section|Module(?:\s+Type)?)\s+(?!Import\b|Export\b)([A-Za-z_][\w']*)")
_END = re.compile(r"^\s*End\s+([A-Za-z_][\w']*)\s*$")


@dataclass(frozen=True)
class Lemma:
    name: str
    statement: str   # "Lemma foo : forall n, n + 0 = n."
    proof: str       # the tactics between "Proof." and "Qed."
    offset: int      # where the statement starts in the file
    end: int = 0     # just past its closing "Qed." / "Defined."
    closer: str = "Qed"


def strip_comments(text: str) -> str:
    # Coq comments nest; strip innermost first until none is left
    while True:
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            return text
        text = stripped


def lemmas(text: str) -> list[Lemma]:
    found = []
    for m in LEMMA.finditer(text):
        statement = f"{m['kind']} {m['name']}{m['rest']}"
        if "Proof." in statement or "(*" in m["proof"]:
            continue
        found.append(Lemma(m["name"], statement.strip(), m["proof"].strip(), m.start(), m.end(), m["end"]))
    return found


def open_blocks(context: str) -> list[str]:
    """Names of the sections/modules still open at the end of `context`, innermost last."""
    stack: list[str] = []
    for sentence in strip_comments(context).split(".\n"):
        sentence = sentence.strip()
        if ":=" in sentence:
            continue
        if m := _END.match(sentence):
            if m[1] in stack:
                del stack[len(stack) - 1 - stack[::-1].index(m[1]):]
        elif m := _OPEN.match(sentence):
            stack.append(m[1])
    return stack


def proof_of(generated: str) -> str | None:
    """The proof in a model's continuation after "Proof.": up to the first Qed/Defined, or None."""
    m = re.search(r"\b(Qed|Defined)\.", generated)
    if not m:
        return None
    proof = generated[:m.start()].strip()
    return proof or None


def check_source(context: str, statement: str, proof: str) -> str:
    closers = "".join(f"End {name}.\n" for name in reversed(open_blocks(context)))
    return f"{context.rstrip()}\n\n{statement}\nProof.\n{proof}\nQed.\n\n{closers}"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str   # "" when ok; else "forbidden", "timeout" or coqc's last lines


def check(context: str, statement: str, proof: str, timeout: float = 30.0) -> CheckResult:
    if FORBIDDEN.search(proof):
        return CheckResult(False, "forbidden")
    with tempfile.TemporaryDirectory(prefix="coqcheck-") as tmp:
        source = Path(tmp) / "Check.v"
        source.write_text(check_source(context, statement, proof))
        try:
            done = subprocess.run(["coqc", "-q", source.name], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return CheckResult(False, "timeout")
        except FileNotFoundError:
            raise RuntimeError("coqc is not installed: apt-get install coq") from None
    if done.returncode == 0:
        return CheckResult(True, "")
    return CheckResult(False, (done.stderr or done.stdout).strip()[-400:])
