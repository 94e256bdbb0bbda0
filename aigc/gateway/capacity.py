"""Capacity-aware scaling: no more replicas of a CPU-bound function than the cores can run.

On one machine every process replica shares the same cores. Once they are busy,
another replica of a function whose requests are CPU work adds no throughput:
it splits the same cores among more requests at once, so each takes longer
(the committed scaling run: 1 -> 4 replicas of image-classify on 2 cores, still
~50 req/s, p95 56 -> 263 ms). Requests then wait better at the gateway, in
order, for a replica that runs them at full speed.

So with each metering sample the gateway reads how busy the cores it may use are
(/proc/stat, the CPUs in its affinity) and, per function, the CPU its replicas
used per second of being busy (metering.py). While the cores are at least
FULL of the budget busy, a function whose busy replicas each use at least
CPU_BOUND of a core is held at the replicas it has: the autoscaler does not
add more, and says so in the function's logs, in `gateway_function_replicas_held`
and in `/system/metering/NAME`. Scale from zero, `com.openfaas.scale.min` and a
manual scale are never held. A function that mostly waits (on a remote model, or
on other functions) uses little CPU while busy and scales as before.

The budget is the CPUs this gateway may run on, or AIGC_CPU_BUDGET (cores, e.g.
`1.5` or `1500m`); AIGC_CPU_AWARE=off turns holding off. On a cluster each
replica brings its own `limits.cpu`, so there is nothing to hold: the same
knowledge is the per-replica concurrency `aigc tune` measures and writes as
`com.openfaas.scale.target` and Knative's `autoscaling.knative.dev/target`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

FULL = 0.9       # share of the budget's cores busy at which the machine counts as full
CPU_BOUND = 0.5  # cores a busy replica uses, at least, for its function to count as CPU-bound
MIN_BUSY = 0.2   # seconds of replica busy time a sample needs before it says anything about a function


def usable_cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def parse_cores(text: str) -> float:
    """Cores from `2`, `1.5` or `1500m` (Kubernetes' CPU quantity forms)."""
    text = text.strip()
    try:
        value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError("use cores, e.g. 2, 1.5 or 1500m") from None
    if not 0.1 <= value <= 1024:
        raise ValueError("use 0.1 to 1024 cores")
    return value


class CpuClock:
    """Busy cores of the CPUs this gateway may use, between one reading and the next (/proc/stat)."""

    def __init__(self, cpus: set[int] | None = None, stat_path: str = "/proc/stat"):
        self.cpus = usable_cpus() if cpus is None else cpus
        self.stat_path = stat_path
        self._last: tuple[float, float] | None = None  # (busy ticks, all ticks) at the previous reading

    def _ticks(self) -> tuple[float, float]:
        busy = total = 0.0
        with open(self.stat_path) as fh:
            for line in fh:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in self.cpus:
                    continue
                values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(values)
                busy += sum(values) - values[3] - values[4]
        return busy, total

    def busy_cores(self) -> float | None:
        """Cores busy on average since the previous call (None at the first)."""
        try:
            now = self._ticks()
        except (OSError, ValueError, IndexError):
            return None
        last, self._last = self._last, now
        if last is None or now[1] <= last[1]:
            return None
        return len(self.cpus) * (now[0] - last[0]) / (now[1] - last[1])


@dataclass(frozen=True)
class Hold:
    """Why a function may not add replicas now."""

    busy_cores: float
    budget: float
    cores_per_replica: float

    def reason(self) -> str:
        return (f"the {self.budget:g} cores are {100 * self.busy_cores / self.budget:.0f}% busy and a busy "
                f"replica uses {self.cores_per_replica:.1f} cores: another replica would only share them")


def holds(busy_cores: float | None, budget: float, window: dict[str, tuple[float, float]]) -> dict[str, Hold]:
    """Functions to hold, from the machine's busy cores and, per function, (CPU seconds, busy replica
    seconds) over the same window."""
    if busy_cores is None or busy_cores < FULL * budget:
        return {}
    held = {}
    for name, (cpu, busy) in window.items():
        if busy >= MIN_BUSY and cpu / busy >= CPU_BOUND:
            held[name] = Hold(busy_cores, budget, cpu / busy)
    return held
