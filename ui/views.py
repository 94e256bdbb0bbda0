"""Functions: the list, one function's page, scaling, labels, deploy and remove."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, url_for

from . import catalog, metrics
from .gateway import Gateway, GatewayError, check_name

bp = Blueprint("functions", __name__)
MIN_LABEL, MAX_LABEL = "com.openfaas.scale.min", "com.openfaas.scale.max"
MAX_REPLICAS = 100  # a typo like 1000 would start a thousand processes on the local gateway


def config():
    return current_app.config["AIGC"]


def gateway() -> Gateway:
    c = config()
    return Gateway(c.gateway, (g.login.user, g.login.password), c.timeout, c.invoke_timeout)


def _rows(gw: Gateway, only: str | None = None) -> tuple[list[dict], str | None]:
    statuses = [gw.function(only)] if only else gw.functions()
    note = None
    try:
        scraped = metrics.parse(gw.metrics_text())
    except (GatewayError, ValueError) as exc:
        scraped, note = {}, f"gateway metrics unavailable ({exc}); latency and cold starts are not shown"
    c = config()
    stack, _ = catalog.stack_entries(c.stack_file)
    langs = {fn.image: fn.lang for fn in stack.values()}
    cards = {card.get("name"): card for card in gw.models() or []}
    previous = g.login.previous_buckets
    rows = []
    for status in sorted(statuses, key=lambda s: s.get("name", "")):
        name = status.get("name", "")
        m = scraped.get(name)
        summary = metrics.summary(m, previous.get(name))
        if m is not None:
            previous[name] = dict(m.buckets)
        env = status.get("envVars") or {}
        labels = status.get("labels") or {}
        image = status.get("image", "")
        # image-generate serves several (MODEL_NAMES, the first the default); the others one (MODEL_NAME)
        model = env.get("MODEL_NAME") or (env.get("MODEL_NAMES") or "").split(",")[0].strip() or None
        rows.append(dict(summary, name=name, image=image,
                         engine=_engine(langs.get(image), env.get("AIGC_ENGINE"), image),
                         model=model, kind=catalog.kind(cards.get(model)),
                         adapters=(cards.get(model) or {}).get("adapters") or [],
                         replicas=status.get("replicas", 0), available=status.get("availableReplicas", 0),
                         invocations=int(status.get("invocationCount") or summary["invocations"]),
                         min=labels.get(MIN_LABEL, ""), max=labels.get(MAX_LABEL, ""),
                         labels=labels, env=env, annotations=status.get("annotations") or {},
                         created=status.get("createdAt", ""),
                         cost=_cost(gw.metering(name)) if only else {}))
    return rows, note


def _cost(metering) -> dict[str, str]:
    """The gateway's metering extension (docs/metering.md) as display strings; empty from a gateway without it."""
    try:
        usage, cost = metering["usage"], metering["cost"]
        per_call = cost["per_invocation"]
        return {"memory": f"{usage['memory_gb_seconds']:.1f} GB-s ({usage['busy_gb_seconds']:.1f} busy)",
                "cpu": f"{usage['cpu_seconds']:.1f} s",
                "total": f"${cost['total']:.6f}",
                "per_invocation": "—" if per_call is None else f"${per_call:.8f}",
                "prices": str(cost["prices"].get("source", "")),
                "keepalive": _keepalive(metering.get("keepalive")),
                "windows": _windows(metering.get("keepalive")),
                "held": _held(metering.get("capacity"))}
    except (KeyError, TypeError, ValueError):
        return {}


def _windows(k) -> dict[str, float] | None:
    """The keep-alive windows as shares of a timeline from a call's end to the last replica's unload
    (for the function page's strip); None when there is nothing to draw."""
    if not isinstance(k, dict):
        return None
    prewarm, keep = float(k.get("prewarm_seconds") or 0), float(k.get("keepalive_seconds") or 0)
    if keep <= 0:
        return None
    end = prewarm + keep
    return {"prewarm": prewarm / end, "keep": keep / end, "prewarm_min": prewarm / 60, "end_min": end / 60}


def _held(c) -> str:
    """Replicas the gateway holds back while the cores are full (docs/metering.md), in words."""
    if not isinstance(c, dict) or not c.get("held"):
        return ""
    return f"{c['held']} more replica(s) wanted, not started: {c.get('reason') or 'the cores are full'}"


def _keepalive(k) -> str:
    """How long an idle replica stays, from the gateway's keep-alive windows (docs/metering.md)."""
    if not isinstance(k, dict):
        return ""
    minutes = lambda s: f"{s / 60:.1f} min"  # noqa: E731
    if not k.get("learned"):
        waiting = " (learning: fixed until enough idle times)" if k.get("policy") == "adaptive" else ""
        return f"{k.get('policy')}: kept {minutes(k.get('keepalive_seconds', 0))} after a call{waiting}"
    prewarm = (f"unloaded, back after {minutes(k['prewarm_seconds'])}, then " if k.get("prewarm_seconds") else "")
    return (f"adaptive, from {k.get('idle_times_seen')} idle times: {prewarm}kept "
            f"{minutes(k.get('keepalive_seconds', 0))}")


def _engine(lang: str | None, engine: str | None, image: str) -> str:
    """The stack entry's template (matched by image, as the local gateway resolves images), plus the
    engine a template was told to use (AIGC_ENGINE) when it serves several; the image name otherwise."""
    base = lang or image.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{base} · {engine}" if engine and engine not in base else base


@bp.get("/")
def index():
    rows, note = _rows(gateway())
    return render_template("functions.html", rows=rows, note=note)


@bp.get("/api/functions")
def api_functions():
    rows, note = _rows(gateway())
    return jsonify({"time": time.time(), "functions": rows, "note": note})


@bp.get("/functions/<name>")
def detail(name):
    rows, note = _rows(gateway(), only=check_name(name))
    fn = rows[0]
    # what a text-generation function answers to: its base model, and `base:adapter` for each adapter
    served = [fn["model"]] + [f"{fn['model']}:{a}" for a in fn["adapters"]] if fn["kind"] == "chat" else []
    return render_template("function.html", fn=fn, note=note, served=served, max_replicas=MAX_REPLICAS)


@bp.get("/api/functions/<name>")
def api_function(name):
    rows, note = _rows(gateway(), only=check_name(name))
    return jsonify({"time": time.time(), "function": rows[0], "note": note})


def _int_field(key: str, low: int, high: int) -> int:
    raw = request.form.get(key, "").strip()
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise GatewayError(400, f"{key} must be a whole number from {low} to {high}, got {raw!r}", field=key)
    return int(raw)


@bp.post("/functions/<name>/scale")
def scale(name):
    replicas = _int_field("replicas", 0, MAX_REPLICAS)
    gateway().scale(check_name(name), replicas)
    flash(f"Asked the gateway for {replicas} replica(s) of {name}.", "ok")
    return redirect(url_for(".detail", name=name))


@bp.post("/functions/<name>/limits")
def limits(name):
    low, high = _int_field("min", 0, MAX_REPLICAS), _int_field("max", 1, MAX_REPLICAS)
    if low > high:
        raise GatewayError(400, f"min ({low}) must not exceed max ({high})", field="max")
    gw = gateway()
    current = gw.function(check_name(name))
    # PUT replaces the whole deployment, so send back everything it has now with only the labels changed
    body = {"service": name, "image": current.get("image", ""), "envVars": current.get("envVars") or {},
            "labels": dict(current.get("labels") or {}, **{MIN_LABEL: str(low), MAX_LABEL: str(high)}),
            "annotations": current.get("annotations") or {}, "secrets": current.get("secrets") or []}
    for key in ("limits", "requests", "envProcess", "constraints"):
        if current.get(key):
            body[key] = current[key]
    gw.deploy(body, update=True)
    flash(f"{name}: scaling labels set to min {low}, max {high} (the gateway redeploys it).", "ok")
    return redirect(url_for(".detail", name=name))


@bp.post("/functions/<name>/remove")
def remove(name):
    gateway().remove(check_name(name))
    flash(f"Removed {name}.", "ok")
    return redirect(url_for(".index"))


@bp.get("/deploy")
def deploy_page():
    entries, problem = catalog.stack_entries(config().stack_file)
    deployed = {f.get("name") for f in gateway().functions()}
    return render_template("deploy.html", entries=[(fn, catalog.deployment(fn)) for fn in entries.values()],
                           deployed=deployed, problem=problem, stack_file=config().stack_file)


@bp.post("/deploy/<name>")
def deploy(name):
    entries, problem = catalog.stack_entries(config().stack_file)
    if name not in entries:
        raise GatewayError(404, problem or f"{name!r} is not in {config().stack_file}")
    gateway().deploy(catalog.deployment(entries[name]))
    flash(f"Deployed {name} from {config().stack_file.name}.", "ok")
    return redirect(url_for(".detail", name=name))


@bp.get("/functions/<name>/compare")
def compare(name):
    """One prompt to the base model and to one or two of its adapters, the answers streamed side by side."""
    fn = _rows(gateway(), only=check_name(name))[0][0]
    if fn["kind"] != "chat":
        raise GatewayError(400, f"{name} does not generate text: only a text-generation function has adapters")
    return render_template("compare.html", fn=fn, adapters=[f"{fn['model']}:{a}" for a in fn["adapters"]])
