"""The gateway's Prometheus text → per-function numbers the pages show.

Uses the OpenFaaS gateway's metric names (`gateway_function_invocation_total`,
`gateway_functions_seconds`, `gateway_service_count`) plus the local gateway's
`gateway_cold_start_total` and `gateway_service_available_count`. OpenFaaS
labels functions `name.namespace`; the namespace is dropped so both gateways
key by plain name.

Percentiles are estimated from histogram buckets the way Prometheus'
histogram_quantile does: find the bucket holding the rank and interpolate
linearly inside it. They are only as fine as the buckets (e.g. 0.1–0.25 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Buckets = dict[float, float]  # upper bound (le) → cumulative count, summed over status codes


@dataclass
class FunctionMetrics:
    invocations: float = 0.0
    errors: float = 0.0          # invocations answered 5xx
    cold_starts: float = 0.0
    replicas: float | None = None
    available: float | None = None
    buckets: Buckets = field(default_factory=dict)

    def quantile(self, q: float) -> float | None:
        return quantile(self.buckets, q)


def _function(labels: dict[str, str]) -> str | None:
    name = labels.get("function_name")
    return name.split(".", 1)[0] if name else None


def parse(text: str) -> dict[str, FunctionMetrics]:
    """Per-function metrics from a /metrics exposition; unknown metrics are ignored."""
    out: dict[str, FunctionMetrics] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            fn = _function(sample.labels)
            if fn is None:
                continue
            m = out.setdefault(fn, FunctionMetrics())
            if sample.name == "gateway_function_invocation_total":
                m.invocations += sample.value
                if sample.labels.get("code", "").startswith("5"):
                    m.errors += sample.value
            elif sample.name == "gateway_functions_seconds_bucket":
                le = float(sample.labels["le"])
                m.buckets[le] = m.buckets.get(le, 0.0) + sample.value
            elif sample.name == "gateway_cold_start_total":
                m.cold_starts += sample.value
            elif sample.name == "gateway_service_count":
                m.replicas = sample.value
            elif sample.name == "gateway_service_available_count":
                m.available = sample.value
    return out


def quantile(buckets: Buckets, q: float) -> float | None:
    """The q-quantile (0..1) of a cumulative histogram, None when it holds no observations."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                # past the last finite bound nothing is known but "more than that": report the bound
                finite = [b for b in bounds if not math.isinf(b)]
                return finite[-1] if finite else None
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None


def window(current: Buckets, previous: Buckets | None) -> Buckets:
    """Observations between two scrapes. A count that went down means the gateway restarted
    (its counters start again at zero), so everything counted now is new."""
    if not previous:
        return dict(current)
    delta = {le: current[le] - previous.get(le, 0.0) for le in current}
    if any(v < 0 for v in delta.values()):
        return dict(current)
    return delta


def summary(m: FunctionMetrics | None, previous: Buckets | None = None) -> dict:
    """The JSON the pages poll: totals since the gateway started plus latency since the last poll."""
    if m is None:
        return {"invocations": 0, "errors": 0, "cold_starts": 0, "p50": None, "p95": None,
                "recent_p50": None, "recent_p95": None, "recent_calls": 0}
    recent = window(m.buckets, previous)
    return {"invocations": int(m.invocations), "errors": int(m.errors), "cold_starts": int(m.cold_starts),
            "p50": m.quantile(0.5), "p95": m.quantile(0.95),
            "recent_p50": quantile(recent, 0.5), "recent_p95": quantile(recent, 0.95),
            "recent_calls": int(max(recent.values(), default=0))}
