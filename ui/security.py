"""Logins, CSRF tokens and response headers.

The gateway's basic-auth credentials are the login. They are kept in this
process's memory, keyed by a random session id; the browser's cookie (signed
with the secret key, HttpOnly) holds only that id and the CSRF token, so a
password is never in a cookie, a page or on disk. The cost: logins do not
survive a restart of the UI, and the UI runs one worker process (with threads).

CSRF: every session gets a random token. Forms carry it as `csrf_token`; fetch()
calls send it as the `X-CSRF-Token` header. Every POST/PUT/PATCH/DELETE,
the login form included, is refused with 400 unless it matches.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from flask import abort, current_app, g, jsonify, redirect, request, session, url_for

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PUBLIC_ENDPOINTS = {"auth.login", "static", "health"}

# scripts and styles only from our own files, so injected markup could not run even if escaping failed
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@dataclass
class Login:
    user: str
    password: str
    last_seen: float = field(default_factory=time.monotonic)
    previous_buckets: dict = field(default_factory=dict)  # per function: the last poll's histogram


class LoginStore:
    def __init__(self, idle_seconds: float):
        self.idle = idle_seconds
        self._logins: dict[str, Login] = {}
        self._lock = threading.Lock()

    def add(self, user: str, password: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            self._logins[sid] = Login(user, password)
        return sid

    def get(self, sid: str | None) -> Login | None:
        if not sid:
            return None
        with self._lock:
            login = self._logins.get(sid)
            if login is None or time.monotonic() - login.last_seen > self.idle:
                self._logins.pop(sid, None)
                return None
            login.last_seen = time.monotonic()
            return login

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._logins.pop(sid or "", None)

    def _prune(self) -> None:
        now = time.monotonic()
        for sid in [s for s, login in self._logins.items() if now - login.last_seen > self.idle]:
            del self._logins[sid]


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.headers.get("X-Requested-With") == "fetch"


def check_request():
    """before_request: CSRF on state-changing verbs, then a login for everything not public."""
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
        expected = session.get("csrf", "")
        if not expected or not sent or not hmac.compare_digest(sent, expected):
            abort(400, description="The form's security token (CSRF) is missing or out of date. "
                                   "Reload the page and try again.")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    login = current_app.extensions["aigc_logins"].get(session.get("sid"))
    if login is None:
        if _wants_json():
            return jsonify({"error": "not logged in", "login": url_for("auth.login")}), 401
        wanted = request.full_path if request.query_string else request.path
        return redirect(url_for("auth.login", next=wanted if request.method == "GET" else None))
    g.login = login
    return None


def log_in(user: str, password: str) -> None:
    logins = current_app.extensions["aigc_logins"]
    logins.drop(session.get("sid"))
    session.clear()  # a fresh id and token after login: a token seen before login is worth nothing after
    session["sid"] = logins.add(user, password)
    csrf_token()


def log_out() -> None:
    current_app.extensions["aigc_logins"].drop(session.get("sid"))
    session.clear()


# a path of this site: "/" then URL characters only. Browsers drop tabs and newlines from URLs, so
# "/\t/evil.example" would become "//evil.example" (another site) if whitespace were let through
_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


def safe_next(target: str | None) -> str:
    """Only same-site paths after login: an absolute URL here would be an open redirect."""
    if target and _LOCAL_PATH.fullmatch(target) and "//" not in target.split("?", 1)[0]:
        return target
    return url_for("functions.index")


def secure_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")  # pages show live state and per-user data
    return response
