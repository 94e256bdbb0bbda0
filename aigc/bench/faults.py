"""Fault injection against a real `aigc up`: what breaks, what each caller sees, what is lost.

    python bench/faults.py                 # every scenario, the table README shows
    python bench/faults.py --only disk     # one scenario

Scenarios (each starts its own gateway with tests/handlers/echo):
- replica: `kill -9` of one of two replicas under load: only calls in flight on it fail (502), the others
  go on; how long until a replacement is ready.
- gateway: `kill -9` of the gateway while async calls run: after a restart every accepted call is delivered;
  how many ran twice (at least once: only those in flight at the kill may).
- disk: the state folder on a small tmpfs that is then filled: async calls and secrets get 507 with a reason,
  sync calls keep working (replica output is still read), nothing queued is damaged, and accepting resumes
  when space returns. Needs root (mount); skipped otherwise.
- callbacks: receivers that are down, redirect or answer after the callback timeout: the function runs once
  per call whatever they do.
- locked: another process holds the queue's database locked: calls wait (busy timeout) then get 503.
- slowbody: 32 connections sending a body a byte at a time to a function with one replica of 4 slots: the p95
  of normal calls beside them against the idle p95, rounds interleaved (bodies are read before a slot is taken).
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from ..gateway.worker import CALLBACK_TIMEOUT
from .gateway import LocalGateway, write_echo_stack



class Receiver:
    """A callback receiver: records each POST (call id, time); `mode` is ok, redirect, slow (answers after the
    gateway's callback timeout) or down."""

    def __init__(self, mode: str = "ok"):
        self.calls: list[tuple[str, float]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls.append((self.headers.get("X-Call-Id", ""), time.monotonic()))
                if mode == "slow":
                    time.sleep(CALLBACK_TIMEOUT + 5)
                self.send_response(302 if mode == "redirect" else 200)
                if mode == "redirect":
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # close() does not wait for a slow answer
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done"
        self.serving = mode != "down"
        if self.serving:
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
        else:
            self.server.server_close()  # the port is closed: connections are refused

    def ids(self) -> list[str]:
        return [c for c, _ in self.calls]

    def close(self) -> None:
        if self.serving:  # shutdown() waits for serve_forever, which a closed receiver never ran
            self.server.shutdown()
            self.server.server_close()
            self.serving = False


def _gateway(work: Path, replicas: int = 1, port: int | None = None, state: Path | None = None) -> LocalGateway:
    gw = LocalGateway(write_echo_stack(work / "stack.yml", replicas, max(replicas, 2)), work / "gateway.log", state_dir=state or work / "state", port=port)
    gw.client.wait_for("echo", lambda s: s["availableReplicas"] >= replicas, 60, f"{replicas} replicas")
    return gw


def replica_kill(work: Path, seconds: float = 4.0) -> dict:
    gw = _gateway(work, replicas=2)
    url = gw.url + "/function/echo"
    try:
        victim = requests.get(url + "/pid", timeout=10).json()["pgid"]
        codes: list[tuple[float, int]] = []
        stop = time.monotonic() + seconds

        def load():
            while time.monotonic() < stop:
                try:
                    code = requests.post(url + "?sleep=0.1", data=b"x", timeout=30).status_code
                except requests.RequestException:
                    code = 0
                codes.append((time.monotonic(), code))

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(load) for _ in range(6)]
            time.sleep(seconds / 3)
            killed = time.monotonic()
            os.killpg(victim, signal.SIGKILL)
            while gw.client.status("echo")["availableReplicas"] == 2 and time.monotonic() < killed + 5:
                time.sleep(0.02)  # until the gateway notices
            gw.client.wait_for("echo", lambda s: s["availableReplicas"] == 2, 60, "a replacement")
            replaced = time.monotonic() - killed
            for f in futures:
                f.result()
        failed = [c for _, c in codes if c != 200]
        return {"scenario": "kill -9 one of 2 replicas under 6 concurrent callers",
                "outcome": f"{len(codes)} calls, {len(failed)} failed ({sorted(set(failed))}): calls in flight "
                           "on the killed replica (6 callers, 2 replicas); all others 200",
                "figure": f"replacement ready {replaced:.2f} s after the kill", "ok": len(failed) <= 6}
    finally:
        gw.stop()


def gateway_kill(work: Path, calls: int = 12) -> dict:
    receiver = Receiver()
    state = work / "state"
    gw = _gateway(work, state=state)
    try:
        accepted = []
        for i in range(calls):
            r = requests.post(gw.url + "/async-function/echo?sleep=0.3", data=f"job-{i}".encode(),
                              headers={"X-Callback-Url": receiver.url}, timeout=10)
            accepted.append(r.headers["X-Call-Id"])
        while len(receiver.calls) < 2:
            time.sleep(0.02)
        gw.stop(signal.SIGKILL)
        before = len(receiver.calls)
        gw = _gateway(work, state=state, port=gw.port)
        deadline = time.monotonic() + 60
        while set(accepted) - set(receiver.ids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        ids = receiver.ids()
        lost = set(accepted) - set(ids)
        twice = len(ids) - len(set(ids))
        return {"scenario": f"kill -9 of the gateway with {calls} async calls accepted, {before} delivered",
                "outcome": f"{len(set(ids))}/{calls} delivered after restart, {len(lost)} lost, {twice} twice "
                           "(at least once: only calls running at the kill may run again)",
                "figure": f"all delivered {time.monotonic() - (deadline - 60):.1f} s after the restart",
                "ok": not lost and twice <= 2}
    finally:
        gw.stop()
        receiver.close()


def disk_full(work: Path) -> dict:
    if os.geteuid() != 0:
        return {"scenario": "state folder on a full disk", "outcome": "skipped: mounting a tmpfs needs root",
                "figure": "", "ok": True}
    state = work / "small"
    state.mkdir()
    # room for the gateway's state (build contexts with their bytecode) and little more
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(state)], check=True)
    receiver = Receiver()
    gw = None
    try:
        gw = _gateway(work, state=state / "state")
        # a call still running when the disk fills: its outcome cannot be stored until space returns
        ok = requests.post(gw.url + "/async-function/echo?sleep=1.5", data=b"before",
                           headers={"X-Callback-Url": receiver.url})
        time.sleep(0.3)  # claimed (the worker polls every 50 ms) before the disk is full
        filler = state / "filler"
        for chunk in (64 << 10, 4 << 10):  # fill what is left, down to the last page
            try:
                with open(filler, "ab") as fh:
                    while True:
                        fh.write(b"\0" * chunk)
                        fh.flush()
            except OSError:  # full now (or already)
                pass
        refused = requests.post(gw.url + "/async-function/echo", data=b"x" * 200_000)
        secret = requests.post(gw.url + "/system/secrets", json={"name": "k", "value": "v" * 100_000},
                               auth=(gw.client.user, gw.client.password))
        sync = [requests.post(gw.url + "/function/echo", data=b"still", timeout=30).status_code for _ in range(20)]
        filler.unlink(missing_ok=True)
        again = requests.post(gw.url + "/async-function/echo", data=b"after", headers={"X-Callback-Url": receiver.url})
        deadline = time.monotonic() + 30
        while len(set(receiver.ids())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        with sqlite3.connect(state / "state" / "queue.sqlite") as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        return {"scenario": "the state folder's disk fills up",
                "outcome": f"async {refused.status_code}, secret {secret.status_code}, sync calls "
                           f"{sorted(set(sync))}; after freeing space async {again.status_code}, "
                           f"{len(set(receiver.ids()))}/2 delivered; queue integrity {integrity}",
                "figure": refused.json().get("error", "")[:60] + "…",
                "ok": refused.status_code == 507 and secret.status_code == 507 and set(sync) == {200}
                and ok.status_code == 202 and again.status_code == 202 and integrity == "ok"
                and len(set(receiver.ids())) == 2}
    finally:
        if gw:
            gw.stop()
        receiver.close()
        subprocess.run(["umount", "-l", str(state)], check=False)


def callbacks(work: Path) -> dict:
    gw = _gateway(work)
    outcomes = []
    try:
        for mode in ("down", "redirect", "slow"):
            receiver = Receiver(mode)
            before = gw.client.status("echo")["invocationCount"]
            r = requests.post(gw.url + "/async-function/echo", data=b"x", headers={"X-Callback-Url": receiver.url})
            # the call ran; a down receiver has had a few attempts by now, a slow one has timed out
            time.sleep(CALLBACK_TIMEOUT + 2 if mode == "slow" else 3)
            runs = gw.client.status("echo")["invocationCount"] - before
            outcomes.append((mode, r.status_code, runs, len(receiver.calls)))
            receiver.close()
        return {"scenario": "callback receivers that are down, redirect or answer after the timeout",
                "outcome": "; ".join(f"{m}: accepted {s}, function ran {n}x, receiver saw {c}"
                                     for m, s, n, c in outcomes),
                "figure": "redirects are not followed (a 3xx counts as delivered); a receiver that answers after "
                          f"{CALLBACK_TIMEOUT:.0f} s is sent the result again, the call is not run again",
                "ok": all(s == 202 and n == 1 for _, s, n, _ in outcomes)}
    finally:
        gw.stop()


def locked(work: Path, hold: float = 7.0) -> dict:
    gw = _gateway(work)
    try:
        db = sqlite3.connect(gw.state_dir / "queue.sqlite", isolation_level=None, timeout=1, check_same_thread=False)
        db.execute("BEGIN EXCLUSIVE")
        threading.Timer(hold, lambda: (db.execute("COMMIT"), db.close())).start()
        sync = requests.post(gw.url + "/function/echo", data=b"sync", timeout=30).status_code
        started = time.monotonic()
        during = requests.post(gw.url + "/async-function/echo", data=b"x", timeout=30)
        waited = time.monotonic() - started
        time.sleep(max(0.0, hold - waited) + 0.5)
        after = requests.post(gw.url + "/async-function/echo", data=b"y", timeout=30)
        return {"scenario": f"another process holds the queue's database locked for {hold:.0f} s",
                "outcome": f"during: {during.status_code} after waiting {waited:.1f} s (busy timeout 5 s); "
                           f"after: {after.status_code}; a sync call meanwhile: {sync}",
                "figure": during.json().get("error", "")[:60] if during.status_code != 202 else "",
                "ok": during.status_code == 503 and after.status_code == 202 and sync == 200}
    finally:
        gw.stop()


def _p95(url: str, calls: int) -> float:
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        requests.post(url, data=b"ping", timeout=30).raise_for_status()
        times.append(time.perf_counter() - began)
    return sorted(times)[int(0.95 * (len(times) - 1))]


def slow_uploads(work: Path, clients: int = 32, calls: int = 40, rounds: int = 5) -> dict:
    stack = write_echo_stack(work / "stack.yml", 1, 1, max_inflight=4)  # 4 slots: 32 clients exceed them
    gw = LocalGateway(stack, work / "gateway.log", state_dir=work / "state")
    url = gw.url + "/function/echo"
    host, port = gw.url.removeprefix("http://").split(":")
    try:
        gw.client.wait_for("echo", lambda s: s["availableReplicas"] == 1, 60, "a replica")
        _p95(url, 5)  # warm
        idle, loaded = [], []
        for _ in range(rounds):  # idle and loaded alternate, so drift hits both alike
            idle.append(_p95(url, calls))
            slow = [socket.create_connection((host, int(port))) for _ in range(clients)]
            try:
                for s in slow:
                    s.sendall(b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
                time.sleep(0.5)
                loaded.append(_p95(url, calls))
                for s in slow:
                    s.sendall(b"x")  # still sending, still slowly
            finally:
                for s in slow:
                    s.close()
        ratio = statistics.median(b / a for a, b in zip(idle, loaded))
        return {"scenario": f"{clients} connections sending a body 1 byte at a time (1 replica, 4 slots)",
                "outcome": f"normal calls 200, p95 {statistics.median(loaded) * 1000:.1f} ms beside them, "
                           f"{statistics.median(idle) * 1000:.1f} ms idle (medians of {rounds} interleaved rounds "
                           f"of {calls} calls)",
                "figure": f"p95 × {ratio:.2f} of idle", "ok": ratio <= 2}
    finally:
        gw.stop()


SCENARIOS = {"replica": replica_kill, "gateway": gateway_kill, "disk": disk_full, "callbacks": callbacks,
             "locked": locked, "slowbody": slow_uploads}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = p.parse_args(argv)
    rows = []
    for name in args.only or SCENARIOS:
        with tempfile.TemporaryDirectory(prefix=f"aigc-fault-{name}-") as tmp:
            print(f"{name} …", flush=True)
            rows.append(SCENARIOS[name](Path(tmp)))
    print("| fault | what callers saw | figure | as expected |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['outcome']} | {r['figure']} | {'yes' if r['ok'] else 'NO'} |")
    return 0 if all(r["ok"] for r in rows) else 1
