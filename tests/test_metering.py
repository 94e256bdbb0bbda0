"""Metering: GB-seconds that match what /proc shows, CPU-seconds, invocations, prices, and totals that survive a
restart without being counted twice."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import requests

from aigc.gateway import metering
from gateway_helpers import GatewayProcess, write_stack

# one replica, a process of its own (no zygote to share); RUN_TAG tells this test's replica from any other
# gateway's echo that runs on the machine at the same time
RUN_TAG = f"{os.getpid()}-{time.monotonic_ns()}"
ECHO = {"echo": {"labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"},
                 "environment": {"NO_FORK": "1", "METERING_TEST_RUN": RUN_TAG}}}


def echo_processes() -> list[int]:
    """This test's echo replica's gunicorn processes, found by their environment, not through the gateway."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if f"METERING_TEST_RUN={RUN_TAG}".encode() in environ and b"gunicorn" in cmdline:
            found.append(int(pid))
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def usage(gw) -> dict:
    return requests.get(gw.url + "/system/metering/echo", auth=gw.auth, timeout=10).json()["usage"]


def test_metered_gb_seconds_match_rss_sampled_apart_and_survive_a_restart(tmp_path):
    stack = write_stack(tmp_path / "stack.yml", ECHO)
    env = {"AIGC_METER_INTERVAL": "200ms"}
    gw = GatewayProcess(stack, tmp_path / "state", env=env)
    try:
        gw.wait_for("echo", lambda s: s["availableReplicas"] == 1, 60, "ready")
        stop, calls = threading.Event(), [0]

        def load():  # a steady closed loop: one request in flight at all times
            with requests.Session() as session:
                session.auth = gw.auth
                while not stop.is_set():
                    resp = session.post(gw.url + "/function/echo/json?sleep=0.05", json={"x": 1}, timeout=30)
                    assert resp.status_code == 201
                    calls[0] += 1

        before = usage(gw)
        worker = threading.Thread(target=load)
        started = last = time.monotonic()
        worker.start()
        independent = 0.0
        while time.monotonic() - started < 8:
            time.sleep(0.1)
            now = time.monotonic()
            independent += rss_bytes(echo_processes()) / metering.GIB * (now - last)
            last = now
        stop.set()
        worker.join(30)
        after = usage(gw)
        metered = after["memory_gb_seconds"] - before["memory_gb_seconds"]
        assert independent > 0 and abs(metered - independent) / independent < 0.10, (metered, independent)
        assert after["busy_replica_seconds"] - before["busy_replica_seconds"] > 6  # busy nearly all along
        assert after["cpu_seconds"] > before["cpu_seconds"]
        assert after["invocations"] - before["invocations"] == calls[0] > 0
        status = gw.status("echo")  # the spec's FunctionUsage, at the last sample
        assert status["usage"]["totalMemoryBytes"] > 10 << 20 and status["usage"]["cpu"] >= 0
        listed = requests.get(gw.url + "/system/metering", auth=gw.auth, timeout=10).json()["functions"]
        cost = listed["echo"]["cost"]
        assert cost["total"] > 0 and cost["per_invocation"] > 0 and cost["prices"]["per_gb_second"] == 0.0000166667
        scraped = requests.get(gw.url + "/metrics", timeout=10).text
        assert 'gateway_function_memory_gb_seconds_total{function_name="echo"}' in scraped
        assert requests.get(gw.url + "/system/metering/nope", auth=gw.auth, timeout=10).status_code == 404
        assert requests.get(gw.url + "/system/metering/echo", timeout=10).status_code == 401
    finally:
        gw.stop()
    saved = json.loads((tmp_path / "state" / "metering.json").read_text())["functions"]["echo"]
    gw = GatewayProcess(stack, tmp_path / "state", env=env)
    try:
        again = usage(gw)
        assert again["invocations"] == saved["invocations"]
        assert saved["memory_gb_seconds"] <= again["memory_gb_seconds"] < saved["memory_gb_seconds"] * 1.5
    finally:
        gw.stop()


def test_a_price_table_is_read_and_a_malformed_one_refused(tmp_path):
    good = tmp_path / "prices.json"
    good.write_text(json.dumps({"source": "ours", "per_gb_second": 0.00001, "per_million_requests": 0}))
    assert metering.load_prices(str(good))["per_gb_second"] == 0.00001
    for bad, fragment in (("[1]", "JSON object"), ("{", "cannot read"), ('{"per_gb_second": -1}', "per_gb_second"),
                          ('{"per_gb_second": 1, "per_million_requests": "x"}', "per_million_requests")):
        good.write_text(bad)
        with pytest.raises(metering.PriceError, match=fragment):
            metering.load_prices(str(good))
    with pytest.raises(metering.PriceError, match="cannot read"):
        metering.load_prices(str(tmp_path / "missing.json"))


def test_the_gateway_refuses_a_bad_price_table_or_interval_at_start():
    from aigc.gateway.core import gateway_limits

    with pytest.raises(ValueError, match="AIGC_PRICES"):
        gateway_limits({"AIGC_PRICES": "/nonexistent/prices.json"})
    with pytest.raises(ValueError, match="AIGC_METER_INTERVAL"):
        gateway_limits({"AIGC_METER_INTERVAL": "0"})


def test_a_sample_counts_rss_times_time_and_new_cpu_only(tmp_path):
    meter = metering.Meter(tmp_path / "m.json", metering.load_prices(None))
    me = os.getpgid(0)
    meter.sample({"self": [(me, 10.0)]}, now=100.0)  # the first sample only sets the clock
    assert meter.usage["self"].memory_gb_seconds == 0
    meter.sample({"self": [(me, 11.5)]}, now=102.0)  # busy 1.5 of the 2 s
    rss = rss_bytes(metering.group_processes(me))
    assert meter.usage["self"].memory_gb_seconds == pytest.approx(2 * rss / metering.GIB, rel=0.2)
    assert meter.usage["self"].busy_replica_seconds == 1.5
    assert meter.usage["self"].busy_gb_seconds == pytest.approx(1.5 * rss / metering.GIB, rel=0.2)
    cpu = meter.usage["self"].cpu_seconds
    meter.sample({"self": [(me, 11.5)]}, now=103.0)
    assert meter.usage["self"].cpu_seconds - cpu < 1.0  # only what was used since, not the whole again
    meter.save()
    assert metering.Meter(tmp_path / "m.json", metering.load_prices(None)).usage["self"].replica_seconds == 3.0


def test_adaptive_keepalive_learns_from_calls_through_the_gateway(tmp_path):
    stack = write_stack(tmp_path / "stack.yml", {"echo": {"labels": {
        "com.openfaas.scale.min": "1", "com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "10m",
        "com.aigc.keepalive": "adaptive"}}})
    gw = GatewayProcess(stack, tmp_path / "state")
    try:
        gw.wait_for("echo", lambda s: s["availableReplicas"] == 1, 60, "ready")
        url = gw.url + "/system/metering/echo"
        before = requests.get(url, auth=gw.auth, timeout=10).json()["keepalive"]
        assert before == {"policy": "adaptive", "idle_times_seen": 0, "learned": False, "prewarm_seconds": 0.0,
                          "keepalive_seconds": 600.0}
        for _ in range(12):
            assert requests.post(gw.url + "/function/echo/json", json={}, timeout=30).status_code == 201
            time.sleep(0.1)
        learned = requests.get(url, auth=gw.auth, timeout=10).json()["keepalive"]
        assert learned["learned"] and learned["idle_times_seen"] == 11
        assert learned["prewarm_seconds"] == 0 and 60 <= learned["keepalive_seconds"] <= 90  # busy: short wait
    finally:
        gw.stop()
    bad = write_stack(tmp_path / "bad.yml", {"echo": {"labels": {"com.aigc.keepalive": "often"}}})
    with pytest.raises(RuntimeError, match="com.aigc.keepalive='often'"):
        GatewayProcess(bad, tmp_path / "state-bad")
