"""`python bench/capacity.py [--runs 5] [--function image-classify]`: the committed step-load scaling run with
capacity-aware scaling on and off, interleaved, each step's figures the median over the runs.

Each run is `aigc bench scaling FUNCTION --target 2 --down-window 10s` (a local gateway of its own, a
closed-loop step load of 2, 4, 6, 8, 6, 4, 2 users), with AIGC_CPU_AWARE=on or off for the gateway. Reports
go to artifacts/bench/capacity/<mode>-<run>/; the table and the p95 ratio (off / on) are printed and written
to artifacts/bench/capacity/summary.md. Run it on a quiet machine: the load generator shares the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "artifacts" / "bench" / "capacity"


def run_once(function: str, mode: str, index: int, step_seconds: float) -> list[dict]:
    out = OUT / f"{mode}-{index}"
    cmd = [str(Path(sys.executable).parent / "aigc"), "bench", "scaling", function, "--target", "2",
           "--down-window", "10s", "--step-seconds", f"{step_seconds:g}", "--out", str(out)]
    env = dict(os.environ, AIGC_CPU_AWARE=mode)
    subprocess.run(cmd, env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())["phases"]


def median_phases(runs: list[list[dict]]) -> list[dict]:
    rows = []
    for step in zip(*runs):
        rows.append({"users": step[0]["users"],
                     **{k: statistics.median(p[k] for p in step) for k in ("rps", "p50", "p95", "replicas_max")},
                     "failures": sum(p["failures"] for p in step)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--function", default="image-classify")
    parser.add_argument("--step-seconds", type=float, default=15.0)
    args = parser.parse_args()
    results: dict[str, list[list[dict]]] = {"on": [], "off": []}
    for i in range(args.runs):
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            results[mode].append(run_once(args.function, mode, i, args.step_seconds))
            print(f"run {i + 1}/{args.runs} {mode}: done", flush=True)
    on, off = median_phases(results["on"]), median_phases(results["off"])
    lines = [f"{args.function}, step load 2-8-2 users, {args.step_seconds:g} s a step, median of {args.runs} "
             "interleaved runs each (AIGC_CPU_AWARE)", "",
             "| users | req/s off | req/s on | p50 ms off | p50 ms on | p95 ms off | p95 ms on | p95 off/on "
             "| replicas off | replicas on |", "|" + "---:|" * 10]
    for a, b in zip(off, on):
        lines.append(f"| {a['users']} | {a['rps']:.1f} | {b['rps']:.1f} | {a['p50']:.0f} | {b['p50']:.0f} "
                     f"| {a['p95']:.0f} | {b['p95']:.0f} | {a['p95'] / b['p95']:.2f} | {a['replicas_max']:g} "
                     f"| {b['replicas_max']:g} |")
    failures = sum(p["failures"] for p in on + off)
    lines += ["", f"failures: {failures}"]
    text = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text(text + "\n")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
