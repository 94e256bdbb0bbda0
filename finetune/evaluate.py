"""Evaluation: held-out perplexity and proof-completion pass@1, for the base model and for trained runs.

    python -m finetune evaluate smollm2-coq-lora --out finetune/results/eval.json

Perplexity is exp(mean next-token cross-entropy) over `blocks` blocks of
`seq_len` tokens from the test split (files in a fixed order, seed 0), the
same tokens for every model. pass@1: for each problem the model sees the end
of the file before the lemma (CONTEXT_TOKENS), the statement and "Proof.",
and continues greedily until "Qed."/"Defined." or `max_new_tokens`; the
proof is then compiled by `coqc` in the full file context, with a time limit.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import blocks, coq, proofs
from .config import ConfigError, RunConfig
from .train import EVAL_SEED, load_base, parameter_counts

CONTEXT_TOKENS = 384


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


def complete(model, tokenizer, context: str, statement: str, max_new_tokens: int) -> str:
    import torch

    head = tokenizer(f"\n\n{statement}\nProof.\n", add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"][-CONTEXT_TOKENS:]
    ids = torch.tensor([ctx + head])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, stop_strings=["Qed.", "Defined."], tokenizer=tokenizer,
                             pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def pass_at_1(model, tokenizer, problems: list[proofs.Problem], data_dir: Path, max_new_tokens: int,
              timeout: float) -> dict[str, Any]:
    attempts = []
    for problem in problems:
        context = problem.context(data_dir)
        generated = complete(model, tokenizer, context, problem.statement, max_new_tokens)
        attempts.append((problem, context, coq.proof_of(generated), generated))

    def check(attempt):
        problem, context, proof, _ = attempt
        if proof is None:
            return coq.CheckResult(False, "no Qed within max_new_tokens")
        return coq.check(context, problem.statement, proof, timeout)

    with ThreadPoolExecutor(2) as pool:  # coqc processes: threads suffice
        results = list(pool.map(check, attempts))
    solved = [a[0].id for a, r in zip(attempts, results) if r.ok]
    return {"pass@1": len(solved) / len(problems) if problems else 0.0, "solved": solved,
            "attempts": [{"id": a[0].id, "proof": a[2], "ok": r.ok, "reason": r.reason[-200:]}
                         for a, r in zip(attempts, results)]}


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
             store_root: Path | None = None) -> dict[str, Any]:
    from . import data

    test_files = data.split_paths(data_dir, "test")
    problems = proofs.load(data_dir)
    if proofs_limit:
        problems = problems[:proofs_limit]
    for run in runs:
        if not (Path(jobs_dir) / run / "config.json").is_file():
            raise ConfigError(f"no run {run!r} in {jobs_dir}")
    results: dict[str, Any] = {"base": base, "test_blocks": blocks, "seq_len": seq_len,
                               "problems": len(problems), "models": {}}
    for name in [None, *runs]:
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
        entry["perplexity"] = perplexity(model, tokenizer, test_files, blocks, seq_len)
        entry.update(pass_at_1(model, tokenizer, problems, data_dir, max_new_tokens, timeout))
        entry["eval_seconds"] = round(time.perf_counter() - began, 1)
        results["models"][name or base] = entry
    base_ppl = results["models"][base]["perplexity"]
    for entry in results["models"].values():
        entry["perplexity_change"] = entry["perplexity"] / base_ppl - 1
    return results


def table(results: dict[str, Any]) -> str:
    rows = ["| model | method | trainable params | % of base | train time (s) | peak RSS (MB) | perplexity | "
            "vs base | pass@1 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in results["models"].items():
        t = e.get("training", {})
        rows.append(f"| {name} | {e['method']} | {t.get('trainable_parameters', 0):,} | "
                    f"{t.get('trainable_percent', 0):.2f} | {t.get('train_seconds', '-')} | "
                    f"{t.get('peak_rss_mb', '-')} | {e['perplexity']:.2f} | {100 * e['perplexity_change']:+.1f}% | "
                    f"{len(e['solved'])}/{results['problems']} ({100 * e['pass@1']:.1f}%) |")
    return "\n".join(rows)
