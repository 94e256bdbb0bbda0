"""Retrieval for proof prompts: only the training split and the problem's own file up to the lemma are read.

A small corpus with a known split is written here, with canaries: a lemma in
another test file and one after the problem in its own file, both worded
like the goal, which retrieval must never offer; and a twin (same statement)
in a training file, which it offers only when asked. Every file opened while
the library is built and the prompts are made is recorded by an audit hook.
The same provenance check then runs over the real 78-problem set when
`$AIGC_FINETUNE_DATA` holds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from finetune import coq, data, proofs, retrieval
from test_finetune import _gpt2_tokenizer_json, tiny_store  # noqa: F401 - a fixture

PKG = "libcoq-stdlib"
FILES = {
    # training split: library material
    "theories/Lists/Rev.v": ("train",
        "Require Import List.\n\nLemma rev_length_twin : forall (A : Type) (l : list A), length (rev l) = length l.\n"
        "Proof.\n  intros. apply rev_length.\nQed.\n\n"
        "Lemma app_length_sum : forall (A : Type) (l m : list A), length (l ++ m) = length l + length m.\nProof.\n"
        "  intros. apply app_length.\nQed.\n\nDefinition twice (n : nat) := n + n.\n"),
    "theories/Arith/Plus.v": ("train",
        "Lemma plus_n_O' : forall n : nat, n = n + 0.\nProof.\n  induction n; simpl; auto.\nQed.\n"),
    # the problem's file: a premise before the lemma, the lemma, a canary after it
    "theories/Lists/Goal.v": ("test",
        "Require Import List.\n\nDefinition lenrev (A : Type) (l : list A) := length (rev l).\n\n"
        "Lemma lenrev_app : forall (A : Type) (l m : list A), length (l ++ m) = length l + length m.\nProof.\n"
        "  intros. apply app_length.\nQed.\n\n"
        "Lemma rev_length_goal : forall (A : Type) (l : list A), length (rev l) = length l.\nProof.\n"
        "  intros. apply rev_length.\nQed.\n\n"
        "Lemma canary_after : forall (A : Type) (l : list A), length (rev l) = length l /\\ True.\nProof.\n"
        "  intros. split; [apply rev_length | trivial].\nQed.\n"),
    # another test file and a validation file: never read
    "theories/Lists/Other.v": ("test",
        "Lemma canary_other : forall (A : Type) (l : list A), length (rev l) = length l.\nProof.\n"
        "  intros. apply rev_length.\nQed.\n"),
    "theories/Lists/Val.v": ("validation",
        "Lemma canary_val : forall (A : Type) (l : list A), length (rev l) = length l.\nProof.\n"
        "  intros. apply rev_length.\nQed.\n"),
}
OTHER_PACKAGE = ("libcoq-mathcomp-ssreflect", "ssr/Far.v", "train",
                 "Lemma canary_package : forall (A : Type) (l : list A), length (rev l) = length l.\nProof.\n"
                 "  by [].\nQed.\n")

_opened: list[str] | None = None


def _audit(event, args):
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # a hook cannot be removed: it records only while _opened is a list


def reading():
    global _opened
    _opened = []
    return _opened


def stop_reading():
    global _opened
    _opened = None


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(_gpt2_tokenizer_json()), eos_token="<|endoftext|>")


@pytest.fixture
def corpus(tmp_path):
    entries = []
    items = [(PKG, rel, split, text) for rel, (split, text) in FILES.items()] + [OTHER_PACKAGE]
    for package, rel, split, text in items:
        path = tmp_path / "debs" / package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        entries.append({"key": f"{package}/{rel}", "package": package, "split": split, "size": len(text),
                        "sha256": hashlib.sha256(text.encode()).hexdigest()})
    (tmp_path / "split.json").write_text(json.dumps({"entries": entries}))
    return tmp_path


def problems_of(data_dir: Path, key: str) -> list[proofs.Problem]:
    text = (data_dir / "debs" / key).read_text()
    return [proofs.Problem(f"{Path(key).stem}.{lemma.name}", key, lemma.name, lemma.statement, lemma.proof,
                           lemma.offset, hashlib.sha256(text[:lemma.offset].encode()).hexdigest())
            for lemma in coq.lemmas(text)]


def check_provenance(data_dir: Path, problem: proofs.Problem, prompt: retrieval.Prompt, split_of: dict[str, str]):
    """Every retrieved premise is from the training split or from the problem's own file before the lemma,
    and is what its recorded span of that file says."""
    for premise in prompt.retrieved:
        where = f"{problem.id}: {premise.file}:{premise.start}-{premise.end} ({premise.name})"
        if premise.file == problem.file:
            assert premise.end <= problem.offset, f"{where} is not before the lemma"
        else:
            assert split_of[premise.file] == "train" == premise.split, f"{where} is not from the training split"
        span = (data_dir / "debs" / premise.file).read_text()[premise.start:premise.end]
        assert premise.name in span and premise.text.split("\n")[-1] in span, f"{where} is not its file's text"


def test_prompts_use_only_the_training_split_and_the_file_before_the_lemma(corpus, tokenizer):
    goal_key = f"{PKG}/theories/Lists/Goal.v"
    split_of = {e["key"]: e["split"] for e in data.load_split(corpus)["entries"]}
    problems = problems_of(corpus, goal_key)
    assert [p.name for p in problems] == ["lenrev_app", "rev_length_goal", "canary_after"]
    problem = problems[1]

    opened = reading()
    try:
        library = retrieval.Library.training(corpus, (PKG,))
        context = problem.context(corpus)
        prompt = retrieval.build(tokenizer, context, problem.statement, problem.file, "test", library,
                                 tail_tokens=8)
        with_twins = retrieval.build(tokenizer, context, problem.statement, problem.file, "test", library,
                                     tail_tokens=8, twins=True)
    finally:
        stop_reading()
    read = {Path(p).resolve().relative_to((corpus / "debs").resolve()).as_posix() for p in opened
            if Path(p).resolve().is_relative_to((corpus / "debs").resolve())}
    assert read == {key for key, split in split_of.items() if split == "train" and key.startswith(PKG)} | {goal_key}

    check_provenance(corpus, problem, prompt, split_of)
    check_provenance(corpus, problem, with_twins, split_of)
    names = [p.name for p in prompt.retrieved]
    # the training files' lemma on app lengths and the own file's earlier lemma and definition are offered
    assert {"app_length_sum", "lenrev_app", "lenrev"} <= set(names), names
    for canary in ("canary_after", "canary_other", "canary_val", "canary_package"):
        assert canary not in prompt.text and canary not in with_twins.text
    # the twin (same statement, another file) only on request
    assert "rev_length_twin" not in names and "rev_length_twin" in [p.name for p in with_twins.retrieved]
    assert prompt.text.endswith(f"{problem.statement}\nProof.\n")


def test_a_library_is_never_built_from_held_out_files(corpus):
    with pytest.raises(data.DataError, match="training split only"):
        retrieval.Library.training(corpus, (PKG,), split="test")


def test_bm25_ranks_by_shared_rare_terms():
    docs = [retrieval.Premise("f", "train", "Lemma", n, t, i, i + 1) for i, (n, t) in enumerate([
        ("a", "Lemma a : forall n, n + 0 = n."), ("b", "Lemma b : forall l, length (rev l) = length l."),
        ("c", "Lemma c : forall n m, n + m = m + n.")])]
    ranked = [p.name for _, p in retrieval.BM25(docs).ranked("Lemma g : forall l, length (rev (rev l)) = length l.")]
    assert ranked[0] == "b"
    assert retrieval.words("Nat.add_0_r x") == ["nat", "add_0_r", "add", "0", "r", "x"]
    assert retrieval.signature("Lemma a : x  = y.") == retrieval.signature("Theorem a: x = y.")


REAL = Path(os.environ.get("AIGC_FINETUNE_DATA", "/nonexistent"))


@pytest.mark.skipif(not (REAL / "proofs.jsonl").is_file(), reason="needs $AIGC_FINETUNE_DATA with proofs.jsonl "
                    "(python -m finetune data && python -m finetune proofs)")
def test_every_retrieved_item_of_the_real_problem_set_has_allowed_provenance(tokenizer):
    split_of = {e["key"]: e["split"] for e in data.load_split(REAL)["entries"]}
    problems = proofs.load(REAL)
    opened = reading()
    try:
        library = retrieval.Library.training(REAL, proofs.PACKAGES)
        prompts = []
        for problem in problems:
            context = problem.context(REAL)
            prompts.append(retrieval.build(tokenizer, context, problem.statement, problem.file, "test", library))
    finally:
        stop_reading()
    debs = (REAL / "debs").resolve()
    read = {Path(p).resolve().relative_to(debs).as_posix() for p in opened if Path(p).resolve().is_relative_to(debs)}
    held_out = {key for key, split in split_of.items() if split != "train"}
    assert read & held_out <= {p.file for p in problems}
    assert all(p.retrieved for p in prompts)
    for problem, prompt in zip(problems, prompts):
        check_provenance(REAL, problem, prompt, split_of)


# --- evaluation with retrieval prompts and sampling ----------------------------------------------------------

def test_pass_at_k_is_the_unbiased_estimate():
    from finetune.evaluate import pass_at_k

    assert pass_at_k(8, 0, 4) == 0.0 and pass_at_k(8, 8, 1) == 1.0 and pass_at_k(8, 5, 4) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)  # 1 - C(6,4)/C(8,4)


def test_pass_at_1_is_the_greedy_attempts_and_never_the_sampled_estimate():
    from finetune.evaluate import rates

    def attempts(pid, greedy_ok, sampled_ok):
        return ([{"id": pid, "kind": "greedy", "ok": greedy_ok}]
                + [{"id": pid, "kind": "sample", "ok": i < sampled_ok} for i in range(4)])

    # a solved greedily, never by sampling; b by 2 of 4 samples, not greedily; c by nothing
    out = rates(["a", "b", "c"], attempts("a", True, 0) + attempts("b", False, 2) + attempts("c", False, 0), 4)
    assert out["pass@1"] == pytest.approx(1 / 3) and out["solved"] == ["a"]
    assert out["sampled_pass@1"] == pytest.approx((2 / 4) / 3)
    assert out["pass@4"] == pytest.approx(1 / 3) and "pass@8" not in out and out["solved_by_sampling"] == ["b"]
    assert "sampled_pass@1" not in rates(["a"], attempts("a", True, 0)[:1], 0)


def test_evaluate_samples_and_judges_every_attempt_with_retrieval_prompts(corpus, tiny_store):
    from finetune import evaluate
    from finetune.config import ConfigError

    problems = problems_of(corpus, f"{PKG}/theories/Lists/Goal.v")[:2]
    (corpus / "proofs.jsonl").write_text("".join(json.dumps(p.__dict__) + "\n" for p in problems))
    jobs = corpus / "jobs"
    results = evaluate.evaluate("tiny-llama", [], jobs, corpus, blocks=1, seq_len=32,
                                max_new_tokens=6, store_root=tiny_store, prompt="retrieval", samples=4)
    entry = results["models"]["tiny-llama"]
    assert entry["prompt"] == "retrieval" and entry["samples"]["n"] == 4
    assert [a["kind"] for a in entry["attempts"]] == (["greedy"] + ["sample"] * 4) * 2
    assert all(not a["ok"] and a["reason"] for a in entry["attempts"])  # random weights prove nothing
    assert entry["pass@1"] == entry["pass@4"] == 0.0 and "pass@8" not in entry
    assert "| pass@4 |" in evaluate.table(results)
    for bad, message in (({"prompt": "oracle"}, "prompt 'oracle' is unknown"),
                         ({"samples": 65}, "samples must be 0 to 64"),
                         ({"samples": 2, "temperature": 0}, "temperature must be in")):
        with pytest.raises(ConfigError, match=message):
            evaluate.evaluate("tiny-llama", [], jobs, corpus, store_root=tiny_store, **bad)


def test_the_tactics_baseline_closes_what_automation_can_and_nothing_else(corpus):
    from finetune import evaluate

    key = f"{PKG}/theories/Easy.v"
    (corpus / "debs" / key).write_text(
        "Lemma by_auto : forall P Q : Prop, P -> (P -> Q) -> Q.\nProof.\n  auto.\nQed.\n\n"
        "Lemma needs_induction : forall n m : nat, n + m = m + n.\nProof.\n  intros. apply PeanoNat.Nat.add_comm.\n"
        "Qed.\n")
    problems = problems_of(corpus, key)
    result = evaluate.tactics_baseline(problems, corpus, timeout=30)
    assert result["solved"] == ["Easy.by_auto"] and result["pass@1"] == 0.5
    assert result["proof"].startswith("solve [ (trivial) | ") and "firstorder" in result["proof"]
    failed = [a for a in result["attempts"] if not a["ok"]]
    assert [a["id"] for a in failed] == ["Easy.needs_induction"] and "Error" in failed[0]["reason"]
