"""`python bench/finetune_levers.py [--runs 5] [--steps 6] [--levers NAME,…]`: each memory and speed lever of
finetune/levers.py alone (and the combinations worth keeping), on the published LoRA configuration.

Every run is a fresh `python -m finetune train` process on finetune/configs/smollm2-lora.yaml (SmolLM2-135M,
LoRA rank 4 on every linear layer, batch 4 × 512 tokens, the Debian Coq corpus) shortened to `--steps`
steps with one small validation at the end, so its peak RSS (ru_maxrss, the model load included) is that
configuration's, and its training tokens/s counts only the optimiser steps. Rounds visit every
configuration in an order that alternates round by round; the table gives medians over rounds, the ratio
to the baseline, and the final training loss (the same for every lever but bf16: same seed, same batches).

Writes artifacts/bench/finetune-levers/summary.md (and summary.json) and prints the table. Nothing else may
run on the machine meanwhile: tokens/s is a CPU figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "finetune" / "configs" / "smollm2-lora.yaml"
OUT = REPO / "artifacts" / "bench" / "finetune-levers"
KEPT = {"gradient_checkpointing": True, "loss_chunk": 256, "malloc_mmap_threshold": 1 << 20}
LEVERS = {
    "baseline (sdpa)": {},
    "eager attention": {"attention": "eager"},
    "checkpointing": {"gradient_checkpointing": True},
    "chunked loss (256)": {"loss_chunk": 256},
    "mmap threshold (1 MiB)": {"malloc_mmap_threshold": 1 << 20},
    "bf16 autocast": {"bf16": True},
    "kept: checkpointing + chunked loss + mmap threshold": KEPT,
    "kept + bf16": dict(KEPT, bf16=True),
    # candidates for both goals at once (<= 3 GB, >= 1.5x tokens/s): the speed lever, the logits never whole,
    # LoRA without dropout (no dropped copy of every adapted layer's input kept for backward: a run setting,
    # not a lever, so the methodology sweep checks its loss), and only the largest blocks mmap'd
    "bf16 + chunked loss": {"bf16": True, "loss_chunk": 256},
    "bf16 + chunked loss + no LoRA dropout": {"bf16": True, "loss_chunk": 256, "lora_dropout": 0.0},
    "bf16 + chunked loss + mmap threshold (8 MiB)": {"bf16": True, "loss_chunk": 256,
                                                     "malloc_mmap_threshold": 8 << 20},
    "bf16 + chunked loss + no LoRA dropout + mmap threshold (8 MiB)": {
        "bf16": True, "loss_chunk": 256, "lora_dropout": 0.0, "malloc_mmap_threshold": 8 << 20},
    # the same through micro-batches: activations kept for 2 (or 1) of the batch's 4 rows at a time
    "bf16 + chunked loss + no LoRA dropout + micro-batch 2": {
        "bf16": True, "loss_chunk": 256, "lora_dropout": 0.0, "micro_batch": 2},
    "bf16 + chunked loss + no LoRA dropout + micro-batch 1": {
        "bf16": True, "loss_chunk": 256, "lora_dropout": 0.0, "micro_batch": 1},
}


def one_run(name: str, changes: dict, steps: int, work: Path) -> dict:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.update(changes, run_id="levers", adapter=None, steps=steps, warmup_steps=1, eval_every=0, eval_blocks=4,
               save_every=0, log_every=1)
    jobs = Path(tempfile.mkdtemp(prefix="levers-", dir=work))
    path = jobs / "config.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ, AIGC_JOBS_DIR=str(jobs / "jobs"), TQDM_DISABLE="1")
    done = subprocess.run([sys.executable, "-m", "finetune", "train", str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: training failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    metrics = json.loads((jobs / "jobs" / "levers" / "metrics.json").read_text())
    return {k: metrics[k] for k in ("peak_rss_mb", "train_tokens_per_second", "final_train_loss")}


def summarize(results: dict[str, list[dict]], args) -> str:
    """Medians per lever (of the rounds done) into <out>/summary.md and summary.json; returns the table."""
    median = {n: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for n, rows in results.items() if rows}
    base = median.get("baseline (sdpa)")
    lines = [f"`python bench/finetune_levers.py --runs {args.runs} --steps {args.steps} --levers '{args.levers}'` "
             "(medians of the runs "
             f"column; batch 4 × 512 tokens, SmolLM2-135M + LoRA r4 all-linear)", "",
             "| lever | runs | peak RSS MB | × baseline | train tokens/s | × baseline | final train loss |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in median.items():
        rss = f"{m['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else "—"
        tps = f"{m['train_tokens_per_second'] / base['train_tokens_per_second']:.2f}" if base else "—"
        lines.append(f"| {name} | {len(results[name])} | {m['peak_rss_mb']:.0f} | {rss} | "
                     f"{m['train_tokens_per_second']:.0f} | {tps} | {m['final_train_loss']:.4f} |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "summary.json").write_text(json.dumps({"runs": results, "median": median}, indent=1))
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="rounds (medians over them)")
    p.add_argument("--steps", type=int, default=6, help="optimiser steps per run")
    p.add_argument("--levers", default=",".join(LEVERS), help="comma-separated names from the table")
    p.add_argument("--out", type=Path, default=OUT, help=f"where the summary goes (default {OUT.relative_to(REPO)})")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.levers.split(",")]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        p.error(f"unknown lever(s) {unknown}; known: {list(LEVERS)}")
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="aigc-levers-") as tmp:
        for round_ in range(args.runs):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                results[name].append(one_run(name, LEVERS[name], args.steps, Path(tmp)))
                print(f"round {round_ + 1}/{args.runs} {name}: {results[name][-1]}", flush=True)
            table = summarize(results, args)  # after every round: a run cut short keeps its medians so far
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
