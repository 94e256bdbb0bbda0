"""The generative functions side by side: speech and image-generate (terrain, faces).

Each function runs as stack.yml runs it (gunicorn, its template's entrypoint in an assembled build
context; image-generate with both models). Per run, interleaved across the three:
- cold start: process start -> the first successful answer to a real request;
- warm latency: the same request, one at a time, `--warm` times (p50, p95);
- speech: a five-sentence text as 16-bit PCM, streamed: time to the first audio bytes, time to
  the last, their ratio, and seconds of audio per second of wall time (x real time);
- images: images/s asking for 1 and for 4 images per request.
Run 0 warms the page cache and ONNX Runtime's graph cache and is dropped; medians of the rest.

    .venv/bin/python bench/generative.py [--runs 5] [--warm 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aigc import buildctx, models, runner, stack  # noqa: E402
from aigc.bench.peers import cpu_name, wait_quiet  # noqa: E402

FIVE = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
        "It was a bright cold day in April, and the clocks were striking thirteen. Call me Ishmael. "
        "All happy families are alike; each unhappy family is unhappy in its own way.")
CASES = {  # name: (function, path, body)
    "speech (hibari-heart, one sentence, wav)": (
        "speech", "/v1/audio/speech", {"model": "hibari-heart", "voice": "heart", "response_format": "wav",
                                       "input": "The quick brown fox jumps over the lazy dog."}),
    "image-generate (terrain-diffusion, 1 image)": (
        "image-generate", "/v1/images/generations", {"model": "terrain-diffusion", "prompt": "difficulty 50", "n": 1}),
    "image-generate (dcgan-faces, 1 image)": (
        "image-generate", "/v1/images/generations", {"model": "dcgan-faces", "prompt": "", "n": 1}),
}


def start(fn: stack.StackFunction, build: Path, port: int) -> runner.Instance:
    context = build / fn.name
    if not context.is_dir():  # the build, once per function: not part of a start
        buildctx.assemble(fn, REPO, build)
    return runner.launch(context, fn, port, {"MODEL_NAMES": "terrain-diffusion,dcgan-faces"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_answer(inst: runner.Instance, path: str, body: dict, started: float) -> float:
    while time.perf_counter() - started < 120:
        if inst.process.poll() is not None:
            raise RuntimeError(f"{inst.fn.name} exited with {inst.process.returncode}")
        try:
            resp = requests.post(inst.url + path, json=body, timeout=60)
            if resp.status_code == 200:
                return time.perf_counter() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{inst.fn.name} gave no answer in 120 s")


def timed(url: str, body: dict) -> float:
    started = time.perf_counter()
    resp = requests.post(url, json=body, timeout=120)
    if resp.status_code != 200:
        raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:200]}")
    return time.perf_counter() - started


def stream_speech(url: str) -> tuple[float, float, float]:
    """(time to first audio, time to the end, seconds of audio) for FIVE as streamed PCM."""
    body = {"model": "hibari-heart", "voice": "heart", "response_format": "pcm", "input": FIVE}
    started = time.perf_counter()
    first, size = None, 0
    with requests.post(url + "/v1/audio/speech", json=body, stream=True, timeout=120) as resp:
        for chunk in resp.iter_content(chunk_size=None):
            if chunk and first is None:
                first = time.perf_counter() - started
            size += len(chunk)
    return first, time.perf_counter() - started, size / 2 / 24000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--quiet-load", type=float, default=0.5)
    args = parser.parse_args()
    for name in ("hibari-heart", "terrain-diffusion", "dcgan-faces"):
        models.build(name)
    st = stack.load(REPO / "stack.yml")
    wait_quiet(args.quiet_load, 600)
    cold: dict[str, list[float]] = {c: [] for c in CASES}
    warm: dict[str, list[float]] = {c: [] for c in CASES}
    speech: dict[str, list[float]] = {"first": [], "total": [], "ratio": [], "x real time": []}
    rates: dict[int, list[float]] = {1: [], 4: []}
    with tempfile.TemporaryDirectory(prefix="aigc-generative-") as tmp:
        for run in range(args.runs + 1):
            for case, (fn_name, path, body) in CASES.items():
                started = time.perf_counter()
                inst = start(st.functions[fn_name], Path(tmp), 19100 + run)
                try:
                    seconds = first_answer(inst, path, body, started)
                    if not run:
                        continue
                    cold[case].append(seconds)
                    warm[case] += [timed(inst.url + path, body) for _ in range(args.warm)]
                    if fn_name == "speech":
                        first, total, audio = stream_speech(inst.url)
                        speech["first"].append(first)
                        speech["total"].append(total)
                        speech["ratio"].append(first / total)
                        speech["x real time"].append(audio / total)
                    elif "terrain" in case:
                        for n in rates:
                            took = timed(inst.url + path, dict(body, n=n))
                            rates[n].append(n / took)
                finally:
                    inst.stop()
    med = statistics.median
    print(f"\n{cpu_name()}, {len(os.sched_getaffinity(0))} CPUs; medians of {args.runs} runs (min-max)\n")
    print("| function (model) | cold start s | warm p50 ms | warm p95 ms |\n|---|---:|---:|---:|")
    for case in CASES:
        print(f"| {case} | {med(cold[case]):.2f} ({min(cold[case]):.2f}-{max(cold[case]):.2f}) | "
              f"{pct(warm[case], 0.5) * 1000:.0f} | {pct(warm[case], 0.95) * 1000:.0f} |")
    print(f"\nspeech, five sentences streamed as PCM: first audio {med(speech['first']) * 1000:.0f} ms, "
          f"last {med(speech['total']) * 1000:.0f} ms, first/last {med(speech['ratio']):.2f} "
          f"({min(speech['ratio']):.2f}-{max(speech['ratio']):.2f}), "
          f"{med(speech['x real time']):.0f}x real time")
    print("terrain images/s: " + ", ".join(f"n={n}: {med(v):.2f}" for n, v in rates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
