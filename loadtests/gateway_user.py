"""Shared pieces of the locustfiles: options, the function user, cold-start cycles, replica polling.

`locust` is imported before anything that loads `ssl` (requests, urllib3, boto3):
gevent must monkey-patch first, or ssl recurses until the process dies.
"""

from __future__ import annotations

import locust  # noqa: F401  (first, see above)
from locust import HttpUser, constant, events
from locust.exception import StopUser
from locust.runners import WorkerRunner

import csv
import logging
import time

import gevent
import requests

log = logging.getLogger("loadtests")
SUITES = ("load", "coldstart")


@events.init_command_line_parser.add_listener
def _options(parser):
    # every option also reads an environment variable, so a CI job can set them without flags
    g = parser.add_argument_group("AIGC gateway")
    g.add_argument("--function", env_var="LOCUST_FUNCTION", default="",
                   help="function name (default: the locustfile's)")
    g.add_argument("--gateway-user", env_var="LOCUST_GATEWAY_USER", default="admin",
                   help="basic-auth user for /system calls")
    g.add_argument("--gateway-password", env_var="LOCUST_GATEWAY_PASSWORD", default="",
                   help="basic-auth password for /system calls (prefer the env var: argv is visible in ps)")
    g.add_argument("--suite", env_var="LOCUST_SUITE", choices=SUITES, default="load",
                   help="load: call the function in a closed loop; coldstart: scale to zero, then time the first call")
    g.add_argument("--cold-runs", env_var="LOCUST_COLD_RUNS", type=int, default=10,
                   help="coldstart: cycles before the run stops itself")
    g.add_argument("--warm-per-cold", env_var="LOCUST_WARM_PER_COLD", type=int, default=5,
                   help="coldstart: warm calls after each cold one")
    g.add_argument("--zero-timeout", env_var="LOCUST_ZERO_TIMEOUT", type=float, default=90.0,
                   help="coldstart: longest wait for the gateway to report 0 replicas")
    g.add_argument("--settle", env_var="LOCUST_SETTLE", type=float, default=3.0,
                   help="coldstart: seconds to wait after 0 replicas are reported, so instances still shutting "
                        "down are gone and the cold call starts from nothing")
    g.add_argument("--replicas-csv", env_var="LOCUST_REPLICAS_CSV", default="",
                   help="poll /system/functions and write time,function,replicas,available here")
    g.add_argument("--poll-interval", env_var="LOCUST_POLL_INTERVAL", type=float, default=1.0)
    g.add_argument("--samples-csv", env_var="LOCUST_SAMPLES_CSV", default="",
                   help="write every request (time, type, name, ms, ok, users) here")
    g.add_argument("--step-users", env_var="LOCUST_STEP_USERS", type=int, default=2,
                   help="step shape: users added per step")
    g.add_argument("--step-seconds", env_var="LOCUST_STEP_SECONDS", type=float, default=15.0,
                   help="step shape: seconds per step")
    g.add_argument("--steps", env_var="LOCUST_STEPS", type=int, default=4,
                   help="step shape: steps up (then as many minus one down, then stop)")


class Admin:
    """The gateway's /system API, with basic auth; not counted in locust's request stats."""

    def __init__(self, base_url: str, user: str, password: str):
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (user, password) if password else None

    def status(self, name: str) -> dict:
        resp = self.session.get(f"{self.base}/system/function/{name}", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def functions(self) -> list[dict]:
        resp = self.session.get(f"{self.base}/system/functions", timeout=10)
        resp.raise_for_status()
        return resp.json()

    def scale(self, name: str, replicas: int) -> None:
        resp = self.session.post(f"{self.base}/system/scale-function/{name}",
                                 json={"serviceName": name, "replicas": replicas}, timeout=10)
        resp.raise_for_status()

    def scale_to_zero(self, name: str, timeout: float) -> float:
        """Ask for zero replicas and wait until none is left; seconds waited."""
        started = time.monotonic()
        self.scale(name, 0)
        while True:
            status = self.status(name)
            if status.get("replicas", 0) == 0 and status.get("availableReplicas", 0) == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{name} still has {status.get('replicas')} replicas after {timeout:.0f}s")
            gevent.sleep(0.1)


def fire(environment, request_type: str, name: str, value: float, exception: Exception | None = None) -> None:
    """A custom sample in locust's stats (value in the 'response time' column: ms, or a rate)."""
    environment.events.request.fire(request_type=request_type, name=name, response_time=value,
                                    response_length=0, exception=exception, context={})


class FunctionUser(HttpUser):
    """One simulated client; subclasses say how to call their function (`invoke`).

    wait_time 0 makes a closed loop: each user keeps exactly one request in
    flight, so the user count is the in-flight concurrency the gateway sees,
    the quantity OpenFaaS's `com.openfaas.scale.target` is expressed in.
    """

    abstract = True
    function = ""
    wait_time = constant(0)

    def on_start(self):
        opts = self.environment.parsed_options
        self.fn = opts.function or self.function
        self.cycles = 0
        self.admin = Admin(self.host, opts.gateway_user, opts.gateway_password)

    def invoke(self, name: str) -> None:
        raise NotImplementedError

    @locust.task
    def call(self):
        if self.environment.parsed_options.suite == "coldstart":
            self.cold_cycle()
        else:
            self.invoke(self.fn)

    def cold_cycle(self):
        opts = self.environment.parsed_options
        if self.cycles >= opts.cold_runs:
            # quit from another greenlet: quit() kills user greenlets, this one included
            gevent.spawn(self.environment.runner.quit)
            raise StopUser()
        self.cycles += 1
        try:
            waited = self.admin.scale_to_zero(self.fn, opts.zero_timeout)
        except (requests.RequestException, TimeoutError) as exc:
            fire(self.environment, "ADMIN", "scale to zero", 0, exc)
            gevent.sleep(1)
            return
        fire(self.environment, "ADMIN", "scale to zero", waited * 1000)
        gevent.sleep(opts.settle)
        self.invoke("cold")
        for _ in range(opts.warm_per_cold):
            self.invoke("warm")


# --- side outputs: every sample, and the replica count over time -------------------------
_files: dict[str, object] = {}


@events.test_start.add_listener
def _start(environment, **_):
    if isinstance(environment.runner, WorkerRunner):
        return  # in distributed runs the master polls and records
    opts = environment.parsed_options
    if opts.samples_csv:
        fh = open(opts.samples_csv, "w", newline="")
        writer = csv.writer(fh)
        writer.writerow(["time", "type", "name", "ms", "ok", "users"])
        _files["samples"] = fh

        def record(request_type, name, response_time, exception=None, **_):
            writer.writerow([f"{time.time():.3f}", request_type, name, f"{response_time:.3f}",
                             int(exception is None), environment.runner.user_count])

        environment.events.request.add_listener(record)
    if opts.replicas_csv:
        _files["replicas"] = open(opts.replicas_csv, "w", newline="")
        _files["poller"] = gevent.spawn(_poll_replicas, environment, _files["replicas"])


def _poll_replicas(environment, fh) -> None:
    opts = environment.parsed_options
    admin = Admin(environment.host, opts.gateway_user, opts.gateway_password)
    wanted = opts.function
    writer = csv.writer(fh)
    writer.writerow(["time", "function", "replicas", "available"])
    failures = 0
    while True:
        try:
            for f in admin.functions():
                if not wanted or f["name"] == wanted:
                    writer.writerow([f"{time.time():.3f}", f["name"], f.get("replicas", 0),
                                     f.get("availableReplicas", 0)])
            fh.flush()
        except (requests.RequestException, ValueError, KeyError) as exc:
            failures += 1
            if failures == 1:  # once is enough to say why the replica plot will be empty
                log.warning("polling %s/system/functions failed: %s", environment.host, exc)
        gevent.sleep(opts.poll_interval)


@events.quitting.add_listener
def _close(environment, **_):
    poller = _files.pop("poller", None)
    if poller is not None:
        poller.kill()
    for fh in _files.values():
        fh.close()
    _files.clear()
