"""Prometheus metrics of one instance.

Named like of-watchdog's (`http_requests_total`, `http_request_duration_seconds`,
`http_requests_in_flight`) so existing OpenFaaS dashboards keep working. With
several gunicorn workers, prometheus_client's multiprocess mode sums them; the
gunicorn config sets PROMETHEUS_MULTIPROC_DIR before this module is imported.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_MULTIPROC = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter("http_requests_total", "HTTP requests served", ["route", "method", "code"])
LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency", ["route", "method", "code"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
IN_FLIGHT = Gauge("http_requests_in_flight", "Inference requests being served",
                  multiprocess_mode="livesum")
MODEL_LOAD = Gauge("aigc_model_load_seconds", "Seconds the model took to load", ["model"],
                   multiprocess_mode="max")
MODEL_READY = Gauge("aigc_model_ready", "1 once the model is loaded", ["model"], multiprocess_mode="min")
MODEL_PULL = Gauge("aigc_model_pull_seconds", "Seconds this instance spent pulling the model from AIGC_MODEL_REMOTE",
                   ["model"], multiprocess_mode="max")
MODEL_PULL_BYTES = Gauge("aigc_model_pull_bytes", "Bytes this instance downloaded pulling the model",
                         ["model"], multiprocess_mode="max")


def observe(route: str, method: str, code: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(code)).inc()
    LATENCY.labels(route, method, str(code)).observe(seconds)


def exposition() -> tuple[bytes, str]:
    if _MULTIPROC:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
