"""`/system` routes beyond functions: secrets, logs, namespaces and the provider's info.

Shapes and status codes follow the OpenFaaS gateway's OpenAPI spec and what
faas-cli expects of them: secrets answer 201/200/202 and 409 for a name that
exists (the spec lists 204 for a delete, but faas-cli 0.18 accepts only 200 or
202 there and reports 204 as an error: 202 is what faas-netes answers); logs
stream newline-delimited LogEntry objects; the namespace list has the one
namespace this gateway serves.
"""

from __future__ import annotations

import asyncio
import functools
import json
import platform
import subprocess
from datetime import datetime
from pathlib import Path

from aiohttp import web

from .. import __version__
from . import models
from .deploy import NAMESPACE
from .http import GATEWAY, JSONError, check_namespace, error, read_json
from .secrets import SecretError, parse

FOLLOW_LIMIT = 3600.0  # a followed log stream ends after an hour; faas-cli reconnects with --since


# --- secrets -----------------------------------------------------------------------------
async def list_secrets(request):
    check_namespace(request.query.get("namespace"))
    gw = request.app[GATEWAY]
    return web.json_response([{"name": n, "namespace": NAMESPACE} for n in gw.secrets.names()])


async def write_secret(request):
    gw = request.app[GATEWAY]
    body = await read_json(request)
    check_namespace(body.get("namespace") if isinstance(body, dict) else None)
    create = request.method == "POST"
    try:
        name, data = parse(body)
        await asyncio.to_thread(gw.secrets.write, name, data, create)
    except SecretError as exc:
        return error(exc.status, str(exc))
    gw.secret_changed(name)
    return web.Response(status=201 if create else 200)


async def delete_secret(request):
    gw = request.app[GATEWAY]
    body = await read_json(request)
    check_namespace(body.get("namespace") if isinstance(body, dict) else None)
    try:
        name, _ = parse(body, with_value=False)
        gw.secrets.delete(name)
    except SecretError as exc:
        return error(exc.status, str(exc))
    gw.secret_changed(name)
    return web.Response(status=202)


# --- logs --------------------------------------------------------------------------------------
def _log_query(request) -> tuple[str, str | None, float | None, int, bool]:
    q = request.query
    check_namespace(q.get("namespace"))
    name = q.get("name", "")
    if not name:
        raise JSONError(400, "the query parameter 'name' (the function) is required")
    try:
        tail = int(q.get("tail") or 0)
    except ValueError:
        raise JSONError(400, f"'tail' must be an integer, got {q.get('tail')!r}") from None
    since = None
    if q.get("since"):
        try:
            since = datetime.fromisoformat(q["since"]).timestamp()
        except ValueError:
            raise JSONError(400, f"'since' must be an RFC 3339 time, got {q['since']!r}") from None
    follow = q.get("follow", "false").lower() in ("true", "1")
    return name, q.get("instance") or None, since, tail, follow


async def get_logs(request):
    gw = request.app[GATEWAY]
    name, instance, since, tail, follow = _log_query(request)
    if name not in gw.pools and not gw.logs.known(name):
        return error(404, f"function {name!r} not found")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)

    async def send(line) -> None:
        await response.write((json.dumps(line.entry(name, NAMESPACE)) + "\n").encode())

    if follow:
        following = gw.logs.follow(name, instance)  # registered before the backlog is read: no line falls between
        ends = asyncio.get_running_loop().time() + FOLLOW_LIMIT
        try:
            for line in await asyncio.to_thread(gw.logs.read, name, instance, since, tail):
                await send(line)
            # every few seconds without a line, look whether the client is still there
            while asyncio.get_running_loop().time() < ends and not _gone(request):
                line = await following.next(timeout=2.0)
                if line is not None:
                    await send(line)
        except ConnectionResetError:
            pass
        finally:
            following.close()
    else:
        try:
            for line in await asyncio.to_thread(gw.logs.read, name, instance, since, tail):
                await send(line)
        except ConnectionResetError:
            return response
    try:
        await response.write_eof()
    except ConnectionResetError:  # the client left while we finished: nothing to tell it
        pass
    return response


def _gone(request) -> bool:
    return request.transport is None or request.transport.is_closing()


# --- namespaces and info ----------------------------------------------------------------------------
async def list_namespaces(request):
    return web.json_response([NAMESPACE])


@functools.lru_cache(maxsize=1)
def _git_sha() -> str:
    """The commit this gateway's code comes from, when it runs from a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


async def system_info(request):
    sha = await asyncio.to_thread(_git_sha)
    version = {"sha": sha, "release": __version__, "commit_message": ""}
    return web.json_response({"provider": {"provider": "aigc-local", "orchestration": request.app[GATEWAY].launcher.name,
                                           "version": {"sha": sha, "release": __version__}},
                              "version": version, "arch": platform.machine()})


def add_routes(app: web.Application) -> None:
    models.add_routes(app)
    app.router.add_get("/system/secrets", list_secrets)
    app.router.add_post("/system/secrets", write_secret)
    app.router.add_put("/system/secrets", write_secret)
    app.router.add_delete("/system/secrets", delete_secret)
    app.router.add_get("/system/logs", get_logs)
    app.router.add_get("/system/namespaces", list_namespaces)
    app.router.add_get("/system/info", system_info)
