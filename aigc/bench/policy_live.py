"""`aigc bench policy --live`: a window of the synthetic trace replayed against the real gateway.

The simulator (policy.py) assumes a replica is there or not at each call. The gateway has a tick, a
start time, forks, a keep-alive clock that starts when a call ends. This replays the same calls on a
local `aigc up`, time-compressed by `--speedup` (60: a trace minute per second), and compares what
the gateway metered with what the simulator predicts for the same calls.

Each trace function is deployed twice from one small handler (bench/handlers/wait: it waits for the
call's duration, compressed too): `<f>-fixed` with `com.openfaas.scale.zero-duration` of 10 trace
minutes, and `<f>-adaptive` with `com.aigc.keepalive: adaptive` (falling back to the same timeout).
Both take every call of the trace at the same moment, on the same gateway, so they see the same
machine. The gateway's histogram bin is compressed with the clock (AIGC_KEEPALIVE_BIN = 60 s /
speedup), so windows come out in the same trace minutes as in the simulation. Idle memory is
compared in replica-hours of trace time (memory per function is not the handler's), from the
gateway's metering: replica-seconds less busy replica-seconds, times the speedup.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from .gateway import REPO, LocalGateway
from .policy import FALLBACK, Function, replay

HANDLER = REPO / "bench" / "handlers" / "wait"
POLICIES = ("fixed", "adaptive")


def stack_for(functions: list[Function], speedup: float, path: Path) -> Path:
    doc = {"version": 1.0, "provider": {"name": "openfaas", "gateway": "http://127.0.0.1:8080"}, "functions": {}}
    for fn in functions:
        for policy in POLICIES:
            doc["functions"][f"{fn.name}-{policy}"] = {
                "lang": "aigc-onnx", "handler": str(HANDLER), "image": f"localhost/{fn.name}-{policy}:bench",
                "labels": {"com.openfaas.scale.min": "0", "com.openfaas.scale.max": "1",
                           "com.openfaas.scale.zero": "true",
                           "com.openfaas.scale.zero-duration": f"{FALLBACK / speedup:g}s",
                           "com.aigc.keepalive": policy}}
    path.write_text(yaml.safe_dump(doc))
    return path


async def _send(session, url: str, headers: dict, at: float, seconds: float, errors: list[str]) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    try:
        async with session.post(url, params={"seconds": f"{seconds:.4f}"}, data=b"", headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                errors.append(f"{url}: HTTP {resp.status}")
    except aiohttp.ClientError as exc:
        errors.append(f"{url}: {exc}")


async def _drive(gw: LocalGateway, functions: list[Function], speedup: float) -> list[str]:
    auth = {"Authorization": aiohttp.BasicAuth(gw.client.user, gw.client.password).encode()}
    errors: list[str] = []
    start = time.monotonic() + 1.0
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(_send(session, f"{gw.url}/function/{fn.name}-{policy}", auth, start + t / speedup,
                                     fn.duration / speedup, errors)
                               for fn in functions for t in fn.starts for policy in POLICIES))
    return errors


def run_live(functions: list[Function], speedup: float, log_dir: Path) -> tuple[str, list[str]]:
    """(a markdown table: gateway vs simulation per policy, the call errors)."""
    with tempfile.TemporaryDirectory(prefix="aigc-policy-live-") as tmp:
        stack = stack_for(functions, speedup, Path(tmp) / "stack.yml")
        env = {"AIGC_KEEPALIVE_BIN": f"{60.0 / speedup:g}s", "AIGC_METER_INTERVAL": "200ms",
               "AIGC_MAX_REPLICAS": str(min(1000, 2 * len(functions) + 2))}
        log_dir.mkdir(parents=True, exist_ok=True)
        with LocalGateway(stack, log_dir / "gateway.log", state_dir=Path(tmp) / "state", env=env) as gw:
            errors = asyncio.run(_drive(gw, functions, speedup))
            time.sleep(FALLBACK / speedup + 2)  # let every replica reach its end, as the simulation does
            metered = {name: gw.client.session.get(f"{gw.url}/system/metering/{name}", timeout=10).json()["usage"]
                       for name in (f"{fn.name}-{p}" for fn in functions for p in POLICIES)}
    ones = [Function(fn.name, fn.kind, fn.starts, 1.0, fn.duration) for fn in functions]  # GB-s = replica-s
    simulated = {r.policy: r for r in replay(ones)}
    lines = ["| policy | calls | cold (gateway) | cold (simulated) | idle replica-h (gateway) "
             "| idle replica-h (simulated) |", "|---|---:|---:|---:|---:|---:|"]
    for policy, sim_name in (("fixed", f"fixed {FALLBACK / 60:g} min"), ("adaptive", "adaptive")):
        usages = [metered[f"{fn.name}-{policy}"] for fn in functions]
        calls = sum(u["invocations"] for u in usages)
        cold = sum(u["cold_starts"] for u in usages)
        idle = sum(u["replica_seconds"] - u["busy_replica_seconds"] for u in usages) * speedup / 3600
        sim = simulated[sim_name]
        lines.append(f"| {sim_name} | {calls} | {cold} ({100 * cold / max(calls, 1):.1f}%) | {sim.cold} "
                     f"({sim.cold_percent:.1f}%) | {idle:.1f} | {sim.idle_gb_seconds / 3600:.1f} |")
    return "\n".join(lines), errors
