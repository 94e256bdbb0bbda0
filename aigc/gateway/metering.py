"""Metering: the memory and CPU each function's replicas hold, in GB-seconds and CPU-seconds, and their price.

Every `interval` seconds the gateway reads, for each live process replica, the RSS and CPU time of
every process in its process group (gunicorn's master and workers) from /proc, and adds to its
function's totals: RSS x elapsed time (memory GB-seconds, busy or idle: a replica holds its memory
either way), the CPU time used since the last sample, replica-seconds, and the part of both spent
while the replica had a request in flight (busy; the pool times that exactly, per replica). Invocations, their duration and cold starts come
from the gateway as calls end. A GB is 2^30 bytes, as FaaS price lists count it.

Cost is configuration: a price per GB-second and per million requests, by default the public list
prices of AWS Lambda (x86, us-east-1: $0.0000166667 per GB-s, $0.20 per 1M requests; docs/metering.md),
or a JSON file in AIGC_PRICES. A function's cost is its GB-seconds and requests at those prices; each
invocation is attributed its own busy share plus an equal part of the idle time.

Totals survive a restart: they are written to `metering.json` in the state folder (atomically,
every SAVE_EVERY seconds and at close) and read back at start. Samples only ever add what elapsed
since the previous one in this process, so nothing is counted twice. Container replicas (podman)
are not metered: their processes live in another PID namespace.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger("aigc.gateway")
GIB = float(1 << 30)
SAVE_EVERY = 30.0
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
AWS_LAMBDA = {"source": "AWS Lambda list prices, x86, us-east-1", "per_gb_second": 0.0000166667,
              "per_million_requests": 0.20}


class PriceError(ValueError):
    pass


def load_prices(path: str | None) -> dict[str, Any]:
    """The price table: AWS Lambda's list prices, or a JSON file {"per_gb_second", "per_million_requests",
    "source"}; a malformed one is a PriceError naming what to fix."""
    if not path:
        return dict(AWS_LAMBDA)
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PriceError(f"AIGC_PRICES={path}: cannot read a JSON object from it ({exc})") from None
    if not isinstance(table, dict):
        raise PriceError(f"AIGC_PRICES={path}: the file must hold a JSON object")
    prices = {"source": str(table.get("source", path))}
    for key in ("per_gb_second", "per_million_requests"):
        value = table.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise PriceError(f"AIGC_PRICES={path}: {key!r} must be a number >= 0, got {value!r}")
        prices[key] = float(value)
    return prices


@dataclass
class Usage:
    memory_gb_seconds: float = 0.0
    busy_gb_seconds: float = 0.0
    cpu_seconds: float = 0.0
    replica_seconds: float = 0.0
    busy_replica_seconds: float = 0.0
    invocations: int = 0
    invocation_seconds: float = 0.0
    cold_starts: int = 0

    @classmethod
    def from_dict(cls, raw: dict) -> "Usage":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known and isinstance(v, (int, float))})


def process_groups() -> dict[int, list[int]]:
    """Every process by its process group, from one scan of /proc (a replica is a group: its gunicorn
    master and workers)."""
    groups: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                groups.setdefault(os.getpgid(int(entry.name)), []).append(int(entry.name))
            except OSError:
                continue
    return groups


def group_processes(pgid: int) -> list[int]:
    """Pids whose process group is `pgid`."""
    return process_groups().get(pgid, [])


def read_process(pid: int) -> tuple[int, float] | None:
    """(RSS bytes, CPU seconds used so far) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/statm", "rb") as fh:
            rss_pages = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return rss_pages * PAGE, (int(stat[11]) + int(stat[12])) / TICKS  # utime, stime (fields 14, 15)


class Meter:
    def __init__(self, path: Path, prices: dict[str, Any]):
        self.path, self.prices = path, prices
        self.usage: dict[str, Usage] = {}
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds at the previous sample
        self._busy: dict[int, float] = {}  # replica (process group) -> its busy seconds at the previous sample
        self._current: dict[str, dict[str, float]] = {}  # function -> the spec's FunctionUsage at the last sample
        self.window: dict[str, tuple[float, float]] = {}  # function -> (CPU s, busy replica s) in the last sample
        self._last: float | None = None
        self._saved = time.monotonic()
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
                self.usage = {name: Usage.from_dict(u) for name, u in raw.get("functions", {}).items()}
            except (OSError, ValueError, AttributeError, TypeError):
                log.warning("metering totals in %s are unreadable; starting from zero", path)

    def of(self, function: str) -> Usage:
        return self.usage.setdefault(function, Usage())

    def current(self, function: str) -> dict[str, float]:
        """OpenFaaS's FunctionUsage: CPU millicores over the last sample interval, RSS bytes now."""
        return dict(self._current.get(function, {"cpu": 0.0, "totalMemoryBytes": 0.0}))

    def forget(self, function: str) -> None:
        """A removed function's totals go (a redeploy under the same name keeps them)."""
        self.usage.pop(function, None)

    def invoked(self, function: str, seconds: float) -> None:
        u = self.of(function)
        u.invocations += 1
        u.invocation_seconds += seconds

    def cold_start(self, function: str) -> None:
        self.of(function).cold_starts += 1

    def sample(self, replicas: dict[str, list[tuple[int, float]]], now: float | None = None) -> None:
        """`replicas`: per function, (process group id, seconds it has been busy so far) of each live replica.
        Runs on a worker thread."""
        now = time.monotonic() if now is None else now
        elapsed = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        seen: dict[int, float] = {}
        busy_seen: dict[int, float] = {}
        members = process_groups() if replicas else {}
        current: dict[str, dict[str, float]] = {}
        window: dict[str, tuple[float, float]] = {}
        for function, groups in replicas.items():
            u = self.of(function)
            now_rss, cpu_before, busy_before = 0, u.cpu_seconds, u.busy_replica_seconds
            for pgid, busy_total in groups:
                busy = min(elapsed, max(0.0, busy_total - self._busy.get(pgid, busy_total)))
                busy_seen[pgid] = busy_total
                rss = 0
                for pid in members.get(pgid, []):
                    found = read_process(pid)
                    if found is None:
                        continue
                    rss += found[0]
                    # a process first seen now is counted from its start: all its CPU time is new
                    u.cpu_seconds += max(0.0, found[1] - self._cpu.get(pid, 0.0))
                    seen[pid] = found[1]
                u.memory_gb_seconds += rss / GIB * elapsed
                u.replica_seconds += elapsed
                u.busy_gb_seconds += rss / GIB * busy  # RSS is sampled, busy time is exact
                u.busy_replica_seconds += busy
                now_rss += rss
            millicores = 1000 * (u.cpu_seconds - cpu_before) / elapsed if elapsed else 0.0
            current[function] = {"cpu": round(millicores, 3), "totalMemoryBytes": float(now_rss)}
            window[function] = (u.cpu_seconds - cpu_before, u.busy_replica_seconds - busy_before)
        self._cpu, self._busy, self._current, self.window = seen, busy_seen, current, window
        if time.monotonic() - self._saved > SAVE_EVERY:
            self.save()

    def cost(self, function: str) -> dict[str, Any]:
        """What the function's usage costs at the configured prices, and per invocation."""
        u = self.of(function)
        memory = u.memory_gb_seconds * self.prices["per_gb_second"]
        requests = u.invocations * self.prices["per_million_requests"] / 1e6
        busy = u.busy_gb_seconds * self.prices["per_gb_second"]
        per_call = (memory + requests) / u.invocations if u.invocations else None
        return {"currency": "USD", "prices": self.prices, "total": memory + requests, "memory": memory,
                "requests": requests, "busy_memory": busy, "idle_memory": memory - busy,
                "per_invocation": per_call,
                "per_invocation_busy": busy / u.invocations if u.invocations else None}

    def report(self, function: str) -> dict[str, Any]:
        return {"usage": asdict(self.of(function)), "cost": self.cost(function)}

    def save(self) -> None:
        self._saved = time.monotonic()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"functions": {n: asdict(u) for n, u in self.usage.items()}}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("metering totals could not be saved to %s: %s", self.path, exc)


class MeterCollector:
    """The totals as Prometheus counters, read at each scrape."""

    def __init__(self, meter: Meter):
        self.meter = meter

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        names = [("memory_gb_seconds", "memory_gb_seconds", "Replica RSS held, busy or idle, in GiB-seconds"),
                 ("busy_memory_gb_seconds", "busy_gb_seconds", "The part of it held while a request was in flight"),
                 ("cpu_seconds", "cpu_seconds", "CPU time used by the replicas' processes"),
                 ("replica_seconds", "replica_seconds", "Replicas alive, in seconds"),
                 ("cost_usd", None, "Cost at the configured prices (memory GB-s and requests)")]
        for metric, field, help_text in names:
            family = CounterMetricFamily(f"gateway_function_{metric}", help_text, labels=["function_name"])
            for function in list(self.meter.usage):
                value = (getattr(self.meter.usage[function], field) if field
                         else self.meter.cost(function)["total"])
                family.add_metric([function], value)
            yield family
