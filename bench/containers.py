"""Container cold start: `podman run` -> first successful inference, beside the same function as a process.

Each function's image is built as `faas-cli build` does (aigc.container.build,
models baked; cached layers make a rebuild quick). Then, interleaved in one
run, each case starts from nothing and polls a real request every 5 ms until
it answers 200:
- container: `podman run -d` of the image (host network, read-only root, a
  non-root uid, as tests/test_images.py runs it), then the request;
- process: the template's entrypoint in the function's assembled build context
  (what `aigc up` starts), with the same model from the local store.
Both start with an empty ONNX Runtime graph cache (a fresh container has one;
the process gets a new folder per run), so the difference is the container.
Run 0 warms the page cache and is dropped; medians of --runs. Image sizes are
podman's.

    .venv/bin/python bench/containers.py [--runs 5] [--functions image-classify embed ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aigc import buildctx, models, runner, stack  # noqa: E402
from aigc.container import base, build  # noqa: E402
from aigc.container.podman import Podman  # noqa: E402
from aigc.models import stage  # noqa: E402

DATA = REPO / "functions"
REQUESTS = {  # function -> (path, body): one real inference each
    "image-classify": ("/", (DATA / "image-classify/testdata/coffee.jpg").read_bytes()),
    "image-classify-torch": ("/", (DATA / "image-classify/testdata/coffee.jpg").read_bytes()),
    "embed": ("/v1/embeddings", json.dumps({"model": "minilm-l6-int8", "input": ["A cat sits on the mat."]})),
    "face-emotion": ("/", (DATA / "face-emotion/testdata/astronaut-face.jpg").read_bytes()),
    "text-generate": ("/v1/completions", json.dumps({"model": "smollm2-135m", "prompt": "Paris is", "max_tokens": 1})),
}


def first_answer(url: str, path: str, body, alive, started: float, timeout: float = 300) -> float:
    last = "no answer"
    while time.perf_counter() - started < timeout:
        try:
            resp = requests.post(url + path, data=body, timeout=120)
            if resp.status_code == 200:
                return time.perf_counter() - started
            last = f"{resp.status_code} {resp.text[:200]}"
        except requests.ConnectionError:
            if not alive():
                raise RuntimeError(f"{url} died before answering")
        time.sleep(0.005)
    raise RuntimeError(f"{url}{path}: no 200 within {timeout:.0f} s; last answer: {last}")


def time_container(podman: Podman, image: str, fn: stack.StackFunction, port: int) -> float:
    path, body = REQUESTS[fn.name]
    started = time.perf_counter()
    container = podman.run(image, f"bench-{fn.name}-{uuid.uuid4().hex[:6]}", port, env=fn.env(), user="12345:0",
                           read_only=True)
    try:
        return first_answer(container.url, path, body, container.running, started)
    finally:
        container.remove()


def time_process(fn: stack.StackFunction, context: Path, port: int) -> float:
    path, body = REQUESTS[fn.name]
    with tempfile.TemporaryDirectory() as ort_cache:
        started = time.perf_counter()
        inst = runner.launch(context, fn, port, extra_env={"AIGC_ORT_CACHE": ort_cache},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return first_answer(inst.url, path, body, lambda: inst.process.poll() is None, started)
        finally:
            inst.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=18950)
    parser.add_argument("--functions", nargs="+", default=["image-classify", "embed"], choices=sorted(REQUESTS))
    args = parser.parse_args()
    st = stack.load(REPO / "stack.yml")
    fns = [st.functions[n] for n in args.functions]
    for name in {m for fn in fns for m in fn.build_args.get("AIGC_MODELS", "").split()}:
        models.build(name)
    stage.stage(st)
    podman = Podman()
    base.ensure(podman)
    built, contexts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for fn in fns:  # the builds: once, not part of a start
            built[fn.name] = build.build(fn, REPO, podman, Path(tmp) / "image", Path(tmp) / "logs")
            contexts[fn.name] = buildctx.assemble(fn, REPO, Path(tmp) / "local")
        results = {(fn.name, kind): [] for fn in fns for kind in ("container", "process")}
        for run in range(args.runs + 1):  # run 0 warms the page cache and is dropped
            for i, fn in enumerate(fns):  # interleaved, so drift hits every case alike
                container = time_container(podman, built[fn.name].image, fn, args.port + 2 * i)
                process = time_process(fn, contexts[fn.name], args.port + 2 * i + 1)
                if run:
                    results[(fn.name, "container")].append(container)
                    results[(fn.name, "process")].append(process)
    print(f"cold start -> first successful inference, median of {args.runs} runs (min-max), seconds")
    print("| function | image MB | container: podman run | process: entrypoint | container - process |")
    print("|---|---:|---:|---:|---:|")
    for fn in fns:
        c, p = results[(fn.name, "container")], results[(fn.name, "process")]
        print(f"| {fn.name} | {built[fn.name].size / 1e6:.0f} | {statistics.median(c):.3f} ({min(c):.3f}-{max(c):.3f}) "
              f"| {statistics.median(p):.3f} ({min(p):.3f}-{max(p):.3f}) "
              f"| {statistics.median(c) - statistics.median(p):+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
