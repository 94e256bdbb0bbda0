"""Evaluation: held-out perplexity and proof-completion pass@1/pass@k, for the base model and for trained runs.

    python -m finetune evaluate smollm2-coq-lora --out finetune/results/eval.json
    python -m finetune evaluate RUN --prompt retrieval --samples 8      # retrieval prompts, pass@4 and pass@8

Perplexity is exp(mean next-token cross-entropy) over `blocks` blocks of
`seq_len` tokens from the test split (files in a fixed order, seed 0), the
same tokens for every model. pass@1: for each problem the model sees its
prompt — the end of the file before the lemma (CONTEXT_TOKENS), the
statement and "Proof."; or, with `--prompt retrieval`, retrieval.build's
prompt — and continues greedily until "Qed."/"Defined." or
`max_new_tokens`; the proof is then compiled by `coqc` in the full file
context, with a time limit. pass@k (k = 4, 8) comes from `--samples n`
sampled continuations per problem (seeded; TEMPERATURE, TOP_P) by the
unbiased estimator; coqc judges each distinct proof once.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import blocks, coq, proofs, retrieval
from .config import ConfigError, RunConfig
from .train import EVAL_SEED, load_base, parameter_counts

CONTEXT_TOKENS = 384
TEMPERATURE = 0.8   # sampling for pass@k: nucleus sampling (top_p) at this temperature, seeded per problem
TOP_P = 0.95
KS = (1, 4, 8)
PROMPTS = ("tail", "retrieval")


def perplexity(model, tokenizer, files: list[Path], count: int, seq_len: int, batch_size: int = 4) -> float:
    import torch

    test = blocks.make_blocks(tokenizer, files, seq_len, count, EVAL_SEED)
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in test.split(batch_size):
            n = batch.shape[0] * (seq_len - 1)  # predicted positions
            total += float(model(input_ids=batch, labels=batch).loss) * n
            tokens += n
    return math.exp(total / tokens)


def prompt_for(tokenizer, problem: proofs.Problem, context: str, library) -> str:
    """The text the model continues: with a library, the retrieval prompt (finetune/retrieval.py); without,
    the last CONTEXT_TOKENS tokens of the file before the lemma, the statement and "Proof."."""
    if library is not None:
        return retrieval.build(tokenizer, context, problem.statement, problem.file, "test", library).text
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"][-CONTEXT_TOKENS:]
    return tokenizer.decode(ctx) + f"\n\n{problem.statement}\nProof.\n"


def complete(model, tokenizer, prompt: str, max_new_tokens: int, samples: int = 0,
             temperature: float = TEMPERATURE, seed: int = 0) -> list[str]:
    """The greedy continuation (samples=0), or `samples` sampled ones (seeded), each cut after Qed./Defined."""
    import torch

    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    options = dict(do_sample=False)
    if samples:
        torch.manual_seed(seed)
        options = dict(do_sample=True, temperature=temperature, top_p=TOP_P, num_return_sequences=samples)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             stop_strings=["Qed.", "Defined."], tokenizer=tokenizer,
                             pad_token_id=tokenizer.eos_token_id, **options)
    return [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in out]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c passed (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def prove(model, tokenizer, problems: list[proofs.Problem], data_dir: Path, max_new_tokens: int, timeout: float,
          library=None, samples: int = 0, temperature: float = TEMPERATURE) -> dict[str, Any]:
    """pass@1 (greedy) and, with `samples`, pass@k for k in KS up to `samples`; coqc judges every attempt."""
    attempts = []  # (problem, context, kind, proof, generated)
    for index, problem in enumerate(problems):
        context = problem.context(data_dir)
        prompt = prompt_for(tokenizer, problem, context, library)
        for generated in complete(model, tokenizer, prompt, max_new_tokens):
            attempts.append((problem, context, "greedy", coq.proof_of(generated)))
        if samples:
            for generated in complete(model, tokenizer, prompt, max_new_tokens, samples, temperature, seed=index):
                attempts.append((problem, context, "sample", coq.proof_of(generated)))

    verdicts: dict[tuple[str, str | None], coq.CheckResult] = {}

    def check(key):
        problem, proof = key
        if proof is None:
            return coq.CheckResult(False, "no Qed within max_new_tokens")
        return coq.check(contexts[problem.id], problem.statement, proof, timeout)

    contexts = {a[0].id: a[1] for a in attempts}
    keys = list(dict.fromkeys((a[0], a[3]) for a in attempts))  # a proof found twice is checked once
    with ThreadPoolExecutor(2) as pool:  # coqc processes: threads suffice
        verdicts = dict(zip(keys, pool.map(check, keys)))
    judged = [{"id": a[0].id, "kind": a[2], "proof": a[3], "ok": verdicts[(a[0], a[3])].ok,
               "reason": verdicts[(a[0], a[3])].reason[-200:]} for a in attempts]
    result: dict[str, Any] = {"prompt": "retrieval" if library is not None else "tail"}
    if samples:
        result["samples"] = {"n": samples, "temperature": temperature, "top_p": TOP_P}
    result.update(rates([p.id for p in problems], judged, samples))
    result["attempts"] = judged
    return result


def rates(ids: list[str], attempts: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """pass@1 from the greedy attempts; pass@k (k > 1 in KS, up to `samples`) from the sampled ones by the
    unbiased estimator, and the sampled attempts' own pass@1 apart, so it never stands in for the greedy one."""
    solved = [a["id"] for a in attempts if a["kind"] == "greedy" and a["ok"]]
    out: dict[str, Any] = {"pass@1": len(solved) / len(ids) if ids else 0.0, "solved": solved}
    if samples:
        passed = Counter(a["id"] for a in attempts if a["kind"] == "sample" and a["ok"])
        out["sampled_pass@1"] = sum(passed[i] / samples for i in ids) / len(ids)
        for k in (k for k in KS if 1 < k <= samples):
            out[f"pass@{k}"] = sum(pass_at_k(samples, passed[i], k) for i in ids) / len(ids)
        out["solved_by_sampling"] = sorted(i for i in ids if passed[i])
    return out


# The model-free baseline: what Coq's own automation closes with no model at all. A solved problem that one
# of these closes says little about the model; a table without this line flatters every model in it.
TACTICS = ("trivial", "reflexivity", "auto", "intros; auto", "intros; simpl; auto", "intros; subst; auto",
           "eauto", "tauto", "intuition", "firstorder", "congruence", "intros; discriminate", "easy")


def tactics_baseline(problems: list[proofs.Problem], data_dir: Path, timeout: float) -> dict[str, Any]:
    """Problems closed by `solve [ t1 | t2 | … ]` over TACTICS (the first that closes the goal wins), one coqc
    run per problem, judged like any model's proof."""
    proof = "solve [ " + " | ".join(f"({t})" for t in TACTICS) + " ]."

    def check(problem):
        return coq.check(problem.context(data_dir), problem.statement, proof, timeout)

    with ThreadPoolExecutor(2) as pool:
        verdicts = list(pool.map(check, problems))
    judged = [{"id": p.id, "kind": "greedy", "ok": v.ok, "reason": v.reason[-200:]}
              for p, v in zip(problems, verdicts)]  # one attempt per problem, scored as a greedy one
    return {"method": "fixed tactics", "proof": proof, "problems": len(problems),
            **rates([p.id for p in problems], judged, 0), "attempts": judged}


def load_run(run_dir: Path, base_model):
    """A run's trained model: the base with its adapter, or its fully fine-tuned weights."""
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    if cfg.method == "full":
        import torch
        from transformers import AutoModelForCausalLM
        if not (run_dir / "model").is_dir():
            raise ConfigError(f"run {run_dir.name!r} has no model/ yet")
        return cfg, AutoModelForCausalLM.from_pretrained(str(run_dir / "model"), dtype=torch.float32)
    if not (run_dir / "adapter" / "adapter_config.json").is_file():
        raise ConfigError(f"run {run_dir.name!r} has no adapter/ yet")
    from peft import PeftModel
    return cfg, PeftModel.from_pretrained(base_model, str(run_dir / "adapter"))


def evaluate(base: str, runs: list[str], jobs_dir: Path, data_dir: Path, blocks: int = 64, seq_len: int = 512,
             proofs_limit: int = 0, max_new_tokens: int = 96, timeout: float = 30.0,
             store_root: Path | None = None, prompt: str = "tail", samples: int = 0,
             temperature: float = TEMPERATURE, with_base: bool = True) -> dict[str, Any]:
    from . import data

    test_files = data.split_paths(data_dir, "test")
    problems = proofs.load(data_dir)
    if proofs_limit:
        problems = problems[:proofs_limit]
    for run in runs:
        if not (Path(jobs_dir) / run / "config.json").is_file():
            raise ConfigError(f"no run {run!r} in {jobs_dir}")
    if prompt not in PROMPTS:
        raise ConfigError(f"prompt {prompt!r} is unknown; use one of {', '.join(PROMPTS)}")
    if samples < 0 or samples > 64:
        raise ConfigError(f"samples must be 0 to 64, got {samples}")
    if samples and not 0 < temperature <= 2:
        raise ConfigError(f"temperature must be in (0, 2], got {temperature}")
    library = retrieval.Library.training(data_dir, proofs.PACKAGES) if prompt == "retrieval" else None
    results: dict[str, Any] = {"base": base, "test_blocks": blocks, "seq_len": seq_len,
                               "problems": len(problems), "models": {}}
    if not with_base and not runs:
        raise ConfigError("nothing to evaluate: name a run, or keep the base")
    for name in [None, *runs] if with_base else runs:
        began = time.perf_counter()
        model, tokenizer, _ = load_base(base, store_root)
        entry: dict[str, Any] = {}
        if name is not None:
            cfg, model = load_run(Path(jobs_dir) / name, model)
            metrics_file = Path(jobs_dir) / name / "metrics.json"
            if metrics_file.is_file():
                entry["training"] = json.loads(metrics_file.read_text())
            entry["method"] = cfg.method
        else:
            entry["method"] = "base"
            entry["parameters"] = parameter_counts(model, RunConfig(run_id="base", method="full"))[1]
        if blocks:
            entry["perplexity"] = perplexity(model, tokenizer, test_files, blocks, seq_len)
        entry.update(prove(model, tokenizer, problems, data_dir, max_new_tokens, timeout, library, samples,
                           temperature))
        entry["eval_seconds"] = round(time.perf_counter() - began, 1)
        results["models"][name or base] = entry
    if blocks and with_base:
        base_ppl = results["models"][base]["perplexity"]
        for entry in results["models"].values():
            entry["perplexity_change"] = entry["perplexity"] / base_ppl - 1
    return results


def table(results: dict[str, Any]) -> str:
    ks = [k for k in KS if k > 1 and any(f"pass@{k}" in e for e in results["models"].values())]
    rows = ["| model | method | trainable params | % of base | train time (s) | peak RSS (MB) | perplexity | "
            "vs base | pass@1 |" + "".join(f" pass@{k} |" for k in ks),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(ks)]
    n = results["problems"]
    for name, e in results["models"].items():
        t = e.get("training", {})
        ppl = (f"{e['perplexity']:.2f} | " if "perplexity" in e else "- | ") + (
            f"{100 * e['perplexity_change']:+.1f}%" if "perplexity_change" in e else "-")
        rows.append(f"| {name} | {e['method']} | {t.get('trainable_parameters', 0):,} | "
                    f"{t.get('trainable_percent', 0):.2f} | {t.get('train_seconds', '-')} | "
                    f"{t.get('peak_rss_mb', '-')} | {ppl} | {len(e['solved'])}/{n} ({100 * e['pass@1']:.1f}%) |"
                    + "".join(f" {n * e[f'pass@{k}']:.1f}/{n} |" for k in ks))
    return "\n".join(rows)
