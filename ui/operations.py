"""Operations over the gateway's REST API: a function's logs, secrets, and cron schedules.

Logs are OpenFaaS' `GET /system/logs` (newline-delimited JSON), passed on as
they come so a followed log grows in the page; the filter is a plain
substring applied here, before lines reach the browser. Secrets are
write-only, as on OpenFaaS: the API lists names, never values, and so does
this page. Schedules are the functions carrying cron-connector's
annotations (`topic: cron-function`, `schedule`), with the next and last
runs the local gateway adds to their status.
"""

from __future__ import annotations

import json
import re

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from .gateway import GatewayError, check_name
from .views import gateway

bp = Blueprint("ops", __name__)
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a Kubernetes Secret name (DNS subdomain)
MAX_SECRET = 1 << 20  # the gateway's (and a Kubernetes Secret's) limit, checked before sending
MAX_TAIL, MAX_FILTER = 10_000, 200
SINCE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")
NEXT_RUN, LAST_RUN, LAST_STATUS = ("com.aigc-functions.schedule." + k for k in ("next-run", "last-run", "last-status"))


# --- logs ----------------------------------------------------------------------------------
@bp.get("/functions/<name>/logs")
def logs_page(name):
    return render_template("logs.html", name=check_name(name))


@bp.get("/api/functions/<name>/logs")
def logs(name):
    tail = request.args.get("tail", "200")
    if not tail.isdigit() or not 1 <= int(tail) <= MAX_TAIL:
        raise GatewayError(400, f"tail must be a whole number from 1 to {MAX_TAIL}, got {tail!r}")
    since = request.args.get("since") or None
    if since and not SINCE.fullmatch(since):
        raise GatewayError(400, f"since must be an RFC 3339 time such as 2026-01-31T12:00:00Z, got {since!r}")
    needle = request.args.get("filter", "")
    if len(needle) > MAX_FILTER:
        raise GatewayError(400, f"the filter holds at most {MAX_FILTER} characters")
    follow = request.args.get("follow") in ("1", "true")
    upstream = gateway().logs(check_name(name), int(tail), since, follow)

    def lines():
        try:
            for raw in upstream.iter_lines(chunk_size=None):
                if not raw:
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if needle.lower() in str(entry.get("text", "")).lower():
                    yield (json.dumps(entry) + "\n").encode()  # bytes: direct_passthrough skips encoding
        finally:
            upstream.close()  # the page left: the gateway ends its follow

    return Response(lines(), content_type="application/x-ndjson", headers={"X-Accel-Buffering": "no"},
                    direct_passthrough=True)


# --- secrets -------------------------------------------------------------------------------
@bp.get("/secrets")
def secrets():
    names = sorted(s.get("name", "") for s in gateway().secrets())
    return render_template("secrets.html", names=names, errors={}, values={})


@bp.post("/secrets")
def write_secret():
    name, value = request.form.get("name", "").strip(), request.form.get("value", "")
    errors = {}
    if not SECRET_NAME.fullmatch(name):
        errors["name"] = ("a secret name is lowercase letters, digits, '-' and '.', starting and ending with a "
                          f"letter or digit, at most 253 characters; got {name!r}")
    if not value:
        errors["value"] = "give the secret a value"
    elif len(value.encode()) > MAX_SECRET:
        errors["value"] = f"a secret holds at most {MAX_SECRET} bytes (1 MiB); this one has {len(value.encode())}"
    gw = gateway()
    names = sorted(s.get("name", "") for s in gw.secrets())
    if not errors:
        try:
            gw.write_secret(name, value, create=name not in names)
        except GatewayError as exc:
            if exc.status not in (400, 409, 413):
                raise
            errors["name" if exc.status != 413 else "value"] = exc.message
    if errors:
        return render_template("secrets.html", names=names, errors=errors, values={"name": name}), 400
    flash(f"Secret {name} {'updated' if name in names else 'created'}; functions that use it read it at their "
          "next call (or restart, per function).", "ok")
    return redirect(url_for(".secrets"))


@bp.post("/secrets/<name>/delete")
def delete_secret(name):
    if not SECRET_NAME.fullmatch(name):
        raise GatewayError(400, f"{name!r} is not a secret name")
    gateway().delete_secret(name)
    flash(f"Secret {name} deleted.", "ok")
    return redirect(url_for(".secrets"))


# --- schedules -----------------------------------------------------------------------------
@bp.get("/schedules")
def schedules():
    rows = []
    for fn in sorted(gateway().functions(), key=lambda f: f.get("name", "")):
        notes = fn.get("annotations") or {}
        if notes.get("topic") != "cron-function":
            continue
        rows.append({"name": fn.get("name", ""), "schedule": notes.get("schedule", ""),
                     "next": notes.get(NEXT_RUN, ""), "last": notes.get(LAST_RUN, ""),
                     "status": notes.get(LAST_STATUS, ""), "replicas": fn.get("availableReplicas", 0)})
    return render_template("schedules.html", rows=rows)
