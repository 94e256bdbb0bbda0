"""Scaling policy from OpenFaaS labels, and the decision it implies.

Labels (OpenFaaS names and defaults): `com.openfaas.scale.min` (1), `.max` (20),
`.zero` (false), `.zero-duration` (15m), `.target` (50 in-flight requests per
replica, OpenFaaS's capacity mode), `.down.window` (30s here: how long load must
stay low before replicas are removed); and ours, `com.aigc.keepalive`: `fixed`
(zero-duration) or `adaptive` (windows learned from the function's idle times,
keepalive.py; zero-duration while it has not learned). `max` is bounded by the gateway's own
replica limit and `target` to 1..10000, so no label can make the autoscaler
start more processes than the machine was given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..runtime.config import parse_bool, parse_duration, read_env
from . import keepalive
from .keepalive import Windows

PREFIX = "com.openfaas.scale."


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Policy:
    min: int = 1
    max: int = 20
    zero: bool = False
    zero_duration: float = 15 * 60.0
    target: float = 50.0
    down_window: float = 30.0
    keepalive: str = "fixed"

    @classmethod
    def from_labels(cls, labels: dict[str, str], max_replicas: int = 20) -> "Policy":
        def get_keepalive(labels):
            try:
                return keepalive.policy_of(labels)
            except ValueError as exc:
                raise PolicyError(f"{exc} (a scaling label)") from None

        def get(key, parse, default):
            try:
                return read_env(labels, PREFIX + key, parse, default)
            except ValueError as exc:
                raise PolicyError(f"{exc} (a scaling label)") from None

        policy = cls(min=get("min", int, cls.min), max=get("max", int, min(cls.max, max_replicas)),
                     zero=get("zero", parse_bool, cls.zero),
                     zero_duration=get("zero-duration", parse_duration, cls.zero_duration),
                     target=get("target", float, cls.target),
                     down_window=get("down.window", parse_duration, cls.down_window),
                     keepalive=get_keepalive(labels))
        if policy.min < 0 or policy.max < 1 or policy.min > policy.max:
            raise PolicyError(f"scale labels need 0 <= min <= max and max >= 1 (min={policy.min}, max={policy.max})")
        if policy.max > max_replicas:
            raise PolicyError(f"{PREFIX}max={policy.max} is above this gateway's limit of {max_replicas} replicas "
                              "(AIGC_MAX_REPLICAS)")
        if not 1 <= policy.target <= 10_000:
            raise PolicyError(f"{PREFIX}target is in-flight requests per replica: 1 to 10000, got {policy.target:g}")
        if policy.zero_duration < 1 or policy.down_window < 0:
            raise PolicyError(f"{PREFIX}zero-duration must be at least 1s and down.window not negative")
        return policy


@dataclass
class Load:
    """What the autoscaler sees of one function at one instant."""

    replicas: int          # replicas wanted now (starting or ready)
    demand: int            # requests in flight + requests waiting for a replica
    idle_seconds: float    # since the last request ended or began
    low_seconds: float     # how long demand has needed fewer replicas than we have
    floor: int | None = None  # a manual scale request, kept as the lower bound
    peak_demand: int | None = None  # highest demand over the down window (None: use demand)
    immediate: bool = False   # a manual scale just arrived: apply it without waiting for the window
    windows: Windows | None = None  # adaptive keep-alive's current windows (None: the fixed zero-duration)
    cpu_full: bool = False  # the cores are full and the function is CPU-bound (capacity.py): add no replica


def decide(policy: Policy, load: Load) -> int:
    """Replicas wanted next: up at once, down only after the window (to what the window's peak
    demand needs), to zero only when idle.

    A manual scale (`floor`) applies at once and holds until the next manual
    scale, keeping the function from idling to zero meanwhile. While the cores
    are full (`cpu_full`) no replica is added beyond the floor (capacity.py).
    """
    floor = policy.min if load.floor is None else min(load.floor, policy.max)
    lazy = policy.zero and load.floor is None
    # as OpenFaaS: a new deployment gets its min replicas; only zero-duration of idleness takes it to zero.
    # Adaptive keep-alive: none during the pre-warm window after a call, one until its keep-alive ends.
    if lazy and load.demand == 0:
        w = load.windows or Windows(0.0, policy.zero_duration, False)
        if load.idle_seconds < w.prewarm or load.idle_seconds >= w.unload_after:
            return 0
        if w.prewarm:
            floor = max(floor, 1)  # loaded again for the call the histogram expects
    needed = math.ceil(load.demand / policy.target)
    wanted = min(policy.max, max(needed, floor, 1 if load.demand else 0))
    if load.cpu_full and load.replicas:
        # more replicas would share the same busy cores: requests wait at the gateway instead
        wanted = min(wanted, max(load.replicas, floor))
    if wanted >= load.replicas:
        return wanted
    if load.immediate:
        return wanted  # OpenFaaS applies scale-function at once
    if load.low_seconds < policy.down_window:
        return load.replicas
    # size for the busiest moment of the window, not this instant, so a dip does not undershoot
    peak = load.demand if load.peak_demand is None else max(load.peak_demand, load.demand)
    return min(load.replicas, max(wanted, math.ceil(peak / policy.target)))
