"""Where image-classify's cold start goes: server up, model ready, first answer.

Starts the real entrypoint and records, from process start, the first 200 of
`/_/health` (gunicorn and the app are serving), of `/_/ready` (the model is
loaded) and of an inference, for AIGC_FAST_PATH=native and wasm, interleaved.
Polling adds requests the worker must answer while it loads, so the totals run
a little above bench/coldstart.py's.

    .venv/bin/python bench/coldstart_phases.py [--runs 6]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coldstart import REPO, coffee_png  # noqa: E402

from aigc import buildctx, runner, stack  # noqa: E402

PHASES = ("health", "ready", "infer")


def one_start(fn, context: Path, port: int, body: bytes) -> dict[str, float]:
    started = time.perf_counter()
    inst = runner.launch(context, fn, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marks: dict[str, float] = {}
    try:
        while "infer" not in marks:
            assert time.perf_counter() - started < 120, f"no inference after 120 s: {marks}"
            phase = next(p for p in PHASES if p not in marks)
            try:
                if phase == "infer":
                    ok = requests.post(inst.url + "/", data=body, timeout=60).status_code == 200
                else:
                    ok = requests.get(f"{inst.url}/_/{phase}", timeout=60).status_code == 200
                if ok:
                    marks[phase] = time.perf_counter() - started
                    continue
            except requests.ConnectionError:
                pass
            time.sleep(0.005)
    finally:
        inst.stop()
    return marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    fn = stack.load(REPO / "stack.yml").functions["image-classify"]
    body = coffee_png()
    rows: dict[str, list[dict[str, float]]] = {"native": [], "wasm": []}
    with tempfile.TemporaryDirectory() as tmp:
        context = buildctx.assemble(fn, REPO, Path(tmp))  # once, as a deploy does; the runs are starts
        for run in range(args.runs + 1):  # run 0 warms the page cache and is dropped
            for mode in rows:
                fn.environment["AIGC_FAST_PATH"] = mode
                marks = one_start(fn, context, 18960, body)
                if run:
                    rows[mode].append(marks)
    print(f"image-classify cold start phases, seconds from process start, median of {args.runs}")
    print(f"{'fast path':10} {'health':>8} {'ready':>8} {'infer':>8}")
    for mode, marks in rows.items():
        print(f"{mode:10} " + " ".join(f"{statistics.median(m[p] for m in marks):8.3f}" for p in PHASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
