"""The web UI without a browser: metrics maths, the jobs format, settings, and security against a real gateway.

The gateway is a real `aigc up` process serving the echo test handler; the UI
runs in-process (Flask's test client) or, for streaming, as a real gunicorn process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import requests

from conftest import REPO, free_port
from gateway_helpers import GatewayProcess, write_stack

sys.path.insert(0, str(REPO))  # ui/ is a top-level folder of the repo, not part of the installed package

from aigc.gateway.metrics import GatewayMetrics  # noqa: E402
from ui import catalog, metrics  # noqa: E402
from ui.app import create_app  # noqa: E402
from ui.config import Config, ConfigError  # noqa: E402


# --- metrics: the gateway's real exposition → percentiles ----------------------------------
def test_percentiles_from_the_gateways_own_histogram():
    gm = GatewayMetrics()
    for _ in range(90):
        gm.observe("embed", 200, 0.02)    # bucket (0.01, 0.025]
    for _ in range(10):
        gm.observe("embed", 500, 0.7)     # bucket (0.5, 1]
    gm.cold_starts.labels("embed").inc()
    gm.replicas.labels("embed").set(2)
    gm.available.labels("embed").set(1)
    m = metrics.parse(gm.exposition().decode())["embed"]
    assert (m.invocations, m.errors, m.cold_starts, m.replicas, m.available) == (100, 10, 1, 2, 1)
    # rank 50 of 90 inside (0.01, 0.025]: 0.01 + 0.015 * 50/90
    assert m.quantile(0.5) == pytest.approx(0.01 + 0.015 * 50 / 90)
    # rank 95 is the 5th of 10 observations inside (0.5, 1]
    assert m.quantile(0.95) == pytest.approx(0.5 + 0.5 * 5 / 10)
    assert 0.5 < m.quantile(0.95) <= 1.0 and m.quantile(0.5) < 0.025


def test_recent_latency_uses_only_the_calls_since_the_previous_poll():
    gm = GatewayMetrics()
    for _ in range(50):
        gm.observe("f", 200, 0.003)
    before = metrics.parse(gm.exposition().decode())["f"].buckets
    for _ in range(4):
        gm.observe("f", 200, 3.0)
    now = metrics.parse(gm.exposition().decode())["f"]
    s = metrics.summary(now, before)
    assert s["recent_calls"] == 4 and 2.5 < s["recent_p50"] <= 5
    assert s["p50"] < 0.005  # all-time median is still the fast calls
    assert metrics.summary(now, now.buckets)["recent_p95"] is None  # nothing new: no value, not zero
    # a gateway restart resets counters: everything counted now is new
    assert metrics.window({0.1: 1.0, float("inf"): 1.0}, {0.1: 5.0, float("inf"): 5.0}) == {0.1: 1.0, float("inf"): 1.0}


def test_openfaas_namespaced_names_and_overflow_bucket():
    text = ('# TYPE gateway_functions_seconds histogram\n'
            'gateway_functions_seconds_bucket{code="200",function_name="figlet.openfaas-fn",le="0.5"} 1\n'
            'gateway_functions_seconds_bucket{code="200",function_name="figlet.openfaas-fn",le="+Inf"} 4\n'
            'gateway_functions_seconds_count{code="200",function_name="figlet.openfaas-fn"} 4\n'
            'gateway_functions_seconds_sum{code="200",function_name="figlet.openfaas-fn"} 9\n')
    m = metrics.parse(text)["figlet"]
    assert m.quantile(0.95) == 0.5  # past the last finite bound only the bound is known
    assert metrics.quantile({}, 0.5) is None


# --- settings and the jobs format ------------------------------------------------------------
def test_settings_are_validated():
    with pytest.raises(ConfigError, match="AIGC_UI_GATEWAY"):
        Config.from_env({"AIGC_UI_GATEWAY": "127.0.0.1:8080"})
    with pytest.raises(ConfigError, match="AIGC_UI_SECRET_KEY"):
        Config.from_env({"AIGC_UI_SECRET_KEY": "short"})
    with pytest.raises(ConfigError, match="AIGC_UI_TIMEOUT"):
        Config.from_env({"AIGC_UI_TIMEOUT": "soon"})
    generated = Config.from_env({})
    assert generated.secret_key_generated and len(generated.secret_key) >= 32
    assert Config.from_env({}).secret_key != generated.secret_key
    c = Config.from_env({"AIGC_UI_GATEWAY": "http://gw:8080/", "AIGC_UI_MAX_UPLOAD": "2Mi"})
    assert (c.gateway, c.max_upload) == ("http://gw:8080", 2 << 20)


def write_run(root, run_id, status, losses, partial_tail=True):
    run = root / run_id
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps(status))
    lines = [json.dumps({"step": s, "loss": loss}) for s, loss in losses]
    (run / "metrics.jsonl").write_text("\n".join(lines) + ("\n{\"step\": 9" if partial_tail else "\n"))
    return run


def test_runs_are_shown_as_the_finetune_function_reports_them(tmp_path):
    """The jobs format (finetune/jobs.py) read back by the function, then shaped for the pages; odd values
    from a function are shown as unknown, never trusted."""
    from finetune.jobs import RunDir

    write_run(tmp_path, "run-1", {"state": "running", "step": 30, "total": 120, "base": "smollm2-135m",
                                  "adapter": "coq", "created_at": "2025-01-02T00:00:00Z"},
              [(10, 2.5), (20, 2.1), (30, 1.9)])
    write_run(tmp_path, "run-0", {"state": "exploded", "progress": 7}, [], partial_tail=False)
    answer = {"runs": [dict(RunDir(tmp_path / r).status(), run_id=r) for r in ("run-0", "run-1")]
              + [{"run_id": "../etc", "state": "running"}, "not a run"]}
    runs = catalog.runs(answer)
    assert [r["id"] for r in runs] == ["run-1", "run-0", "?"]
    run = runs[0]
    assert run["progress"] == pytest.approx(0.25) and run["state"] == "running" and run["adapter"] == "coq"
    points = catalog.loss_points(RunDir(tmp_path / "run-1").metrics())  # the half-written last line is skipped
    assert [p["loss"] for p in points] == [2.5, 2.1, 1.9]
    assert catalog.loss_points([{"step": 1, "loss": float("nan")}, {"step": "x", "loss": 1}, 7]) == []
    odd = runs[1]
    assert odd["state"] == "unknown" and odd["progress"] == 1.0
    assert catalog.run_summary("nonsense", "r")["message"] == "the function's status is not a JSON object"


def test_the_run_form_names_every_wrong_field_before_anything_is_sent():
    from werkzeug.datastructures import MultiDict

    from ui.jobs import FIELDS, _defaults, parse_form

    good = MultiDict(dict(_defaults(), run_id="r1", base="tiny-llama"))
    raw, errors = parse_form(good, ["tiny-llama"])
    assert errors == {} and raw["steps"] == 300 and raw["learning_rate"] == 0.002 and "adapter" not in raw
    assert "init_adapter" not in raw
    bad = MultiDict(dict(good, run_id="../x", steps="ten", learning_rate="3", lora_r="0", base="gpt-9",
                         method="qlora", adapter="Bad Name", init_adapter="../x", seq_len=""))
    _, errors = parse_form(bad, ["tiny-llama"])
    assert set(errors) == {"run_id", "steps", "learning_rate", "lora_r", "base", "method", "adapter", "init_adapter",
                           "seq_len"}
    assert "whole number" in errors["steps"] and "unknown base 'gpt-9'" in errors["base"]
    assert "learning_rate must be in (0, 1)" in errors["learning_rate"] and "default 512" in errors["seq_len"]
    _, errors = parse_form(MultiDict(dict(good, steps="1000000")), None)  # no model API: the base is not checked
    assert list(errors) == ["steps"] and "<= 100000" in errors["steps"]
    _, errors = parse_form(MultiDict(dict(good, learning_rate="nan")), None)
    assert "finite" in errors["learning_rate"]
    assert {name for name, *_ in FIELDS} <= set(_defaults())
    # the levers: booleans from a true/false select, the attention kernel from its list
    assert raw["bf16"] is False and raw["gradient_checkpointing"] is False and raw["attention"] == "sdpa"
    raw, errors = parse_form(MultiDict(dict(good, bf16="true", loss_chunk="256", gradient_checkpointing="TRUE")), None)
    assert errors == {} and raw["bf16"] is True and raw["gradient_checkpointing"] is True and raw["loss_chunk"] == 256
    _, errors = parse_form(MultiDict(dict(good, bf16="yes", attention="flash", loss_chunk="-1")), None)
    assert set(errors) == {"bf16", "attention", "loss_chunk"} and "true or false" in errors["bf16"]


# --- a real gateway ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-gw")
    gw = GatewayProcess(write_stack(tmp / "stack.yml", {"echo": {"labels": {"com.openfaas.scale.min": "1"}}}),
                        tmp / "state")
    yield gw
    gw.stop()


@pytest.fixture
def ui(gateway, tmp_path):
    app = create_app(Config.from_env({"AIGC_UI_GATEWAY": gateway.url, "AIGC_UI_STACK": str(gateway.stack)}))
    return app.test_client()


def csrf(html: bytes) -> str:
    return re.search(rb'name="csrf-token" content="([^"]+)"', html).group(1).decode()


def log_in(client, gateway) -> str:
    token = csrf(client.get("/login").data)
    resp = client.post("/login", data={"user": "admin", "password": gateway.auth[1], "csrf_token": token})
    assert resp.status_code == 302, resp.data[:500]
    return csrf(client.get("/").data)


GET_PAGES = ["/", "/api/functions", "/functions/echo", "/api/functions/echo", "/deploy", "/models",
             "/models/efficientnet-lite0", "/jobs", "/jobs/x", "/api/jobs/x", "/jobs/new", "/functions/echo/logs",
             "/api/functions/echo/logs", "/functions/echo/compare", "/schedules", "/secrets"]


@pytest.mark.slow
def test_without_login_every_page_goes_to_login(ui, gateway):
    app = ui.application
    rules = {r.rule for r in app.url_map.iter_rules() if "GET" in r.methods}
    # every GET route is in the list (with sample arguments), so a new page cannot skip the check unnoticed
    covered = {re.sub(r"/(echo|x|efficientnet-lite0)(?=/|$)", "/<>", p) for p in GET_PAGES}
    expected = {re.sub(r"<[^>]+>", "<>", r) for r in rules} - {"/login", "/healthz", "/static/<>"}
    assert expected <= covered, expected - covered
    for path in GET_PAGES:
        resp = ui.get(path)
        if path.startswith("/api/"):
            assert resp.status_code == 401 and resp.json["login"] == "/login", path
        else:
            assert resp.status_code == 302 and resp.headers["Location"].startswith("/login"), path


@pytest.mark.slow
def test_csrf_is_required_on_every_state_changing_request(ui, gateway):
    token = log_in(ui, gateway)
    posts = ["/functions/echo/scale", "/functions/echo/limits", "/functions/echo/remove", "/deploy/embed",
             "/functions/echo/invoke", "/functions/echo/similarity", "/logout", "/jobs/new", "/jobs/x/cancel",
             "/jobs/x/resume", "/jobs/x/publish", "/secrets", "/secrets/x/delete"]
    rules = {re.sub(r"<[^>]+>", "<>", r.rule) for r in ui.application.url_map.iter_rules() if "POST" in r.methods}
    covered = {re.sub(r"/(echo|x|embed)(?=/|$)", "/<>", p) for p in posts}
    assert rules - {"/login"} <= covered, rules - covered  # a new form cannot skip the check unnoticed
    for path in posts:
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            resp = ui.post(path, data={"replicas": "2"}, headers=headers)
            assert resp.status_code == 400, path
            assert b"security token (CSRF) is missing or out of date" in resp.data
    assert gateway.status("echo")["replicas"] == 1  # nothing was scaled
    # the login form itself is protected (login CSRF)
    fresh = ui.application.test_client()
    assert fresh.post("/login", data={"user": "admin", "password": gateway.auth[1]}).status_code == 400
    # with the token it works
    resp = ui.post("/functions/echo/invoke?path=/json", data=b'{"a": 1}',
                   headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert resp.status_code == 201 and resp.json == {"got": {"a": 1}}
    assert resp.headers["X-Function-Status"] == "201"


@pytest.mark.slow
def test_wrong_logins_are_throttled_by_the_ui_before_they_lock_the_gateway(ui, gateway):
    """Finding (#16 follow-up): every UI login reaches the gateway from the UI's own address, so ten wrong
    guesses in one browser made the gateway refuse the UI for everyone. The UI now backs off per client."""
    token = csrf(ui.get("/login").data)
    for _ in range(5):
        assert ui.post("/login", data={"user": "admin", "password": "wrong", "csrf_token": token}).status_code == 401
    blocked = ui.post("/login", data={"user": "admin", "password": gateway.auth[1], "csrf_token": token})
    assert blocked.status_code == 429 and b"Too many wrong passwords" in blocked.data
    assert int(blocked.headers["Retry-After"]) > 0
    # another browser still logs in: the gateway saw five failures from the UI's address, under its ten
    ui.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    log_in(ui, gateway)


@pytest.mark.slow
def test_login_checks_the_gateway_and_keeps_the_password_server_side(ui, gateway):
    token = csrf(ui.get("/login").data)
    resp = ui.post("/login", data={"user": "admin", "password": "wrong", "csrf_token": token})
    assert resp.status_code == 401 and b"refused that user and password" in resp.data
    token = log_in(ui, gateway)
    password = gateway.auth[1].encode()
    for path in ("/", "/functions/echo", "/api/functions", "/deploy", "/models"):
        resp = ui.get(path)
        assert resp.status_code == 200, path
        assert password not in resp.data
    cookie = ui.get_cookie("aigc_ui")
    assert cookie.http_only and password not in cookie.value.encode()
    page = ui.get("/").data
    assert b'data-name="echo"' in page and b"aigc-onnx" in page  # engine from the stack entry's template
    # scaling through the form reaches the gateway
    resp = ui.post("/functions/echo/scale", data={"replicas": "2", "csrf_token": token})
    assert resp.status_code == 302
    gateway.wait_for("echo", lambda s: s["availableReplicas"] == 2, 60, "2 ready replicas")
    bad = ui.post("/functions/echo/scale", data={"replicas": "-1", "csrf_token": token}, follow_redirects=True)
    assert b'id="e-replicas" role="alert">replicas must be a whole number from 0 to 100' in bad.data  # at the field
    bad = ui.post("/functions/echo/limits", data={"min": "4", "max": "x", "csrf_token": token}, follow_redirects=True)
    assert b'id="e-max" role="alert">max must be a whole number' in bad.data
    bad = ui.post("/functions/echo/limits", data={"min": "4", "max": "3", "csrf_token": token}, follow_redirects=True)
    assert b'id="e-max" role="alert">min (4) must not exceed max (3)' in bad.data
    assert gateway.status("echo")["labels"] == {"com.openfaas.scale.min": "1"}  # nothing was sent
    # min/max labels go back with the rest of the deployment unchanged
    ui.post("/functions/echo/limits", data={"min": "1", "max": "3", "csrf_token": token})
    status = gateway.status("echo")
    assert status["labels"]["com.openfaas.scale.max"] == "3" and status["image"] == "localhost/echo:test"
    # after logout the session is gone server-side too
    ui.post("/logout", data={"csrf_token": token})
    assert ui.get("/").status_code == 302


@pytest.mark.slow
def test_remove_then_deploy_from_the_stack_file(ui, gateway):
    token = log_in(ui, gateway)
    resp = ui.post("/functions/echo/remove", data={"csrf_token": token}, follow_redirects=True)
    assert b"Removed echo." in resp.data
    assert requests.get(f"{gateway.url}/system/function/echo", auth=gateway.auth).status_code == 404
    page = ui.get("/deploy").data
    assert b'id="deploy-echo"' in page
    resp = ui.post("/deploy/echo", data={"csrf_token": token}, follow_redirects=True)
    assert b"Deployed echo from stack.yml." in resp.data
    status = gateway.status("echo")
    assert status["image"] == "localhost/echo:test" and status["labels"] == {"com.openfaas.scale.min": "1"}
    assert b'id="deploy-echo"' not in ui.get("/deploy").data  # listed as deployed now
    missing = ui.post("/deploy/nope", data={"csrf_token": token}, follow_redirects=True)
    assert b"is not in" in missing.data


@pytest.mark.slow
def test_data_is_escaped(ui, gateway):
    token = log_in(ui, gateway)
    resp = ui.post("/functions/echo/limits", data={"min": "<b>1</b>", "max": "3", "csrf_token": token},
                   follow_redirects=True)
    assert b"<b>1</b>" not in resp.data and b"&#39;&lt;b&gt;1&lt;/b&gt;&#39;" in resp.data
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.slow
def test_the_proxy_streams_events_as_they_come(gateway, tmp_path):
    """A real UI process (gunicorn) relays text/event-stream chunk by chunk, not at the end."""
    port = free_port()
    env = dict(os.environ, AIGC_UI_GATEWAY=gateway.url, AIGC_UI_SECRET_KEY="k" * 32, PYTHONUNBUFFERED="1")
    log = open(tmp_path / "ui.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "ui.app", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc, tmp_path / "ui.log")
        s = requests.Session()
        token = csrf(s.get(base + "/login").content)
        s.post(base + "/login", data={"user": "admin", "password": gateway.auth[1], "csrf_token": token})
        token = csrf(s.get(base + "/").content)
        started = time.monotonic()
        arrivals = []
        with s.post(base + "/functions/echo/invoke?path=/stream?n=5", headers={"X-CSRF-Token": token},
                    stream=True, timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            for chunk in resp.iter_content(chunk_size=None):
                arrivals.append((time.monotonic() - started, chunk))
        body = b"".join(c for _, c in arrivals)
        assert body == b"".join(f"data: {i}\n\n".encode() for i in range(5))
        # the handler sleeps 0.3 s after each event: buffered, all would arrive together after ~1.5 s
        first = next(t for t, c in arrivals if b"data: 0" in c)
        last = next(t for t, c in arrivals if b"data: 4" in c)
        assert last - first > 0.9, arrivals
    finally:
        proc.terminate()
        proc.wait(20)


def wait_http(url, proc, log_path, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"UI exited: {log_path.read_text()[-2000:]}"
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "UI did not start"
        time.sleep(0.1)


@pytest.mark.slow
def test_gateway_down_gives_a_clear_page_not_a_traceback(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    client = create_app(Config.from_env({"AIGC_UI_GATEWAY": dead})).test_client()
    token = csrf(client.get("/login").data)
    resp = client.post("/login", data={"user": "admin", "password": "pw", "csrf_token": token})
    assert resp.status_code == 502
    assert f"The gateway at {dead} is not reachable (connection refused)".encode() in resp.data
    assert b"Traceback" not in resp.data


@pytest.mark.slow
@pytest.mark.parametrize("target, lands", [("/functions/echo", "/functions/echo"), ("/\t/evil.example/x", "/"),
                                           ("//evil.example/x", "/"), ("/\\evil.example", "/"),
                                           ("https://evil.example/", "/"), ("/\n/evil.example", "/"),
                                           ("/a//evil.example", "/")])
def test_13_login_never_redirects_off_site(ui, gateway, target, lands):
    """Finding 13: next=/\\t/evil.example/x sent the browser to //evil.example/x (browsers drop tabs)."""
    fresh = ui.application.test_client()
    token = csrf(fresh.get("/login").data)
    resp = fresh.post("/login", data={"user": "admin", "password": gateway.auth[1], "csrf_token": token,
                                      "next": target})
    assert resp.status_code == 302 and resp.headers["Location"] == lands, resp.headers["Location"]


def test_keepalive_windows_are_shown_in_words():
    from ui.views import _keepalive

    assert _keepalive({"policy": "fixed", "learned": False, "keepalive_seconds": 600}) == \
        "fixed: kept 10.0 min after a call"
    assert "learning" in _keepalive({"policy": "adaptive", "learned": False, "keepalive_seconds": 600})
    assert _keepalive({"policy": "adaptive", "learned": True, "idle_times_seen": 40, "prewarm_seconds": 810,
                       "keepalive_seconds": 264}) == \
        "adaptive, from 40 idle times: unloaded, back after 13.5 min, then kept 4.4 min"
    assert _keepalive(None) == ""


def test_keepalive_windows_become_a_strip_and_held_replicas_a_sentence():
    from ui.views import _held, _windows

    w = _windows({"prewarm_seconds": 810, "keepalive_seconds": 270})
    assert w["prewarm"] == 0.75 and w["keep"] == 0.25 and w["prewarm_min"] == 13.5 and w["end_min"] == 18
    assert _windows({"prewarm_seconds": 0, "keepalive_seconds": 600})["prewarm"] == 0
    assert _windows(None) is None and _windows({"keepalive_seconds": 0}) is None
    assert _held({"held": 3, "reason": "the 2 cores are 97% busy"}) == \
        "3 more replica(s) wanted, not started: the 2 cores are 97% busy"
    assert _held({"held": 0, "reason": None}) == "" and _held(None) == ""
