"""Findings of the security review (issue: hardening), each reproduced against a real gateway process.

Numbers refer to the review's table: 4 (callbacks that never answer), 5 (queue
quotas, credentials, file modes, purging), 8 (deploys that change what runs on
the host), 13 (open redirect after UI login), 16 (auth compare and backoff,
names with a trailing newline, duplicate call ids, cancel without auth, the
admin password's folder visible to functions).
"""

from __future__ import annotations

import http.server
import sqlite3
import stat
import threading
import time

import pytest
import requests

from aigc.gateway.asyncq import Queue

from gateway_helpers import GatewayProcess, gateway_events, write_stack

pytestmark = pytest.mark.slow
SLOW = {"labels": {"com.openfaas.scale.min": "1"}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    mp = pytest.MonkeyPatch()
    mp.setenv("AIGC_QUEUE_MAX_CALLS", "3")
    mp.setenv("AIGC_QUEUE_MAX_BYTES", "64Ki")
    try:
        gateway = GatewayProcess(write_stack(tmp / "stack.yml", {"fn": SLOW, "busy": SLOW, "cb": SLOW}), tmp / "state")
    finally:
        mp.undo()
    gateway.wait_for("fn", lambda s: s["availableReplicas"] == 1, 60, "a replica")
    yield gateway
    gateway.stop()


def api(gw, method: str, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", gw.auth)
    return requests.request(method, gw.url + path, timeout=30, **kwargs)


def test_16_names_with_a_trailing_newline_are_refused(gw):
    resp = api(gw, "POST", "/system/functions", json={"service": "fn2\n", "image": "localhost/fn:test"})
    assert resp.status_code == 400 and "DNS label" in resp.json()["error"]


def test_16_a_duplicate_call_id_is_a_409_not_a_500(gw):
    headers = {"X-Call-Id": "same-id-twice"}
    assert api(gw, "POST", "/async-function/fn", data=b"1", headers=headers, auth=None).status_code == 202
    resp = api(gw, "POST", "/async-function/fn", data=b"2", headers=headers, auth=None)
    assert resp.status_code == 409 and "X-Call-Id" in resp.json()["error"]


def test_16_cancelling_an_async_call_needs_auth(gw):
    assert api(gw, "DELETE", "/async-function/some-call", auth=None).status_code == 401
    assert api(gw, "DELETE", "/async-function/some-call").status_code == 404


def test_16_functions_do_not_learn_where_the_gateway_keeps_its_password(gw):
    assert api(gw, "GET", "/function/fn/env", params={"name": "AIGC_STATE_DIR"}).json() == {"value": None}


@pytest.mark.parametrize("name, value", [("PYTHONWARNINGS", "ignore::os.system"), ("LD_PRELOAD", "/tmp/x.so"),
                                         ("BROWSER", "sh -c id"), ("AIGC_HOST", "0.0.0.0"), ("PATH", "/tmp"),
                                         ("bad-name", "x")])
def test_8_deploys_cannot_change_what_runs_on_the_host(gw, name, value):
    body = {"service": "env", "image": "localhost/fn:test", "envVars": {name: value}}
    resp = api(gw, "POST", "/system/functions", json=body)
    assert resp.status_code == 400 and name in resp.json()["error"], resp.text
    assert api(gw, "GET", "/system/function/env").status_code == 404


def test_5_the_queue_has_quotas_keeps_no_credentials_and_is_private(gw):
    state = gw.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "queue.sqlite").stat().st_mode) == 0o600
    headers = {"Authorization": "Bearer do-not-keep", "Cookie": "session=do-not-keep", "X-Keep": "yes"}
    codes = [api(gw, "POST", "/async-function/busy?sleep=5", data=b"x", headers=headers, auth=None).status_code
             for _ in range(4)]
    assert codes == [202, 202, 202, 429], codes  # at most 3 calls of one function waiting or running
    big = api(gw, "POST", "/async-function/fn", data=b"x" * (70 << 10), auth=None)
    assert big.status_code == 429 and "bytes" in big.json()["error"]
    with sqlite3.connect(state / "queue.sqlite") as db:
        stored = " ".join(row[0] for row in db.execute("SELECT headers FROM calls"))
    assert "do-not-keep" not in stored and "X-Keep" in stored


def test_5_finished_calls_are_purged_after_the_retention(tmp_path):
    queue = Queue(tmp_path / "q.sqlite", retention=3600)
    queue.put("old", "fn", "/", "", {}, b"x" * 1000, None)
    queue.put("new", "fn", "/", "", {}, b"y", None)
    queue.put("waiting", "fn", "/", "", {}, b"z", None)
    for call_id in ("old", "new"):
        queue.finish(call_id, "done", 200, 0.1)
    assert queue.purge(now=time.time() + 1800) == 0
    assert queue.purge(now=time.time() + 7200) == 2  # both finished ones; the waiting call stays
    assert queue.state("waiting") == "queued" and queue.state("old") is None
    queue.close()


class HangingReceiver:
    """A callback receiver that accepts the connection and never answers."""

    def __init__(self):
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.hits += 1
                time.sleep(120)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hang"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_4_a_callback_that_never_answers_does_not_run_the_call_again(gw):
    receiver = HangingReceiver()
    before = gw.status("cb")["invocationCount"]
    assert api(gw, "POST", "/async-function/cb", data=b"once", auth=None,
               headers={"X-Callback-Url": receiver.url}).status_code == 202
    deadline = time.monotonic() + 45
    while receiver.hits < 2 and time.monotonic() < deadline:  # the first attempt timed out, a second came
        time.sleep(0.2)
    assert receiver.hits >= 2, "the callback was not retried"
    assert gw.status("cb")["invocationCount"] == before + 1  # the function ran once, whatever the receiver did
    # and other calls are not held up meanwhile
    assert api(gw, "POST", "/function/fn", data=b"meanwhile", auth=None).content == b"meanwhile"
    receiver.server.shutdown()


def test_16_wrong_passwords_back_off_even_the_right_one(tmp_path):
    gateway = GatewayProcess(write_stack(tmp_path / "stack.yml", {}), tmp_path / "state")
    try:
        codes = [requests.get(gateway.url + "/system/functions", auth=("admin", f"guess-{i}"), timeout=10).status_code
                 for i in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429], codes
        right = requests.get(gateway.url + "/system/functions", auth=gateway.auth, timeout=10)
        assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
        assert requests.post(gateway.url + "/function/none", timeout=10).status_code == 404  # invocations unaffected
    finally:
        gateway.stop()


def test_7_large_rasters_are_bounded_by_the_memory_limit_not_killed_by_it(tmp_path, model_store):
    """Finding 7: a 154 KB PNG of 6300x6300 took 836 MB; 8 in parallel 2.2 GB against a 512Mi limit. Now the
    pixel limit follows the replica's memory limit, decodes are bounded, and large JPEGs decode reduced."""
    import concurrent.futures
    import io

    import yaml
    from PIL import Image

    from conftest import REPO

    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    spec = dict(doc["functions"]["image-classify"], handler=str(REPO / "functions" / "image-classify"))
    assert spec["limits"]["memory"] == "512Mi"
    doc["functions"] = {"image-classify": spec}
    (tmp_path / "stack.yml").write_text(yaml.safe_dump(doc))
    gateway = GatewayProcess(tmp_path / "stack.yml", tmp_path / "state")
    try:
        gateway.wait_for("image-classify", lambda s: s["availableReplicas"] == 1, 90, "a replica")
        url = gateway.url + "/function/image-classify"
        buf = io.BytesIO()
        Image.new("RGB", (6300, 6300), (120, 80, 40)).save(buf, format="PNG")
        bomb = buf.getvalue()
        assert len(bomb) < 1 << 20
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.post(url, data=bomb, timeout=120), range(8)))
        assert [a.status_code for a in answers] == [400] * 8, [a.text[:200] for a in answers]
        assert "memory limit" in answers[0].json()["error"]
        photo = io.BytesIO()
        Image.new("RGB", (4000, 3000), (30, 140, 60)).save(photo, format="JPEG", quality=90)  # a 12 Mpx phone photo
        assert requests.post(url, data=photo.getvalue(), timeout=60).status_code == 200
        assert not [e for e in gateway_events(gateway, "image-classify") if "OOMKilled" in e]
        # none was killed; the burst may have added a replica (a fork from the zygote is ready at once)
        assert gateway.status("image-classify")["availableReplicas"] >= 1
    finally:
        gateway.stop()


def test_7_the_pixel_limit_reads_the_cgroup_memory_limit(tmp_path, monkeypatch):
    from aigc.runtime import images

    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/some/replica\n0::/\n")
    limit = tmp_path / "fs" / "memory" / "some" / "replica"
    limit.mkdir(parents=True)
    (limit / "memory.limit_in_bytes").write_text(str(512 << 20))
    assert images.memory_limit(proc, tmp_path / "fs") == 512 << 20
    (limit / "memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "unlimited"
    assert images.memory_limit(proc, tmp_path / "fs") is None
    proc.write_text("0::/a\n")
    (tmp_path / "fs" / "a").mkdir()
    (tmp_path / "fs" / "a" / "memory.max").write_text("max\n")
    assert images.memory_limit(proc, tmp_path / "fs") is None
    (tmp_path / "fs" / "a" / "memory.max").write_text(str(1 << 30))
    assert images.memory_limit(proc, tmp_path / "fs") == 1 << 30
