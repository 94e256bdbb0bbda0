"""text-generate (SmolLM2-135M): cold start to first token, then warm time to first token and decode speed.

Cold start: Popen of the template's real entrypoint (gunicorn, assembled build
context, stack.yml's environment) -> first streamed token of a real request,
polled every 5 ms; next to `python -c "import onnxruntime"`, interleaved.
text-generate serves the ONNX Runtime GenAI build (`smollm2-135m-onnx`).
Warm: one instance; base model and a LoRA adapter (r=8 on q_proj/v_proj)
alternate, each request streaming 64 greedy tokens: time to first token (TTFT)
and decode tokens/s after the first token, from the SSE chunks and `usage`.

The adapter has random (not zero) LoRA weights, so it costs exactly what a
trained one does; it lives in a temporary store beside a link to the base model,
so the real store is untouched.

    .venv/bin/python bench/textgen.py [--runs 5] [--tokens 64]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aigc import models, runner, stack  # noqa: E402
from aigc.bench.peers import cpu_name  # noqa: E402
from aigc.runtime import adapters, store  # noqa: E402

BASE = "smollm2-135m"
ADAPTER = "bench"
QUESTION = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]
BASELINE = 'python -c "import onnxruntime"'


def make_store(tmp: Path) -> Path:
    """A store holding a link to the real base model and a random LoRA adapter for it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    real = store.open_model(BASE)
    root = tmp / "store"
    root.mkdir()
    for entry in (BASE, f"{BASE}-onnx"):  # the checkpoint (for peft here) and what text-generate serves
        (root / entry).symlink_to(store.open_model(entry).path, target_is_directory=True)
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_pretrained(str(real.path), dtype="auto")
    lora = get_peft_model(net, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights=False, task_type="CAUSAL_LM"))
    lora.save_pretrained(tmp / "adapter")
    adapters.write_adapter(tmp / "adapter", BASE, ADAPTER, root, extra={"note": "random LoRA weights, benchmark"})
    return root


def stream(url: str, model: str, max_tokens: int, timeout: float = 120) -> tuple[float, float, int]:
    """(seconds to the first token, seconds from the first token to the end, completion tokens)."""
    body = {"model": model, "messages": QUESTION, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = None
    tokens = 0
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=timeout) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.status_code} {resp.text[:200]}")
        for line in resp.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    if first is None:
        raise RuntimeError("no token came back")
    return first - started, time.perf_counter() - first, tokens


def cold_start(fn: stack.StackFunction, env: dict[str, str], build_dir: Path, port: int) -> float:
    started = time.perf_counter()
    inst = runner.start(fn, REPO, port, extra_env=env, build_dir=build_dir, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 180:
            if inst.process.poll() is not None:
                raise RuntimeError(f"{fn.name} exited with {inst.process.returncode}")
            try:
                stream(inst.url, BASE, 1)
                return time.perf_counter() - started
            except (requests.ConnectionError, RuntimeError):
                time.sleep(0.005)
        raise RuntimeError("no first token within 180 s")
    finally:
        inst.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=18950)
    args = parser.parse_args()
    models.build(BASE), models.build(f"{BASE}-onnx")
    fn = stack.load(REPO / "stack.yml").functions["text-generate"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {"AIGC_MODEL_STORE": str(make_store(tmp))}
        cold: dict[str, list[float]] = {"text-generate cold start -> first token": [],
                                        BASELINE: []}
        for run in range(args.runs + 1):  # run 0 warms the page cache and is dropped
            seconds = cold_start(fn, env, tmp / "build", args.port)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import onnxruntime"], check=True)
            baseline = time.perf_counter() - started
            if run:
                cold["text-generate cold start -> first token"].append(seconds)
                cold[BASELINE].append(baseline)

        inst = runner.start(fn, REPO, args.port + 1, extra_env=env, build_dir=tmp / "build",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            inst.wait_ready(180)
            warm = {BASE: {"ttft": [], "tps": []}, f"{BASE}:{ADAPTER}": {"ttft": [], "tps": []}}
            for run in range(args.runs + 1):  # run 0 loads the adapter and warms both paths; dropped
                for model in warm:  # alternated, so drift hits both alike
                    ttft, decode, tokens = stream(inst.url, model, args.tokens)
                    if tokens != args.tokens:
                        raise RuntimeError(f"{model} stopped after {tokens} tokens; the rate needs {args.tokens}")
                    if run:
                        warm[model]["ttft"].append(ttft)
                        warm[model]["tps"].append((tokens - 1) / decode)
        finally:
            inst.stop()

    base_import = statistics.median(cold[BASELINE])
    print(f"text-generate ({BASE}, {os.cpu_count()} CPUs, {cpu_name()}): medians of {args.runs} runs, "
          "measured side by side")
    print(f"\n{'cold start':42} {'median s':>9} {'min s':>7} {'max s':>7} {'x import onnxruntime':>21}")
    for label, values in cold.items():
        med = statistics.median(values)
        print(f"{label:42} {med:9.3f} {min(values):7.3f} {max(values):7.3f} {med / base_import:21.2f}")
    print(f"\n{'warm, ' + str(args.tokens) + ' tokens streamed':42} {'TTFT ms':>9} {'decode tok/s':>13}"
          f" {'min-max tok/s':>14}")
    for model, m in warm.items():
        tps = m["tps"]
        print(f"{model:42} {statistics.median(m['ttft']) * 1000:9.1f} {statistics.median(tps):13.1f}"
              f" {min(tps):6.1f}-{max(tps):<7.1f}")
    b, a = warm[BASE], warm[f"{BASE}:{ADAPTER}"]
    print(f"\nadapter / base: TTFT x{statistics.median(a['ttft']) / statistics.median(b['ttft']):.2f}, "
          f"decode tok/s x{statistics.median(a['tps']) / statistics.median(b['tps']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
