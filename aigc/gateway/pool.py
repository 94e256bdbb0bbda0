"""One function's replicas (processes or containers), routed least-in-flight, scaled by the policy.

A request takes a ready replica with spare capacity (`max_inflight`) or waits
for one; that wait is what holds a request during scale from zero. The
autoscaler calls `reconcile()` each tick: a replica over its memory limit is
ended (the kernel killed one of its processes), dead replicas are reaped and
reported (their in-flight requests already got 502 from the proxy) and the
count is moved to what `policy.decide` wants.

`start(instance)` is the runtime's: it returns a running replica with `url`,
`output`, `alive()`, `oom_kills()`, `kill()`, `stop(timeout)`, `ended()` and
`release()` (processes.py, containers.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import aiohttp

from .capacity import Hold
from .deploy import Deployment
from .keepalive import IdleHistogram
from .logs import LogBook, drain
from .policy import Load, decide

log = logging.getLogger("aigc.gateway")
START_FAILURES_BEFORE_ERROR = 3


class NoReplica(Exception):
    """No replica could take the request in time; the message is for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Replica:
    def __init__(self, index: int, instance: Any, log_path: Path):
        self.index = index
        self.instance = instance  # the runtime's running replica
        self.log_path = log_path
        self.state = "starting"  # starting -> ready -> stopping | dead
        self.inflight = 0
        self.started = time.monotonic()
        self._busy_total = 0.0  # seconds with a request in flight, up to _busy_since
        self._busy_since = 0.0

    def begin(self) -> None:
        if self.inflight == 0:
            self._busy_since = time.monotonic()
        self.inflight += 1

    def end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._busy_total += time.monotonic() - self._busy_since

    def busy_seconds(self) -> float:
        """Time this replica has had at least one request in flight (metering's busy share)."""
        return self._busy_total + (time.monotonic() - self._busy_since if self.inflight else 0.0)

    @property
    def url(self) -> str:
        return self.instance.url

    def alive(self) -> bool:
        return self.instance.alive()

    def log_tail(self, limit: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


class FunctionPool:
    def __init__(self, deployment: Deployment, start: Callable[[str], Any], log_dir: Path,
                 session: aiohttp.ClientSession, ready_timeout: float, logs: LogBook | None = None):
        self.deployment = deployment
        self.logs = logs or LogBook()
        self.start = start
        self.mount: Path | None = None  # the deployment's secrets folder, set by the gateway
        self.folders: list[Path] = []  # the deployment's build context and secrets, removed when it retires
        self.retire: Callable[[], None] = lambda: None  # the runtime's cleanup when it retires (a zygote)
        self.log_dir = log_dir
        self.session = session
        self.ready_timeout = ready_timeout
        self.replicas: list[Replica] = []
        self.manual: int | None = None
        self.manual_pending = False
        self._demand_history: collections.deque[tuple[float, int]] = collections.deque()
        self._stopping: set[asyncio.Task] = set()
        self.waiting = 0
        self.calls = [0]  # invocations, in a box an update's new pool shares with the old one
        self.last_activity = time.monotonic()
        self.idle_times = IdleHistogram()  # between a call's end and the next call (adaptive keep-alive)
        self.low_since: float | None = None
        self.start_failures = 0
        self.last_start_error = ""
        self._next_index = 0
        self._changed = asyncio.Condition()
        self.wake = asyncio.Event()  # shared with the autoscaler: set when a request finds no replica
        self.on_replica_ready = lambda seconds: None
        self.on_replica_exit = lambda oom: None  # oom: ended by its memory limit
        self.cpu_hold: Hold | None = None  # set by the gateway while the cores are full (capacity.py)
        self.held = 0  # replicas the policy wanted but the cores could not run, at the last reconcile

    @property
    def invocations(self) -> int:
        return self.calls[0]

    # --- routing ---------------------------------------------------------
    @property
    def ready(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready" and r.alive()]

    @property
    def active(self) -> list[Replica]:
        return [r for r in self.replicas if r.state in ("starting", "ready")]

    def _pick(self) -> Replica | None:
        cap = self.deployment.max_inflight
        candidates = [r for r in self.ready if not cap or r.inflight < cap]
        return min(candidates, key=lambda r: r.inflight) if candidates else None

    async def acquire(self, timeout: float) -> tuple[Replica, bool]:
        """A replica for one request, and whether the request had to wait for a replica to start."""
        if self.calls[0] and self.demand() == 0:  # the function was idle since its last call ended
            self.idle_times.add(time.monotonic() - self.last_activity)
        self.last_activity = time.monotonic()
        replica = self._pick()
        if replica:
            replica.begin()
            return replica, False
        cold = not self.ready
        self.waiting += 1
        self.wake.set()
        deadline = time.monotonic() + timeout
        try:
            async with self._changed:
                while (replica := self._pick()) is None:
                    if self.start_failures >= START_FAILURES_BEFORE_ERROR and not self.ready:
                        raise NoReplica(503, f"function {self.deployment.name!r} fails to start: "
                                             f"{self.last_start_error}")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NoReplica(504, f"no replica of {self.deployment.name!r} could take the request "
                                             f"within {timeout:.0f}s")
                    try:
                        await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
                    except asyncio.TimeoutError:
                        pass
            replica.begin()
            return replica, cold
        finally:
            self.waiting -= 1

    async def release(self, replica: Replica) -> None:
        replica.end()
        if not replica.alive():
            self.wake.set()  # replace it now rather than at the next tick
        self.calls[0] += 1
        self.last_activity = time.monotonic()
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def demand(self) -> int:
        return self.waiting + sum(r.inflight for r in self.replicas)

    # --- scaling ---------------------------------------------------------
    async def reconcile(self, room: int = 1 << 30) -> None:
        """`room`: how many replicas the gateway lets this pool start now (the rest wait for a later tick)."""
        for r in list(self.replicas):
            if r.state not in ("starting", "ready"):
                continue
            if r.alive() and await asyncio.to_thread(r.instance.oom_kills):
                # as Kubernetes with cgroup v2's memory.oom.group: the whole replica goes, not one worker
                r.instance.oom_killed = True
                r.instance.kill()
                await asyncio.to_thread(r.instance.process.wait)
            if not r.alive():
                r.state = "dead"
                self.replicas.remove(r)
                await self._report_exit(r)
        now = time.monotonic()
        current = len(self.active)
        demand = self.demand()
        history = self._demand_history
        history.append((now, demand))
        while history and history[0][0] < now - self.deployment.policy.down_window:
            history.popleft()
        needed = math.ceil(demand / self.deployment.policy.target)
        if needed >= current:
            self.low_since = None
        elif self.low_since is None:
            self.low_since = now
        load = Load(replicas=current, demand=demand, idle_seconds=0 if demand else now - self.last_activity,
                    low_seconds=now - self.low_since if self.low_since else 0, floor=self.manual,
                    peak_demand=max(d for _, d in history), immediate=self.manual_pending, windows=self.windows(),
                    cpu_full=self.cpu_hold is not None)
        wanted = decide(self.deployment.policy, load)
        self._note_hold(decide(self.deployment.policy, replace(load, cpu_full=False)) - wanted)
        self.manual_pending = False
        for _ in range(min(wanted - current, room)):
            self._start_replica()
        if wanted < current:
            self._stop_idle(current - wanted)
        await self._notify()

    def _note_hold(self, held: int) -> None:
        """Say in the function's logs when holding starts (with why) and when it ends."""
        if held > 0 and self.held == 0:
            n = len(self.active)
            text = (f"holding at {n} replica{'' if n == 1 else 's'} (the load asks for {n + held}): "
                    f"{self.cpu_hold.reason()}")
        elif held == 0 and self.held > 0:
            text = "no longer holding: replicas may be added again"
        else:
            text = ""
        if text:
            log.info("%s: %s", self.deployment.name, text)
            self.logs.add(self.deployment.name, f"{self.deployment.name}-gateway", f"[gateway] {text}")
        self.held = max(0, held)

    def windows(self):
        """Adaptive keep-alive's windows now, or None under the fixed zero-duration."""
        policy = self.deployment.policy
        return self.idle_times.windows(policy.zero_duration) if policy.keepalive == "adaptive" else None

    async def _report_exit(self, r: Replica) -> None:
        ended = await asyncio.to_thread(r.instance.ended)
        await asyncio.to_thread(r.instance.release)
        name = f"{self.deployment.name}-{r.index}"
        log.warning("%s %s", name, ended)
        self.logs.add(self.deployment.name, name, f"[gateway] replica {name} {ended}; replacing it")
        self.on_replica_exit(ended.startswith("OOMKilled"))

    def _start_replica(self) -> None:
        index = self._next_index
        self._next_index += 1
        instance_name = f"{self.deployment.name}-{index}"
        log_path = self.log_dir / f"{instance_name}.log"
        instance = self.start(instance_name)
        drain(instance.output, log_path, self.logs, self.deployment.name, instance_name)
        replica = Replica(index, instance, log_path)
        self.replicas.append(replica)
        asyncio.get_running_loop().create_task(self._await_ready(replica))

    async def _await_ready(self, replica: Replica) -> None:
        deadline = replica.started + self.ready_timeout
        failed = None  # the instance's own "failed: …" (a model that cannot load): no point waiting on
        # OpenFaaS's annotation names the readiness path; else ours, and /_/health for an image that lacks it
        probe = self.deployment.fn.annotations.get("com.openfaas.health.http.path") or "/_/ready"
        while replica.state == "starting" and time.monotonic() < deadline and not failed:
            if not replica.alive():
                break
            try:
                async with self.session.get(replica.url + probe, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 404:
                        probe = "/_/health"
                    elif resp.status == 200:
                        replica.state = "ready"
                        self.start_failures = 0
                        self.on_replica_ready(time.monotonic() - replica.started)
                        await self._notify()
                        return
                    if resp.status == 503:
                        body = await resp.json(content_type=None)
                        error = str(body.get("error", "")) if isinstance(body, dict) else ""
                        failed = error if error.startswith("failed:") else None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                pass
            await asyncio.sleep(0.01 if time.monotonic() - replica.started < 5 else 0.1)
        if replica.state == "starting":
            self.start_failures += 1
            ended = await asyncio.to_thread(replica.instance.ended) if not replica.alive() else ""
            self.last_start_error = failed or (f"replica {ended}" if ended
                                               else f"not ready after {self.ready_timeout:.0f}s")
            self.last_start_error += "; log tail: " + replica.log_tail(400).strip().replace("\n", " | ")
            replica.state = "dead"
            if replica in self.replicas:
                self.replicas.remove(replica)
            await asyncio.to_thread(replica.instance.stop, 2)
            await self._notify()

    def _stop_idle(self, count: int) -> None:
        # newest first, never one that is serving a request; the stop (SIGTERM, then wait for a
        # graceful exit) runs in the background so it never holds up scaling of other functions
        victims = [r for r in reversed(self.active) if r.inflight == 0][:count]
        for r in victims:
            r.state = "stopping"
            self.replicas.remove(r)
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(r.instance.stop))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def wait_ready(self, timeout: float) -> bool:
        """Until a replica is ready (True), or starting has failed for good or taken `timeout` (False)."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not self.ready:
                left = deadline - time.monotonic()
                if left <= 0 or self.start_failures >= START_FAILURES_BEFORE_ERROR:
                    return False
                try:
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
                except asyncio.TimeoutError:
                    pass
        return True

    async def stop_all(self) -> None:
        victims = list(self.replicas)
        self.replicas.clear()
        for r in victims:
            r.state = "stopping"
        await asyncio.gather(*(asyncio.to_thread(r.instance.stop) for r in victims), *self._stopping)
