"""The gateway's HTTP API: OpenFaaS REST paths, verbs, bodies and status codes.

/system/* needs basic auth (user admin). /function/NAME[/path] proxies any
verb with query and subpath to a ready replica, streaming both ways, so
text/event-stream passes through unbuffered. Every call carries an X-Call-Id.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
from aiohttp import web

from . import auth, deploy, system, targets
from .asyncq import DuplicateCall, QueueFull, QueueUnavailable
from .core import Gateway, forward_headers
from .deploy import DeployError
from .http import GATEWAY, JSONError, check_namespace, error, json_errors, read_json as _json
from .pool import NoReplica

SMALL_BODY = 1 << 20  # responses up to this are read whole: faster than streaming for typical answers


async def read_body(request: web.Request, gw: Gateway) -> bytes:
    """The request body, whole, within the gateway's body deadline and its client_max_size (413)."""
    try:
        return await asyncio.wait_for(request.read(), gw.options.body_timeout)
    except asyncio.TimeoutError:
        raise JSONError(408, f"the request body did not arrive within {gw.options.body_timeout:.0f}s") from None


def _function_name(request: web.Request, invocation: bool = False) -> str:
    """NAME or NAME.NAMESPACE from the path (and, on /system routes, ?namespace=), checked against
    the one namespace. An invocation's query string belongs to the function, so it is not read."""
    name, _, namespace = request.match_info["name"].partition(".")
    check_namespace(namespace)
    if not invocation:
        check_namespace(request.query.get("namespace"))
    return name


def _status(gw: Gateway, name: str) -> dict:
    pool = gw.pools[name]
    status = pool.deployment.status(len(pool.active), len(pool.ready), pool.invocations,
                                      gw.schedule_annotations(name))
    if gw.metered:  # the spec's FunctionUsage: CPU millicores and RSS at the last sample
        status["usage"] = gw.meter.current(name)
    return status


# --- /system ---------------------------------------------------------------
async def list_functions(request):
    gw = request.app[GATEWAY]
    check_namespace(request.query.get("namespace"))
    return web.json_response([_status(gw, n) for n in sorted(gw.pools)])


async def get_function(request):
    gw = request.app[GATEWAY]
    name = _function_name(request)
    if name not in gw.pools:
        return error(404, f"function {name!r} not found")
    return web.json_response(_status(gw, name))


async def deploy_function(request):
    gw = request.app[GATEWAY]
    replace = request.method == "PUT"
    body = await _json(request)
    check_namespace(body.get("namespace") if isinstance(body, dict) else None)
    try:
        deployment = deploy.from_request(body, gw.stack, runs_images=gw.runs_images,
                                         max_replicas=gw.options.max_replicas)
        if replace and deployment.name not in gw.pools:
            return error(404, f"function {deployment.name!r} not found; deploy it with POST")
        await gw.deploy(deployment, replace=replace)
    except DeployError as exc:
        return error(400, str(exc))
    return web.Response(status=200 if replace else 202)


async def delete_function(request):
    gw = request.app[GATEWAY]
    body = await _json(request)
    check_namespace(request.query.get("namespace"))
    check_namespace(body.get("namespace") if isinstance(body, dict) else None)
    name = body.get("functionName") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        return error(400, "body must be {\"functionName\": NAME}")
    if not await gw.remove(name):
        return error(404, f"function {name!r} not found")
    return web.Response(status=200)


async def scale_function(request):
    gw = request.app[GATEWAY]
    name = _function_name(request)
    if name not in gw.pools:
        return error(404, f"function {name!r} not found")
    body = await _json(request)
    check_namespace(body.get("namespace") if isinstance(body, dict) else None)
    replicas = body.get("replicas") if isinstance(body, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        return error(400, "body must be {\"serviceName\": NAME, \"replicas\": N} with N >= 0")
    if body.get("serviceName") not in (None, name):
        return error(400, f"serviceName {body.get('serviceName')!r} does not match the path's {name!r}")
    gw.scale(name, replicas)
    return web.Response(status=202)


async def healthz(request):
    return web.Response(text="OK")


async def metrics(request):
    return web.Response(body=request.app[GATEWAY].metrics.exposition(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


# --- invocation ----------------------------------------------------------------
async def invoke(request: web.Request):
    gw = request.app[GATEWAY]
    name = _function_name(request, invocation=True)
    if name not in gw.pools:
        return error(404, f"function {name!r} not found")
    call_id = request.headers.get("X-Call-Id") or str(uuid.uuid4())
    started = time.monotonic()
    code = 500
    # the whole body first, under a deadline, and only then a replica: a client that sends slowly holds
    # a cheap coroutine here, never one of the function's slots (finding: slow uploads denied service)
    data = await read_body(request, gw)
    try:
        pool, replica = await gw.acquire(name)
    except NoReplica as exc:
        gw.observe(name, exc.status, time.monotonic() - started)
        return error(exc.status, str(exc), **{"X-Call-Id": call_id})
    response = None
    try:
        headers = forward_headers(request.headers)
        headers.update({"X-Call-Id": call_id, "X-Forwarded-Host": request.host,
                        "X-Start-Time": str(time.time_ns())})
        url = replica.url + "/" + request.match_info.get("path", "") + (f"?{request.query_string}" if request.query_string else "")
        timeout = aiohttp.ClientTimeout(total=gw.options.upstream_timeout)
        async with gw.session.request(request.method, url, data=data, headers=headers, timeout=timeout,
                                      allow_redirects=False) as upstream:
            out = forward_headers(upstream.headers)
            out["X-Call-Id"] = call_id
            code = upstream.status
            small = upstream.content_length is not None and upstream.content_length <= SMALL_BODY
            if small and not upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
                body = await upstream.read()
                out["X-Duration-Seconds"] = f"{time.monotonic() - started:.6f}"
                return web.Response(body=body, status=code, headers=out)
            response = web.StreamResponse(status=code, headers=out)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
        code = 504 if isinstance(exc, asyncio.TimeoutError) else 502
        if response is not None and response.prepared:
            raise  # headers already sent: the only honest signal left is a broken stream
        return error(code, f"replica {replica.index} of {name!r} failed: {type(exc).__name__}: {exc}",
                     **{"X-Call-Id": call_id})
    finally:
        await pool.release(replica)
        gw.observe(name, code, time.monotonic() - started)


async def invoke_async(request: web.Request):
    gw = request.app[GATEWAY]
    name = _function_name(request, invocation=True)
    if name not in gw.pools:
        return error(404, f"function {name!r} not found")
    body = await read_body(request, gw)
    headers = dict(request.headers)
    path = "/" + request.match_info.get("path", "")
    try:
        call_id = await asyncio.to_thread(gw.accept_async, name, path, request.query_string, headers, body)
    except QueueFull as exc:
        return error(429, str(exc), **{"Retry-After": "5"})
    except DuplicateCall as exc:
        return error(409, f"{exc}; give each call its own X-Call-Id")
    except QueueUnavailable as exc:
        return error(exc.status, str(exc), **{"Retry-After": "5"})
    return web.Response(status=202, headers={"X-Call-Id": call_id})


async def cancel_async(request: web.Request):
    gw = request.app[GATEWAY]
    if await asyncio.to_thread(gw.queue.cancel, request.match_info["call_id"]):
        gw.call_ended(request.match_info["call_id"])
        return web.Response(status=202)
    return error(404, "no queued call with that X-Call-Id (unknown, running or finished)")


async def get_metering(request):
    """An extension (docs/metering.md): every function's metered totals and cost, or one function's."""
    gw = request.app[GATEWAY]
    if not gw.metered:
        return error(501, "replicas run as containers here (--runtime podman): they are not metered")
    name = request.match_info.get("name")
    if name is None:
        return web.json_response({"functions": {n: _metering(gw, n) for n in gw.pools}})
    name = _function_name(request)
    if name not in gw.pools:
        return error(404, f"function {name!r} not found")
    return web.json_response(_metering(gw, name))


def _metering(gw: Gateway, name: str) -> dict:
    pool = gw.pools[name]
    policy, windows = pool.deployment.policy, pool.windows()
    return dict(gw.meter.report(name), keepalive={
        "policy": policy.keepalive, "idle_times_seen": pool.idle_times.samples,
        "learned": bool(windows and windows.learned),
        "prewarm_seconds": windows.prewarm if windows else 0.0,
        "keepalive_seconds": windows.keepalive if windows else policy.zero_duration},
        capacity={"cpu_aware": gw.options.cpu_aware, "budget_cores": gw.cpu_budget, "held": pool.held,
                  "reason": pool.cpu_hold.reason() if pool.cpu_hold else None})


def create_app(gateway: Gateway, max_body: int = 64 << 20) -> web.Application:
    app = web.Application(middlewares=[json_errors, auth.make_middleware(auth.Throttle())],
                          client_max_size=max_body)
    app[GATEWAY] = gateway
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    system.add_routes(app)
    targets.add_routes(app)  # /system/prometheus-targets: replicas for Prometheus' http_sd
    app.router.add_get("/system/functions", list_functions)
    app.router.add_post("/system/functions", deploy_function)
    app.router.add_put("/system/functions", deploy_function)
    app.router.add_delete("/system/functions", delete_function)
    app.router.add_get("/system/function/{name}", get_function)
    app.router.add_get("/system/metering", get_metering)
    app.router.add_get("/system/metering/{name}", get_metering)
    app.router.add_post("/system/scale-function/{name}", scale_function)
    app.router.add_route("*", "/function/{name}", invoke)
    app.router.add_route("*", "/function/{name}/{path:.*}", invoke)
    app.router.add_post("/async-function/{name}", invoke_async)
    app.router.add_post("/async-function/{name}/{path:.*}", invoke_async)
    app.router.add_delete("/async-function/{call_id}", cancel_async)
    return app
