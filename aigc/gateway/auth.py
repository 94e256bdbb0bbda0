"""Basic auth for /system/* (user admin), compared in constant time, with a backoff for wrong guesses.

After too many wrong tries from one address (aigc.throttle) that address gets
429 with Retry-After until the window has passed, right password or not.
"""

from __future__ import annotations

import hmac
import time

import aiohttp
from aiohttp import web

from ..throttle import Throttle
from .http import GATEWAY, error

__all__ = ["Throttle", "make_middleware", "needs_auth"]

def needs_auth(request: web.Request) -> bool:
    return request.path.startswith("/system/") or (request.method == "DELETE" and
                                                   request.path.startswith("/async-function/"))


def make_middleware(throttle: Throttle):
    @web.middleware
    async def basic_auth(request: web.Request, handler):
        if not needs_auth(request):
            return await handler(request)
        gw = request.app[GATEWAY]
        address, now = request.remote or "", time.monotonic()
        wait = throttle.blocked_for(address, now)
        if wait > 0:
            return error(429, f"too many wrong passwords from {address}; try again in {wait:.0f}s",
                         **{"Retry-After": str(int(wait) + 1)})
        try:
            creds = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            creds = None
        # compare_digest on bytes: same time whatever the guess shares with the password
        good = creds is not None and hmac.compare_digest(creds.login.encode(), b"admin") & \
            hmac.compare_digest(creds.password.encode(), gw.password.encode())
        if not good:
            if creds is not None:
                throttle.failed(address, now)
            return error(401, "basic auth required: user admin, password in $AIGC_STATE_DIR/secrets/"
                              "basic-auth-password", **{"WWW-Authenticate": 'Basic realm="OpenFaaS API"'})
        return await handler(request)

    return basic_auth
