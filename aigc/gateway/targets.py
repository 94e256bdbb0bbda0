"""`GET /system/prometheus-targets`: the replicas to scrape, in Prometheus' HTTP service discovery format.

Replicas listen on loopback ports the pool picks at each start, so a static scrape list goes stale
with every scale-up, cold start and replacement. Prometheus' `http_sd_configs` polls this route and
scrapes each replica's own `/metrics` (docs/monitoring/). Only ready replicas are listed: a starting
one may not be listening yet, and a stopping one is about to go, so either would show as a target down.

The labels are `__meta_aigc_*`, as Prometheus' own discovery mechanisms name theirs: they are dropped
after relabelling unless the scrape config keeps them, so the config decides the label names (the
committed one maps them to `function_name` and `replica`, the gateway's own label for a function).
Basic auth like the rest of /system (auth.py guards the whole prefix): the list tells where the
replicas listen, and they answer anyone who can reach the port.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from .deploy import NAMESPACE
from .http import GATEWAY, check_namespace


def replica_targets(gw) -> list[dict]:
    """One target group per ready replica: {"targets": ["HOST:PORT"], "labels": {...}}."""
    groups = []
    for name in sorted(gw.pools):
        pool = gw.pools[name]
        for replica in pool.ready:
            address = urlsplit(replica.url)
            if not address.hostname or not address.port:
                continue  # a runtime without a reachable HTTP address has nothing to scrape here
            groups.append({"targets": [f"{address.hostname}:{address.port}"],
                           "labels": {"__meta_aigc_function_name": name,
                                      "__meta_aigc_replica": f"{name}-{replica.index}",
                                      "__meta_aigc_namespace": NAMESPACE,
                                      "__meta_aigc_runtime": gw.launcher.name}})
    return groups


async def prometheus_targets(request: web.Request) -> web.Response:
    check_namespace(request.query.get("namespace"))
    return web.json_response(replica_targets(request.app[GATEWAY]))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/system/prometheus-targets", prometheus_targets)
