"""Basic auth for /system/* (user admin), compared in constant time, with a backoff for wrong guesses.

After `MAX_FAILURES` wrong tries from one address within `WINDOW` seconds,
that address gets 429 with Retry-After until the window has passed, right
password or not, so the password cannot be guessed at request speed. The
table of addresses is bounded (oldest forgotten first).
"""

from __future__ import annotations

import collections
import hmac
import time

import aiohttp
from aiohttp import web

from .http import GATEWAY, error

MAX_FAILURES = 10
WINDOW = 60.0
MAX_ADDRESSES = 4096


class Throttle:
    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW):
        self.max_failures, self.window = max_failures, window
        self._failures: collections.OrderedDict[str, list[float]] = collections.OrderedDict()

    def blocked_for(self, address: str, now: float) -> float:
        recent = [t for t in self._failures.get(address, ()) if t > now - self.window]
        if len(recent) < self.max_failures:
            return 0.0
        return recent[0] + self.window - now

    def failed(self, address: str, now: float) -> None:
        recent = [t for t in self._failures.pop(address, ()) if t > now - self.window][-self.max_failures:]
        self._failures[address] = recent + [now]
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)


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
