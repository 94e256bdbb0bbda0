"""The web UI: a Flask app over a gateway's REST API and the model store, served by gunicorn.

    python -m ui.app [--host 127.0.0.1] [--port 8000] [--gateway http://127.0.0.1:8080]

Settings: ui/config.py (AIGC_UI_* environment variables). Errors never show a
traceback: gateway trouble becomes a page that says what happened and where.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from flask import Flask, flash, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from aigc.runtime import errors as runtime_errors
from aigc.throttle import Throttle

from . import invoke, jobs, operations, pages, security, views
from .config import Config, ConfigError
from .gateway import GatewayError, GatewayUnauthorized, GatewayUnreachable

log = logging.getLogger("aigc.ui")
HERE = Path(__file__).resolve().parent


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.headers.get("X-Requested-With") == "fetch"


def _error(status: int, title: str, message: str, **extra):
    if _wants_json():
        return jsonify(dict(extra, error=message)), status
    return render_template("error.html", status=status, title=title, message=message, **extra), status


def _register_errors(app: Flask) -> None:
    @app.errorhandler(GatewayUnreachable)
    def unreachable(exc):
        return _error(502, "Gateway not reachable",
                      f"The gateway at {exc.url} is not reachable ({exc.reason}). Start it (e.g. `aigc up`) "
                      f"or point the UI at the right one with AIGC_UI_GATEWAY.", gateway_down=True)

    @app.errorhandler(GatewayUnauthorized)
    def unauthorized(exc):
        security.log_out()  # the stored credentials no longer work (password changed, gateway replaced)
        message = "The gateway refused the saved credentials. Log in again."
        if _wants_json():
            return jsonify({"error": message, "login": url_for("auth.login")}), 401
        flash(message, "error")
        return redirect(url_for("auth.login"))

    @app.errorhandler(GatewayError)
    def gateway_error(exc):
        if request.method == "POST" and not _wants_json():
            # a form that failed: say why on the page it came from, beside the field when one is at fault
            flash(exc.message, f"error field-{exc.field}" if getattr(exc, "field", None) else "error")
            args = request.view_args or {}
            if args.get("run_id"):
                return redirect(url_for("jobs.run", run_id=args["run_id"]))
            name = args.get("name")
            return redirect(url_for("functions.detail", name=name) if name and exc.status != 404
                            else url_for("functions.index"))
        return _error(exc.status if 400 <= exc.status < 600 else 502, f"The gateway answered {exc.status}",
                      exc.message)

    @app.errorhandler(runtime_errors.ModelNotFound)
    def not_found(exc):
        return _error(404, "Not found", str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return _error(exc.code or 500, f"{exc.code} {exc.name}", exc.description or exc.name)

    @app.errorhandler(Exception)
    def crashed(exc):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "Internal error", "Something went wrong inside the UI; the details are in its log.")


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config.update(AIGC=config, SECRET_KEY=config.secret_key, MAX_CONTENT_LENGTH=config.max_upload,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=config.secure_cookie, SESSION_COOKIE_NAME="aigc_ui",
                      TEMPLATES_AUTO_RELOAD=False)
    app.extensions["aigc_logins"] = security.LoginStore(config.session_idle)
    # its own backoff, below the gateway's (10 a minute per address): the gateway sees every UI login come
    # from the UI's address, so wrong guesses from one browser would otherwise lock the UI out of it
    app.extensions["aigc_login_throttle"] = (Throttle(max_failures=5), Throttle(max_failures=9))  # client, all
    app.before_request(security.check_request)
    app.after_request(security.secure_headers)
    app.jinja_env.globals.update(csrf_token=security.csrf_token)

    @app.context_processor
    def page_globals():
        return {"gateway_url": config.gateway, "logged_in": bool(session.get("sid"))}

    @app.get("/healthz")
    def health():
        return "OK"

    for bp in (pages.auth, views.bp, invoke.bp, pages.store, jobs.bp, operations.bp):
        app.register_blueprint(bp)
    _register_errors(app)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aigc ui", description="Web UI for an OpenFaaS-compatible gateway")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    parser.add_argument("--gateway", default=None, help="gateway URL (default $AIGC_UI_GATEWAY or "
                                                        "http://127.0.0.1:8080)")
    parser.add_argument("--threads", type=int, default=16, help="request threads; each open text stream "
                                                                "holds one (default 16)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = Config.from_env(**({"gateway": args.gateway} if args.gateway else {}))
    except ConfigError as exc:
        print(f"aigc ui: {exc}", file=sys.stderr)
        return 2
    if config.secret_key_generated:
        print("aigc ui: AIGC_UI_SECRET_KEY is not set; using a random key, so cookies from before a restart "
              "are ignored (logins never survive a restart: they are kept in memory)", file=sys.stderr)
    app = create_app(config)

    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            # one worker: logins live in this process's memory; threads serve polls and streams side by side
            for key, value in {"bind": f"{args.host}:{args.port}", "workers": 1, "worker_class": "gthread",
                               "threads": args.threads, "timeout": 60, "graceful_timeout": 5,
                               "errorlog": "-", "loglevel": "info"}.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    print(f"aigc ui: http://{args.host}:{args.port}  gateway: {config.gateway}", flush=True)
    Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
