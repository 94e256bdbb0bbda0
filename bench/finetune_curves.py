"""Two fine-tuning runs' loss curves side by side, from their metrics.jsonl.

    python bench/finetune_curves.py finetune/results/smollm2-coq-lora finetune/results/smollm2-coq-lora-efficient

Prints, at every step both runs logged, the training loss (mean over `log_every` steps) and the validation
loss of each, and the largest and mean differences. It answers "did a lever change what was learned" for a
whole run, where the levers test (tests/test_finetune.py) checks 5 steps of a tiny model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from finetune.jobs import RunDir


def curve(run: Path) -> dict[int, dict]:
    """Step -> what was logged at it (a step's training and validation lines merged)."""
    if not (run / "metrics.jsonl").is_file():
        raise SystemExit(f"{run}: no metrics.jsonl (give a run folder)")
    rows: dict[int, dict] = {}
    for row in RunDir(run).metrics():  # the jobs module's reader: it skips a half-written last line
        rows.setdefault(row["step"], {}).update(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path, help="a run folder (holds metrics.jsonl)")
    p.add_argument("second", type=Path)
    p.add_argument("--every", type=int, default=25, help="print every this many steps (differences use all)")
    args = p.parse_args(argv)
    a, b = curve(args.first), curve(args.second)
    print(f"| step | {args.first.name} loss | {args.second.name} loss | validation loss (first / second) |")
    print("|---:|---:|---:|---:|")
    diffs = {"loss": [], "eval_loss": []}
    for step in sorted(set(a) & set(b)):
        for key in diffs:
            if key in a[step] and key in b[step]:
                diffs[key].append(b[step][key] - a[step][key])
        if step % args.every == 0 or "eval_loss" in a[step]:
            cell = lambda row, key: f"{row[key]:.4f}" if key in row else ""  # noqa: E731
            val = f"{cell(a[step], 'eval_loss')} / {cell(b[step], 'eval_loss')}" if "eval_loss" in a[step] else ""
            print(f"| {step} | {cell(a[step], 'loss')} | {cell(b[step], 'loss')} | {val} |")
    for key, values in diffs.items():
        if values:
            print(f"{key}: {len(values)} steps, second − first: mean {statistics.fmean(values):+.4f}, "
                  f"largest {max(values, key=abs):+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
