"""`python bench/split.py [--runs 5] [--models efficientnet-lite0,minilm-l6-int8] [--stages 1,2,4]`: a model
served whole against the same model split into N chained stage functions (`aigc split --functions`,
docs/split.md), side by side on one local gateway.

N=1 is the unsplit function (image-classify, embed); N>1 is its pipeline `<function>-split-N` and the N stage
functions, written by `aigc split MODEL --stages N --functions` into a tmp store (links to the real entries)
and a tmp stack. One `aigc up` serves every configuration with exactly one replica per function (min = max =
1, no scale to zero: no cold start and no scale-up is measured) and AIGC_ZYGOTE=off, so each replica is a
process that loaded its own model in its own memory cgroup: its peak is what a pod of it would need.

Each round visits every configuration (in an order that alternates round by round) and measures:
- latency at concurrency 1 (`--requests` requests; p50 and p95 of the round),
- throughput at concurrency 8 (`--burst` requests; requests/s over the burst),
on the real input: the coffee photo for EfficientNet, 8 sentences to /v1/embeddings for MiniLM. The table
gives the median over rounds. After the rounds: each replica's peak memory (the cgroup's
memory.max_usage_in_bytes / memory.peak, page cache included, and the largest peak RSS, VmHWM, of the
replica's processes), and
the bytes the chain moves per request, computed by replaying the chain in this process: the stage entries run
with ONNX Runtime on the feeds the handler makes, every request and answer encoded as the chain encodes a
request (aigc.runtime.chain.encode_request: JSON header plus raw tensors; a stage's answer header differs by a
few bytes). The client shares the machine's cores with the gateway and replicas: figures are for this
machine, compared with each other, not absolute.

Writes artifacts/bench/split/summary.md (and summary.json) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from aigc.bench.gateway import LocalGateway, copy_functions, free_port  # noqa: E402
from aigc.gateway.cgroups import own_path  # noqa: E402
from aigc.runtime import chain, store  # noqa: E402

OUT = REPO / "artifacts" / "bench" / "split"
FUNCTIONS = {"efficientnet-lite0": "image-classify", "minilm-l6-int8": "embed"}
COFFEE = (REPO / "functions" / "image-classify" / "testdata" / "coffee.jpg").read_bytes()
SENTENCES = ["A cat sits on the mat.", "Espresso is coffee brewed by forcing hot water through fine grounds.",
             "Serverless functions scale to zero when nobody calls them.", "The lighthouse keeper watched the storm.",
             "Splitting a model lets each part fit under its own memory limit.", "Hello world",
             "Tides rise and fall twice a day along most coasts.",
             "A pipeline hands each stage's activations to the next one over HTTP."]  # of different lengths


def entry_names(model: str, n: int) -> list[str]:
    return [f"{model}--stage-{k}-of-{n}" for k in range(1, n + 1)]


class Config:
    """One model served one way: its entry point function and the functions behind it."""

    def __init__(self, model: str, n: int):
        self.model, self.n = model, n
        base = FUNCTIONS[model]
        self.function = base if n == 1 else f"{base}-split-{n}"
        self.stages = [] if n == 1 else entry_names(model, n)
        self.label = f"{model} N={n}"

    def call(self, session: requests.Session, url: str) -> None:
        if self.model == "minilm-l6-int8":
            resp = session.post(f"{url}/function/{self.function}/v1/embeddings", timeout=60,
                                json={"model": self.model, "input": SENTENCES})
        else:
            resp = session.post(f"{url}/function/{self.function}", data=COFFEE, timeout=60)
        if resp.status_code != 200:
            raise RuntimeError(f"{self.label}: {self.function} answered HTTP {resp.status_code}: {resp.text[:300]}")

    def check(self, url: str) -> None:
        """The answer is the model's, not just a 200: espresso, or 8 unit vectors of 384."""
        if self.model == "minilm-l6-int8":
            data = requests.post(f"{url}/function/{self.function}/v1/embeddings", timeout=60,
                                 json={"model": self.model, "input": SENTENCES}).json()["data"]
            assert len(data) == 8 and len(data[0]["embedding"]) == 384, data
        else:
            top = requests.post(f"{url}/function/{self.function}", data=COFFEE, timeout=60).json()["predictions"][0]
            assert top["label"] == "espresso", top


def prepare(tmp: Path, configs: list[Config]) -> tuple[Path, Path]:
    """A tmp store linking the real entries, the stage entries and functions, and a stack of one replica each."""
    root, work = tmp / "store", tmp / "work"
    root.mkdir()
    real = store.store_root()
    for model in {c.model for c in configs}:
        if not (real / model / store.MANIFEST).is_file():
            raise SystemExit(f"{model} is not in the model store at {real}; `aigc models build {model}`")
        (root / model).symlink_to(real / model)  # read only: the stages are written beside the link
    copy_functions({FUNCTIONS[c.model] for c in configs}, work)
    env = dict(os.environ, AIGC_MODEL_STORE=str(root), AIGC_MODEL_REMOTE="")
    for c in configs:
        if c.n > 1:
            cmd = [sys.executable, "-m", "aigc.cli", "split", c.model, "--stages", str(c.n), "--functions",
                   "--functions-dir", str(work / "functions"), "--stack", str(work / "stack.yml"),
                   "--knative-dir", str(work / "knative")]
            done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{c.label}: aigc split failed: {done.stdout[-800:]}{done.stderr[-800:]}")
    yaml = YAML()
    doc = yaml.load(work / "stack.yml")
    for spec in doc["functions"].values():
        labels = spec.setdefault("labels", {})
        labels.update({"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1",
                       "com.openfaas.scale.zero": "false"})
    yaml.dump(doc, work / "stack.yml")
    return root, work / "stack.yml"


def latencies(c: Config, url: str, count: int) -> list[float]:
    session, times = requests.Session(), []
    for _ in range(count):
        started = time.perf_counter()
        c.call(session, url)
        times.append((time.perf_counter() - started) * 1000)
    return times


def throughput(c: Config, url: str, count: int, concurrency: int = 8) -> float:
    sessions = [requests.Session() for _ in range(concurrency)]
    per = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]

    def worker(i: int) -> None:
        for _ in range(per[i]):
            c.call(sessions[i], url)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))  # list(): re-raises a failed request
    return count / (time.perf_counter() - started)


def replica_cgroups(gateway_pid: int, function: str) -> Path:
    """The folder holding the gateway's per-replica memory cgroups: aigc/gateway/cgroups.py names it
    aigc-<pid of the process that serves>, under that process's cgroup or the hierarchy's root. `aigc up` may
    serve from a process other than the one started, so the folder is the one holding `function`'s replica."""
    proc = Path(f"/proc/{gateway_pid}/cgroup").read_text()
    for version, mount in ((1, Path("/sys/fs/cgroup/memory")), (2, Path("/sys/fs/cgroup"))):
        for parent in (mount / own_path(version, proc).lstrip("/"), mount):
            for base in parent.glob("aigc-*") if parent.is_dir() else ():
                if any(re.fullmatch(re.escape(function) + r"-\d+", p.name) for p in base.iterdir()):
                    return base
    raise RuntimeError("no memory cgroups of the gateway found: replicas' memory cannot be read on this host")


def replica_memory(base: Path, function: str) -> tuple[float, float, list[float]]:
    """(cgroup peak MiB, the largest peak RSS of its processes, each process's peak RSS) of the function's one
    replica, in MiB."""
    found = [p for p in base.iterdir() if re.fullmatch(re.escape(function) + r"-\d+", p.name)]
    if len(found) != 1:
        raise RuntimeError(f"{function}: expected one replica cgroup under {base}, found {[p.name for p in found]}")
    cg = found[0]
    peak_file = cg / "memory.max_usage_in_bytes" if (cg / "memory.max_usage_in_bytes").exists() else cg / "memory.peak"
    peak = int(peak_file.read_text())
    # a replica is gunicorn's master and its worker; models load in the worker only (gunicorn_conf.py), which is
    # forked from the master and shares its imported libraries: a sum would count those twice, so the largest
    # peak (the worker's) stands for the replica; each process's peak goes to summary.json
    rss = [int(re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M).group(1)) * 1024
           for pid in (cg / "cgroup.procs").read_text().split()]
    return peak / 2**20, max(rss) / 2**20, [r / 2**20 for r in rss]


def feeds_for(model: str) -> dict[str, np.ndarray]:
    """What the handler hands to its engine for the benchmark's input (functions/*/handler.py)."""
    from aigc.runtime import fastpath, images

    stored = store.open_model(model)
    if model == "efficientnet-lite0":
        spec = json.loads(stored.file("preprocess.json").read_text())
        pixels = images.decode(COFFEE, int(spec["resize_shorter"]))
        return {"input": np.ascontiguousarray(fastpath.ClassifierPreprocessor(spec)(pixels)[None], np.float32)}
    ids = fastpath.TextTokenizer(stored.file("tokenizer.json")).encode_batch(SENTENCES)
    input_ids = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}


def chain_bytes(c: Config, root: Path) -> int:
    """Bytes of every request and answer body the pipeline's chain sends or receives for one benchmark input."""
    if c.n == 1:
        return 0
    import onnxruntime as ort

    values, total = feeds_for(c.model), 0
    for name in c.stages:
        session = ort.InferenceSession(str(store.open_model(name, root).file("model.onnx")),
                                       providers=["CPUExecutionProvider"])
        total += len(chain.encode_request(values)[0])
        wanted = {i.name for i in session.get_inputs()}
        outputs = session.run(None, {k: v for k, v in values.items() if k in wanted})
        values = dict(zip((o.name for o in session.get_outputs()), outputs))
        total += len(chain.encode_request(values)[0])
    return total


def table(configs: list[Config], results: dict[str, dict], runs: int) -> str:
    lines = ["| model | N | p50 ms (c=1) | p95 ms (c=1) | req/s (c=8) | cgroup peak MiB: whole or each stage | "
             "peak RSS MiB: whole or each stage | pipeline replica RSS MiB | bytes between stages / request |",
             "|---|---:|---:|---:|---:|---|---|---:|---:|"]
    for c in configs:
        r = results[c.label]
        whole = [c.function] if c.n == 1 else c.stages
        rss = " / ".join(f"{r['memory'][f][1]:.0f}" for f in whole)
        cg = " / ".join(f"{r['memory'][f][0]:.0f}" for f in whole)
        pipe = "-" if c.n == 1 else f"{r['memory'][c.function][1]:.0f}"
        lines.append(f"| {c.model} | {c.n} | {statistics.median(r['p50']):.1f} | {statistics.median(r['p95']):.1f} "
                     f"| {statistics.median(r['rps']):.1f} | {cg} | {rss} | {pipe} | {r['bytes']:,} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds; the table gives the median over them")
    parser.add_argument("--models", default="efficientnet-lite0,minilm-l6-int8")
    parser.add_argument("--stages", default="1,2,4")
    parser.add_argument("--requests", type=int, default=50, help="requests one at a time, each round")
    parser.add_argument("--burst", type=int, default=64, help="requests at concurrency 8, each round")
    args = parser.parse_args()
    configs = [Config(m, int(n)) for m in args.models.split(",") for n in args.stages.split(",")]
    started = time.monotonic()
    results = {c.label: {"p50": [], "p95": [], "rps": [], "memory": {}, "bytes": 0} for c in configs}
    with tempfile.TemporaryDirectory(prefix="aigc-bench-split-") as name:
        tmp = Path(name)
        current = "preparing the stages"
        try:
            root, stack_path = prepare(tmp, configs)
            functions = [f for c in configs for f in [c.function, *c.stages]]
            port = free_port()
            env = {"AIGC_MODEL_STORE": str(root), "AIGC_MODEL_REMOTE": "", "AIGC_ORT_CACHE": str(tmp / "ort"),
                   "AIGC_GATEWAY_URL": f"http://127.0.0.1:{port}", "AIGC_ZYGOTE": "off",
                   "AIGC_MAX_REPLICAS": str(len(functions) + 4)}
            current = "starting the gateway"
            with LocalGateway(stack_path, tmp / "gateway.log", port=port, env=env) as gw:
                for f in functions:
                    current = f"waiting for {f}"
                    gw.client.wait_for(f, lambda s: s.get("availableReplicas", 0) >= 1, 600, "a ready replica")
                print(f"{len(functions)} functions ready in {time.monotonic() - started:.0f}s", flush=True)
                for c in configs:  # warm: connections, ORT's first runs, every stage on the path
                    current = f"warming {c.label}"
                    c.check(gw.url)
                    latencies(c, gw.url, 5)
                    throughput(c, gw.url, 16)
                for i in range(args.runs):
                    for c in configs if i % 2 == 0 else configs[::-1]:
                        current = f"round {i + 1}: {c.label}"
                        times = latencies(c, gw.url, args.requests)
                        r = results[c.label]
                        r["p50"].append(float(np.percentile(times, 50)))
                        r["p95"].append(float(np.percentile(times, 95)))
                        r["rps"].append(throughput(c, gw.url, args.burst))
                    print(f"round {i + 1}/{args.runs} done ({time.monotonic() - started:.0f}s)", flush=True)
                current = "reading replica memory"
                base = replica_cgroups(gw.process.pid, configs[-1].function)
                for c in configs:
                    for f in [c.function, *c.stages]:
                        results[c.label]["memory"][f] = replica_memory(base, f)
            for c in configs:
                current = f"computing the bytes of {c.label}"
                results[c.label]["bytes"] = chain_bytes(c, root)
        except BaseException as exc:
            log = tmp / "gateway.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            print(f"FAILED at {current}: {type(exc).__name__}: {exc}\n--- gateway log tail ---\n{tail}",
                  file=sys.stderr)
            return 1
    text = "\n".join([
        f"One local gateway, one replica per function, AIGC_ZYGOTE=off; {args.runs} interleaved rounds, the "
        f"median of each round's figure; per round {args.requests} requests at c=1 and {args.burst} at c=8. "
        f"Input: coffee.jpg (EfficientNet), 8 sentences to /v1/embeddings (MiniLM). {os.cpu_count()} CPUs.",
        "", table(configs, results, args.runs), "",
        f"wall time {time.monotonic() - started:.0f}s"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text(text + "\n")
    (OUT / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
