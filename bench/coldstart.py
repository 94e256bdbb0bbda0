"""Cold start of image-classify and embed: process start -> first successful inference.

Each function's build context is assembled once, as a deploy (or an image
build) does; each run then starts the template's real entrypoint in it
(gunicorn) and polls the function with a real request every 5 ms until it
answers 200 -- what a scale from zero costs. Printed next to
`python -c "import transformers"` and the same models served through torch,
as medians of N runs measured in this one run.

    .venv/bin/python bench/coldstart.py [--runs 7]
"""

from __future__ import annotations

import argparse
import io
import json
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

SENTENCES = {"model": "minilm-l6-int8", "input": ["A cat sits on the mat."]}


def coffee_png() -> bytes:
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buf, format="PNG")
    return buf.getvalue()


def time_instance(fn: stack.StackFunction, path: str, body: bytes, build_dir: Path, port: int) -> float:
    """Seconds from Popen to the first 200 for `body` at `path`, in fn's assembled build context."""
    context = build_dir / fn.name
    if not context.is_dir():  # the build, once per function: not part of a start
        buildctx.assemble(fn, REPO, build_dir)
    started = time.perf_counter()
    inst = runner.launch(context, fn, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = "no answer"
    try:
        while time.perf_counter() - started < 120:
            if inst.process.poll() is not None:
                raise RuntimeError(f"{fn.name} exited with {inst.process.returncode}")
            try:
                resp = requests.post(f"{inst.url}{path}", data=body, timeout=60)
                if resp.status_code == 200:
                    return time.perf_counter() - started
                last = f"{resp.status_code} {resp.text[:200]}"
            except requests.ConnectionError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"{fn.name} gave no 200 within 120 s; last answer: {last}")
    finally:
        inst.stop()


def time_command(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--port", type=int, default=18900)
    args = parser.parse_args()
    for name in models.BUILDERS:
        models.build(name)
    st = stack.load(REPO / "stack.yml")
    image, text = coffee_png(), json.dumps(SENTENCES).encode()
    # image-classify's own torch engine (AIGC_ENGINE=torch); embed has none, so a bench-only handler
    torch_fn = {"image-classify": st.functions["image-classify-torch"],
                "embed": stack.StackFunction(name="embed-torch", lang="aigc-torch", image="bench",
                                             handler=REPO / "bench" / "torch_handlers" / "embed")}
    cases = [
        ("image-classify (ONNX Runtime)", lambda b, p: time_instance(st.functions["image-classify"], "/", image, b, p)),
        ("image-classify via torch", lambda b, p: time_instance(torch_fn["image-classify"], "/", image, b, p)),
        ("embed (ONNX Runtime, int8)", lambda b, p: time_instance(st.functions["embed"], "/v1/embeddings", text, b, p)),
        ("embed via transformers+torch", lambda b, p: time_instance(torch_fn["embed"], "/", text, b, p)),
        ('python -c "import transformers"', lambda b, p: time_command([sys.executable, "-c", "import transformers"])),
    ]
    results: dict[str, list[float]] = {label: [] for label, _ in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs + 1):  # run 0 warms the page cache and is dropped
            for i, (label, measure) in enumerate(cases):  # interleaved, so drift hits every case alike
                seconds = measure(Path(tmp), args.port + i)
                if run:
                    results[label].append(seconds)
    baseline = statistics.median(results['python -c "import transformers"'])
    print(f"cold start: process start -> first successful inference, median of {args.runs} runs")
    print(f"{'case':34} {'median s':>9} {'min s':>7} {'max s':>7} {'x import transformers':>21}")
    for label, values in results.items():
        med = statistics.median(values)
        print(f"{label:34} {med:9.3f} {min(values):7.3f} {max(values):7.3f} {med / baseline:21.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
