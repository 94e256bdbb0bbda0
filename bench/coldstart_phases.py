"""Where image-classify's cold start goes: server up, model ready, first answer.

Starts the real entrypoint and records, from process start, the first 200 of
`/_/health` (gunicorn and the app are serving), of `/_/ready` (the model is
loaded) and of an inference, for AIGC_FAST_PATH=native and wasm, interleaved.
Polling adds requests the worker must answer while it loads, so the totals run
a little above bench/coldstart.py's.

Then the model's load, step by step, each run in a new process in the same
context (what a worker does after fork), with ONNX Runtime's optimized-graph
cache on (filled by run 0) and off, side by side.

    .venv/bin/python bench/coldstart_phases.py [--runs 6]
"""

from __future__ import annotations

import argparse
import json
import os
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
LOAD_STEPS = ("import onnxruntime", "preprocessor", "session", "first inference")
# ImageClassifier.load() and handle(), step by step; numpy and PIL come first, as the master imports them
LOAD_SCRIPT = """
import json, sys, time
import numpy as np
from aigc.runtime import fastpath, images, ort, store
marks, t = {}, time.perf_counter()
def mark(step):
    global t
    now = time.perf_counter(); marks[step] = now - t; t = now
import onnxruntime
mark("import onnxruntime")
stored = store.open_model("efficientnet-lite0")
pre = fastpath.ClassifierPreprocessor(json.loads(stored.file("preprocess.json").read_text()))
mark("preprocessor")
sess = ort.session(stored.file("model.onnx"))
mark("session")
body = open(sys.argv[1], "rb").read()
sess.run(None, {"input": pre(images.decode(body))[None]})
mark("first inference")
print(json.dumps(marks))
"""


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
        steps = load_steps(context, Path(tmp), body, args.runs)
    print(f"image-classify cold start phases, seconds from process start, median of {args.runs}")
    print(f"{'fast path':10} {'health':>8} {'ready':>8} {'infer':>8}")
    for mode, marks in rows.items():
        print(f"{mode:10} " + " ".join(f"{statistics.median(m[p] for m in marks):8.3f}" for p in PHASES))
    print(f"\nmodel load in a new process (wasm preprocessing), milliseconds, median of {args.runs}")
    print(f"{'optimized-graph cache':22} " + " ".join(f"{s:>17}" for s in LOAD_STEPS))
    for label, runs in steps.items():
        print(f"{label:22} " + " ".join(f"{statistics.median(r[s] for r in runs) * 1000:17.1f}" for s in LOAD_STEPS))
    return 0


def load_steps(context: Path, tmp: Path, body: bytes, runs: int) -> dict[str, list[dict[str, float]]]:
    image = tmp / "coffee.png"
    image.write_bytes(body)
    caches = {"on (filled by run 0)": str(tmp / "ort-cache"), "off": "off"}
    out: dict[str, list[dict[str, float]]] = {label: [] for label in caches}
    for run in range(runs + 1):
        for label, cache in caches.items():
            env = {**os.environ, "AIGC_ORT_CACHE": cache, "AIGC_FAST_PATH": "wasm"}
            done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(image)], cwd=context, env=env,
                                  check=True, capture_output=True, text=True)
            if run:
                out[label].append(json.loads(done.stdout))
    return out


if __name__ == "__main__":
    sys.exit(main())
