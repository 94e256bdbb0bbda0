"""What every gateway route shares: JSON errors, JSON bodies, the one namespace, the gateway object."""

from __future__ import annotations

import json

from aiohttp import web

from .core import Gateway
from .deploy import NAMESPACE

GATEWAY = web.AppKey("gateway", Gateway)


def error(status: int, message: str, **headers) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class JSONError(web.HTTPException):
    """An error response from deep inside a handler, with the gateway's `{"error": …}` body."""

    def __init__(self, status: int, message: str):
        self.status_code = status
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


async def read_json(request: web.Request):
    try:
        return json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JSONError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise JSONError(400, "malformed JSON: nested too deeply") from None


def check_namespace(namespace) -> None:
    """This gateway has one namespace, openfaas-fn; naming any other is a 404, on every route."""
    if namespace not in (None, "", NAMESPACE):
        raise JSONError(404, f"namespace {namespace!r} does not exist here; the only one is {NAMESPACE!r} "
                             "(GET /system/namespaces)")


@web.middleware
async def json_errors(request: web.Request, handler):
    """aiohttp's own 404/405/413 answers are plain text; OpenFaaS clients expect JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status_code < 400:
            raise
        return error(exc.status_code, exc.reason if not exc.text or exc.text.startswith(str(exc.status_code))
                     else exc.text, **{k: v for k, v in exc.headers.items() if k.lower() == "allow"})
