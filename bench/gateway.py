"""Gateway overhead and cold start from zero through the gateway.

Overhead: the same tiny function (tests/handlers/echo) is called straight at
a replica and through `aigc up`, over one keep-alive connection each, in
interleaved blocks; overhead = gateway latency - direct latency, per percentile.
Cold start: image-classify and embed from stack.yml are scaled to zero through
the API, then one real request is timed until its answer, on two gateways side
by side: replicas forked from a zygote, and replicas started as new processes
(`AIGC_ZYGOTE=off`); then the memory each added replica costs either way
(aigc/bench/zero.py).

    .venv/bin/python bench/gateway.py [--requests 3000] [--cold-runs 5]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from aigc import runner, stack  # noqa: E402
from aigc.bench import zero  # noqa: E402
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
    results = zero.timed(runs, tmp)
    print(f"\ncold start from zero through the gateway (request sent -> answer), median of {runs}, interleaved")
    print(f"{'':16} {'zygote s':>9} {'new process s':>14} {'ratio':>6}   (min-max)")
    for name, modes in results.items():
        z, n = (statistics.median(modes[m]) for m in ("zygote", "new process"))
        spread = "  ".join(f"{min(v):.3f}-{max(v):.3f}" for v in modes.values())
        print(f"{name:16} {z:9.3f} {n:14.3f} {z / n:6.2f}   ({spread})")
    print("\nmemory per added replica (PSS MiB, median of 3 each, after a request; forked ones before and after "
          "they re-make their sessions with all threads)")
    print(f"{'':16} {'forked':>7} {'re-threaded':>12} {'new process':>12} {'zygote':>7}")
    for name in results:
        mem = zero.memory(name)
        print(f"{name:16} {mem['forked']:7.1f} {mem['forked, re-threaded']:12.1f} {mem['new process']:12.1f} "
              f"{mem['zygote']:7.1f}")


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
