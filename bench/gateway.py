"""Gateway overhead and cold start from zero through the gateway.

Overhead: the same tiny function (tests/handlers/echo) is called straight at
a replica and through `aigc up`, over one keep-alive connection each, in
interleaved blocks; overhead = gateway latency - direct latency, per percentile.
Cold start: image-classify and embed from stack.yml are scaled to zero through
the API, then one real request is timed until its answer.

    .venv/bin/python bench/gateway.py [--requests 3000] [--cold-runs 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from aigc import runner, stack  # noqa: E402
from aigc.bench.gateway import LocalGateway  # noqa: E402
from gateway_helpers import write_stack  # noqa: E402  (the tiny echo function lives with the tests)


def timed_calls(host: str, port: int, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port)
    out = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("POST", path, body=b"ping")
        resp = conn.getresponse()
        body = resp.read()
        out.append(time.perf_counter() - started)
        assert resp.status == 200 and body == b"ping", (resp.status, body[:200])
    conn.close()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def overhead(tmp: Path, total: int) -> None:
    stack_path = write_stack(tmp / "stack.yml", {"echo": {"labels": {"com.openfaas.scale.min": "1"}}})
    gw = LocalGateway(stack_path, tmp / "gateway.log")
    direct = runner.start(stack.load(stack_path).functions["echo"], REPO, 18990, build_dir=tmp / "build",
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        direct.wait_ready(60)
        gw.client.wait_for("echo", lambda s: s["availableReplicas"] == 1, 60, "replica ready")
        timed_calls("127.0.0.1", 18990, "/", 200)  # warm both paths
        timed_calls("127.0.0.1", gw.port, "/function/echo", 200)
        through, straight, block = [], [], 250
        for _ in range(max(1, total // block)):
            straight += timed_calls("127.0.0.1", 18990, "/", block)
            through += timed_calls("127.0.0.1", gw.port, "/function/echo", block)
    finally:
        direct.stop()
        gw.stop()
    print(f"gateway overhead on a tiny function, {len(through)} requests each way, interleaved blocks of {block}")
    print(f"{'':10} {'direct ms':>10} {'gateway ms':>11} {'overhead ms':>12}")
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        d, g = pct(straight, q) * 1e3, pct(through, q) * 1e3
        print(f"{name:10} {d:10.3f} {g:11.3f} {g - d:12.3f}")


def cold_starts(tmp: Path, runs: int) -> None:
    import io

    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buf, format="JPEG")
    bodies = {"image-classify": ("/function/image-classify", buf.getvalue()),
              "embed": ("/function/embed/v1/embeddings",
                        json.dumps({"model": "minilm-l6-int8", "input": ["A cat sits on the mat."]}).encode())}
    import requests

    gw = LocalGateway(REPO / "stack.yml", tmp / "gateway-cold.log")
    results: dict[str, list[float]] = {name: [] for name in bodies}
    try:
        for run in range(runs + 1):  # run 0 warms the page cache and is dropped
            for name, (path, body) in bodies.items():
                gw.client.scale(name, 0)
                gw.client.wait_for(name, lambda s: s["replicas"] == 0, 60, "scaled to zero")
                started = time.perf_counter()
                resp = requests.post(gw.url + path, data=body, timeout=120)
                seconds = time.perf_counter() - started
                assert resp.status_code == 200, resp.text[:300]
                if run:
                    results[name].append(seconds)
    finally:
        gw.stop()
    print(f"\ncold start from zero through the gateway (request sent -> answer), median of {runs}")
    for name, values in results.items():
        print(f"{name:16} median {statistics.median(values):.3f} s  min {min(values):.3f}  max {max(values):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overhead(Path(tmp), args.requests)
        cold_starts(Path(tmp), args.cold_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
