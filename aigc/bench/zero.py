"""Scale from zero with and without zygotes: time through the gateway, and memory per added replica.

`timed(runs)`: two local gateways on stack.yml, one with `AIGC_ZYGOTE=on` and
one with `off`, each function scaled to zero through the API and then called
once, the two gateways interleaved run by run (run 0 is dropped: page cache).
Both wait first until every function's start-up is over, so no model load of
another function shares the CPU with the measured start.

`memory(replicas)`: the gateway's own process launcher (so the replicas are
exactly what the gateway runs) starts replicas of a function forked from its
zygote and as new processes; after each has answered a request, the PSS of its
processes (gunicorn's master and worker; shared pages count 1/n to each
sharer) is read from /proc/PID/smaps_rollup: for forked replicas once while
they still serve from the zygote's one-thread sessions, and once after they
re-made them with all threads (the new sessions' weights are the replica's
own).
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests

from .. import buildctx, stack
from ..gateway import deploy
from ..gateway.cgroups import Cgroups
from ..gateway.metering import group_processes
from ..gateway.processes import ProcessLauncher
from ..runtime import ort
from .gateway import REPO, LocalGateway

FUNCTIONS = ("image-classify", "embed")


def bodies() -> dict[str, tuple[str, bytes]]:
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buf, format="JPEG")
    sentences = {"model": "minilm-l6-int8", "input": ["A cat sits on the mat."]}
    return {"image-classify": ("/", buf.getvalue()), "embed": ("/v1/embeddings", json.dumps(sentences).encode())}


def _settle(gw: LocalGateway, most: float = 300) -> None:
    """Until no function of the gateway is starting a replica."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        listed = gw.client.session.get(f"{gw.url}/system/functions", timeout=10).json()
        if all(f.get("availableReplicas", 0) >= f.get("replicas", 0) for f in listed):
            return
        time.sleep(0.5)
    raise TimeoutError("the gateway's functions were still starting after 300 s")


def timed(runs: int, log_dir: Path, functions=FUNCTIONS) -> dict[str, dict[str, list[float]]]:
    """Seconds from request sent to answer, for a function at zero replicas: {function: {mode: [s…]}}."""
    calls = bodies()
    gateways = {mode: LocalGateway(REPO / "stack.yml", log_dir / f"gateway-zygote-{mode}.log", start_timeout=120,
                                   env={"AIGC_ZYGOTE": mode}) for mode in ("on", "off")}
    results = {fn: {"zygote": [], "new process": []} for fn in functions}
    try:
        for gw in gateways.values():
            _settle(gw)
        for run in range(runs + 1):
            for fn in functions:
                for mode, gw in gateways.items():
                    gw.client.scale(fn, 0)
                    gw.client.wait_for(fn, lambda s: s["replicas"] == 0, 60, "scaled to zero")
                    path, body = calls[fn]
                    started = time.perf_counter()
                    resp = requests.post(f"{gw.url}/function/{fn}{path}", data=body, timeout=120)
                    seconds = time.perf_counter() - started
                    if resp.status_code != 200:
                        raise RuntimeError(f"{fn} answered {resp.status_code}: {resp.text[:300]}")
                    if run:
                        results[fn]["zygote" if mode == "on" else "new process"].append(seconds)
    finally:
        for gw in gateways.values():
            gw.stop()
    return results


def pss_bytes(pid: int) -> int:
    """PSS of every process in `pid`'s process group (a replica: gunicorn's master and its workers)."""
    total = 0
    for member in group_processes(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total


def _serve_once(replica, path: str, body: bytes, most: float = 120) -> None:
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        if not replica.alive():
            raise RuntimeError(f"a replica ended: {replica.ended()}")
        try:
            if requests.post(replica.url + path, data=body, timeout=60).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.01)
    raise TimeoutError("a replica did not answer in time")


def memory(fn_name: str, replicas: int = 3) -> dict[str, float]:
    """Median PSS (MiB) of a replica forked from the zygote and of one started as a new process, the
    zygote's own PSS, all measured with `replicas` of each running."""
    fn = stack.load(REPO / "stack.yml").functions[fn_name]
    dep = deploy.from_stack(fn)
    path, body = bodies()[fn_name]
    with tempfile.TemporaryDirectory(prefix="aigc-zero-") as tmp:
        context = buildctx.assemble(fn, REPO, Path(tmp) / "build")
        launcher = ProcessLauncher(Cgroups(label="aigc-bench-zero"), zygotes=True)
        started, zygote = [], None
        try:
            first = launcher.start(dep, context, f"{fn_name}-0", {})  # starts the zygote beside it
            started.append(first)
            zygote = launcher.zygotes[context]
            deadline = time.monotonic() + 120
            while not zygote.ready():
                if zygote.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{fn_name}'s zygote did not become ready: {zygote.output.read()[-500:]}")
                time.sleep(0.05)
            forked = [launcher.start(dep, context, f"{fn_name}-f{i}", {}) for i in range(replicas)]
            started += forked
            launcher.use_zygotes, launcher.zygotes = False, {}  # the rest as new processes, same launcher
            fresh = [launcher.start(dep, context, f"{fn_name}-n{i}", {}) for i in range(replicas - 1)]
            started += fresh
            for r in started:
                _serve_once(r, path, body)
            mib = 1 << 20
            shared = statistics.median(pss_bytes(r.process.pid) for r in forked) / mib  # within RETHREAD_DELAY
            time.sleep(ort.RETHREAD_DELAY + 1.0)  # forked ones have re-made their sessions with all threads
            return {"forked": shared,
                    "forked, re-threaded": statistics.median(pss_bytes(r.process.pid) for r in forked) / mib,
                    "new process": statistics.median(pss_bytes(r.process.pid) for r in [first, *fresh]) / mib,
                    "zygote": pss_bytes(zygote.process.pid) / mib}
        finally:
            for r in started:
                r.stop(5)
            if zygote is not None:
                zygote.stop()
            launcher.close()
