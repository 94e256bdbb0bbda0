"""Login and logout, and the models and adapters of the gateway's store (GET /system/models)."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from . import catalog, security
from .gateway import Gateway, GatewayError, GatewayUnauthorized
from .views import gateway

auth = Blueprint("auth", __name__)
store = Blueprint("store", __name__)


def config():
    return current_app.config["AIGC"]


@auth.route("/login", methods=["GET", "POST"])
def login():
    c = config()
    if request.method == "GET":
        return render_template("login.html", gateway=c.gateway, next=request.args.get("next", ""))
    user, password = request.form.get("user", "").strip(), request.form.get("password", "")
    per_client, overall = current_app.extensions["aigc_login_throttle"]
    address, now = request.remote_addr or "", time.monotonic()
    wait = max(per_client.blocked_for(address, now), overall.blocked_for("", now))
    if wait > 0:
        flash(f"Too many wrong passwords (from {address}, or through this UI); try again in {wait:.0f} s.", "error")
        page = render_template("login.html", gateway=c.gateway, next=request.form.get("next", ""), user=user)
        return page, 429, {"Retry-After": str(int(wait) + 1)}
    if not user or not password:
        flash("Enter the gateway's user and password.", "error")
        return render_template("login.html", gateway=c.gateway, next=request.form.get("next", ""), user=user), 400
    try:
        # /system/info needs basic auth on OpenFaaS and on `aigc up`: a cheap way to check the pair
        Gateway(c.gateway, (user, password), c.timeout).info()
    except GatewayUnauthorized:
        per_client.failed(address, now)
        overall.failed("", now)
        flash(f"The gateway at {c.gateway} refused that user and password.", "error")
        return render_template("login.html", gateway=c.gateway, next=request.form.get("next", ""), user=user), 401
    except GatewayError as exc:
        flash(f"The gateway at {c.gateway} answered {exc.status}: {exc.message}", "error")
        return render_template("login.html", gateway=c.gateway, next=request.form.get("next", ""), user=user), 502
    security.log_in(user, password)
    return redirect(security.safe_next(request.form.get("next")))


@auth.post("/logout")
def logout():
    security.log_out()
    flash("Logged out.", "ok")
    return redirect(url_for("auth.login"))


@store.get("/models")
def models():
    cards = gateway().models()
    return render_template("models.html", cards=cards or [], available=cards is not None)


@store.get("/models/<name>")
def model(name):
    card = gateway().model(name)
    return render_template("model.html", card=card, metrics=catalog.flatten(card.get("metrics")))
