"""Gateway metrics in OpenFaaS's names, plus cold starts and replicas per function."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = Counter("gateway_function_invocation", "Function invocations",
                                   ["function_name", "code"], registry=r)
        self.seconds = Histogram("gateway_functions_seconds", "Function latency through the gateway",
                                 ["function_name", "code"], buckets=BUCKETS, registry=r)
        self.replicas = Gauge("gateway_service_count", "Replicas wanted (starting or ready) per function",
                              ["function_name"], registry=r)
        self.available = Gauge("gateway_service_available_count", "Ready replicas per function",
                               ["function_name"], registry=r)
        self.cold_starts = Counter("gateway_cold_start", "Requests that waited for a replica to start",
                                   ["function_name"], registry=r)
        self.cold_start_seconds = Histogram("gateway_cold_start_seconds", "Request wait during a cold start",
                                            ["function_name"], buckets=BUCKETS, registry=r)
        self.replica_start_seconds = Histogram("gateway_replica_start_seconds", "Process start to ready",
                                               ["function_name"], buckets=BUCKETS, registry=r)
        self.replica_exits = Counter("gateway_replica_exits", "Replicas that ended without being asked to, "
                                     "by reason (oom_killed: over their memory limit; error: any other exit)",
                                     ["function_name", "reason"], registry=r)
        self.held = Gauge("gateway_function_replicas_held", "Replicas the load asks for that are not started "
                          "because the cores are full and the function is CPU-bound", ["function_name"], registry=r)
        self.cpu_busy = Gauge("gateway_cpu_busy_cores", "Cores busy on the CPUs the gateway's replicas run on, "
                              "over the last metering sample", registry=r)
        self.async_queued = Gauge("gateway_async_queued", "Async calls accepted and not yet delivered",
                                  registry=r)

    def watch_meter(self, meter) -> None:
        """Expose the metering totals (metering.py) on the same /metrics."""
        from .metering import MeterCollector

        self.registry.register(MeterCollector(meter))

    def declare(self, function: str) -> None:
        """Expose a function's event counters at 0 from its deployment: Prometheus' increase() and rate()
        only count from a series' first sample, so a counter born at 1 would hide its first event."""
        self.cold_starts.labels(function)
        for reason in ("oom_killed", "error"):
            self.replica_exits.labels(function, reason)

    def observe(self, function: str, code: int, seconds: float) -> None:
        self.invocations.labels(function, str(code)).inc()
        self.seconds.labels(function, str(code)).observe(seconds)

    def replica_exit(self, function: str, oom: bool) -> None:
        self.replica_exits.labels(function, "oom_killed" if oom else "error").inc()

    def forget(self, function: str) -> None:
        for metric in (self.replicas, self.available, self.held, self.cold_starts):
            try:
                metric.remove(function)
            except KeyError:
                pass
        for reason in ("oom_killed", "error"):
            try:
                self.replica_exits.remove(function, reason)
            except KeyError:
                pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
