"""The gateway's state: deployed functions, their pools, the autoscaler and async workers.

Everything lives under one state directory ($AIGC_STATE_DIR), so two gateways
with different state dirs and ports run side by side:

    secrets/basic-auth-password   the admin password (created on first start)
    secrets/NAME                  secrets (POST /system/secrets, or files put there), mode 0600
    build/gN/FN/                  build contexts, assembled as faas-cli does, one per deploy
    mounts/FN.N/                  each deployment's secrets, as files
    logs/FN-N.log                 each replica's output
    queue.sqlite                  accepted async calls
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

from .. import buildctx
from ..runtime.config import parse_duration, parse_size, read_env
from ..stack import Stack
from . import capacity, cron, deploy, keepalive
from .asyncq import Call, Queue
from .cgroups import Cgroups
from .deploy import DeployError, Deployment, check_process_env
from .keepalive import IdleHistogram
from .logs import LogBook, drain
from .metering import Meter, PriceError, load_prices
from .metrics import GatewayMetrics
from .pool import FunctionPool
from .processes import ProcessLauncher
from .secrets import SecretError, SecretStore
from .worker import QueueWorker

log = logging.getLogger("aigc.gateway")
CREDENTIALS = {"authorization", "cookie", "proxy-authorization", "x-api-key"}  # never stored in the queue
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length", "date", "server"}


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(os.environ.get("AIGC_STATE_DIR") or Path(base) / "aigc")


@dataclass
class Options:
    state_dir: Path
    root: Path                       # where template/ lives (the stack file's folder)
    ready_timeout: float = 120.0     # process start -> /_/ready
    upstream_timeout: float = 300.0  # longest a proxied call may take, waiting included
    body_timeout: float = 60.0       # longest a client may take to send a request body (then 408)
    scale_interval: float = 0.5
    async_workers: int = 2
    async_max_attempts: int = 5
    callback_attempts: int = 5
    runtime: str = "process"         # or "podman": replicas as containers from images
    cron_interval: float = 0.25      # how often schedules are checked (a 6-field schedule ticks each second)
    max_replicas: int = 20           # all functions together (AIGC_MAX_REPLICAS); a label's max cannot exceed it
    max_starting: int = max(1, os.cpu_count() or 1)  # replicas starting at once (AIGC_MAX_STARTING)
    queue_max_calls: int = 1000      # async calls waiting, per function (AIGC_QUEUE_MAX_CALLS)
    queue_max_bytes: int = 256 << 20  # their bodies, per function (AIGC_QUEUE_MAX_BYTES)
    queue_retention: float = 24 * 3600.0  # finished calls are deleted after this (AIGC_QUEUE_RETENTION)
    zygotes: bool = True             # process replicas forked from a loaded zygote (AIGC_ZYGOTE=on|off)
    meter_interval: float = 1.0      # how often replicas' memory and CPU are sampled (AIGC_METER_INTERVAL)
    prices: dict | None = None       # the metering price table (AIGC_PRICES; None: AWS Lambda's list prices)
    cpu_aware: bool = True           # hold CPU-bound functions' replicas while the cores are full (AIGC_CPU_AWARE)
    cpu_budget: float | None = None  # cores the replicas may use (AIGC_CPU_BUDGET; None: the CPUs we may run on)
    keepalive_bin: float = keepalive.BIN  # the adaptive keep-alive histogram's bin (AIGC_KEEPALIVE_BIN)


def gateway_limits(env) -> dict:
    """The gateway's AIGC_* settings, validated (a ValueError names the variable)."""
    def positive(text: str) -> int:
        value = int(text)
        if not 1 <= value <= 1000:
            raise ValueError("use a whole number from 1 to 1000")
        return value

    def seconds(text: str) -> float:
        value = parse_duration(text)
        if not 0 < value <= 3600:
            raise ValueError("use a duration above 0 and at most 1h")
        return value

    def count(text: str) -> int:
        value = int(text)
        if not 1 <= value <= 1_000_000:
            raise ValueError("use a whole number from 1 to 1000000")
        return value

    def size(text: str) -> int:
        value = parse_size(text)
        if not 1 << 10 <= value <= 64 << 30:
            raise ValueError("use a size from 1Ki to 64Gi")
        return value

    def switch(text: str) -> bool:
        if text.lower() not in ("on", "off"):
            raise ValueError("use on or off")
        return text.lower() == "on"

    def interval(text: str) -> float:
        value = parse_duration(text)
        if not 0.05 <= value <= 60:
            raise ValueError("use a duration from 50ms to 60s")
        return value

    def prices(text: str) -> dict:
        try:
            return load_prices(text)
        except PriceError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    def bin_width(text: str) -> float:
        value = parse_duration(text)
        if not 0.1 <= value <= 3600:
            raise ValueError("use a duration from 100ms to 1h")
        return value

    def retention(text: str) -> float:
        value = parse_duration(text)
        if not 60 <= value <= 365 * 86400:
            raise ValueError("use a duration from 1m to 365 days")
        return value

    return {"max_replicas": read_env(env, "AIGC_MAX_REPLICAS", positive, Options.max_replicas),
            "max_starting": read_env(env, "AIGC_MAX_STARTING", positive, Options.max_starting),
            "body_timeout": read_env(env, "AIGC_BODY_TIMEOUT", seconds, Options.body_timeout),
            "queue_max_calls": read_env(env, "AIGC_QUEUE_MAX_CALLS", count, Options.queue_max_calls),
            "queue_max_bytes": read_env(env, "AIGC_QUEUE_MAX_BYTES", size, Options.queue_max_bytes),
            "queue_retention": read_env(env, "AIGC_QUEUE_RETENTION", retention, Options.queue_retention),
            "zygotes": read_env(env, "AIGC_ZYGOTE", switch, Options.zygotes),
            "meter_interval": read_env(env, "AIGC_METER_INTERVAL", interval, Options.meter_interval),
            "prices": read_env(env, "AIGC_PRICES", prices, None),
            "cpu_aware": read_env(env, "AIGC_CPU_AWARE", switch, Options.cpu_aware),
            "cpu_budget": read_env(env, "AIGC_CPU_BUDGET", capacity.parse_cores, None),
            "keepalive_bin": read_env(env, "AIGC_KEEPALIVE_BIN", bin_width, Options.keepalive_bin)}


def ensure_password(path: Path) -> tuple[str, bool]:
    """The admin password, and whether it was just created (so it is printed once)."""
    if path.is_file():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password, True


def _copy_secret(source: Path, dest: Path) -> None:
    shutil.copyfile(source, dest)
    os.chmod(dest, 0o600)
    owner = dest.parent.stat()  # a container runtime gives the mount to the container's user: follow it
    if (owner.st_uid, owner.st_gid) != (os.getuid(), os.getgid()):
        os.chown(dest, owner.st_uid, owner.st_gid)


def forward_headers(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


class Gateway:
    def __init__(self, stack: Stack, options: Options):
        self.stack = stack
        self.options = options
        self.state_dir = options.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # secrets, the queue's bodies, replica logs: the gateway's alone
        for sub in ("secrets", "build", "logs", "mounts"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("build", "mounts"):  # a previous run's deployments: nothing runs from them now
            for stale in (self.state_dir / sub).iterdir():
                shutil.rmtree(stale, ignore_errors=True)
        self.password, self.password_created = ensure_password(self.state_dir / "secrets" / "basic-auth-password")
        self.secrets = SecretStore(self.state_dir / "secrets")
        self.logs = LogBook()
        self.metrics = GatewayMetrics()
        self.queue = Queue(self.state_dir / "queue.sqlite", options.queue_max_calls, options.queue_max_bytes,
                           options.queue_retention)
        if options.runtime == "podman":
            from .containers import launcher
            self.launcher = launcher(self.state_dir)
        elif options.runtime == "process":
            self.launcher = ProcessLauncher(Cgroups(label=f"aigc-{uuid.uuid4().hex[:8]}"), options.zygotes)
            self.launcher.watch = lambda stream, fn, instance: drain(
                stream, self.state_dir / "logs" / f"{instance}.log", self.logs, fn, instance)
        else:
            raise ValueError(f"runtime must be 'process' or 'podman', got {options.runtime!r}")
        self.meter = Meter(self.state_dir / "metering.json", options.prices or load_prices(None))
        self.cpu_clock = capacity.CpuClock()
        self.cpu_budget = options.cpu_budget or float(len(self.cpu_clock.cpus))
        self.metrics.watch_meter(self.meter)
        self.pools: dict[str, FunctionPool] = {}
        self.credentials: dict[str, dict[str, str]] = {}  # queued calls' Authorization/Cookie: never on disk
        self._generation = 0  # deploys so far: names each deployment's context and secrets folders
        self.session: aiohttp.ClientSession | None = None
        self.wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.worker: QueueWorker | None = None

    # --- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._autoscale()))
        self._tasks.append(loop.create_task(self._cron()))
        if self.metered:
            self._tasks.append(loop.create_task(self._meter()))
        self.worker = QueueWorker(self)
        self._tasks += [loop.create_task(self.worker.run()) for _ in range(self.options.async_workers)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.worker:
            await self.worker.close()
        await asyncio.gather(*(p.stop_all() for p in self.pools.values()))
        if self.session:
            await self.session.close()
        await asyncio.to_thread(self.launcher.close)
        self.meter.save()
        self.queue.close()

    # --- deployments ---------------------------------------------------------
    @property
    def runs_images(self) -> bool:
        return self.launcher.name != "process"

    @property
    def metered(self) -> bool:
        return not self.runs_images  # a container's processes are in another PID namespace

    def _mount_secrets(self, deployment: Deployment, mount: Path) -> Path:
        for name in deployment.secrets:
            try:
                found = self.secrets.exists(name)
            except SecretError as exc:
                raise DeployError(f"secrets: {exc}") from None
            if not found:
                raise DeployError(f"secret {name!r} not found; create it first (faas-cli secret create {name}, "
                                  f"or before `aigc up`: aigc secrets create {name} --generate)")
        shutil.rmtree(mount, ignore_errors=True)
        mount.mkdir(parents=True, mode=0o700)
        for name in deployment.secrets:
            _copy_secret(self.secrets.path(name), mount / name)
        return mount

    def secret_changed(self, name: str) -> None:
        """Refresh (or remove) the secret's file in every function that mounts it, as a cluster does."""
        for pool in self.pools.values():
            if name in pool.deployment.secrets:
                mounted = pool.mount / name
                if self.secrets.exists(name):
                    _copy_secret(self.secrets.path(name), mounted)
                else:
                    mounted.unlink(missing_ok=True)

    async def deploy(self, deployment: Deployment, replace: bool = False) -> None:
        """Start the deployment's pool. An update rolls: the old replicas serve until a new one is ready
        (or the new ones fail to start), then finish their requests and stop; counts carry over."""
        if deployment.name in self.pools and not replace:
            raise DeployError(f"function {deployment.name!r} already exists; update it with PUT /system/functions")
        self._generation += 1
        if self.runs_images:
            await asyncio.to_thread(self.launcher.check_image, deployment.fn.image)
        else:
            check_process_env(deployment.env_vars)
        # each generation has its own context and secrets folder: the old replicas still run from theirs
        mount = self._mount_secrets(deployment, self.state_dir / "mounts" / f"{deployment.name}.{self._generation}")
        if self.runs_images:
            folders = [mount]
            env = dict(deployment.env_vars)
            start = lambda instance: self.launcher.start(deployment, mount, instance, env)  # noqa: E731
            retire = lambda: None  # noqa: E731
        else:
            try:
                context = buildctx.assemble(deployment.fn, self.options.root,
                                            self.state_dir / "build" / f"g{self._generation}")
            except FileNotFoundError as exc:
                shutil.rmtree(mount, ignore_errors=True)
                raise DeployError(str(exc)) from None
            folders = [context.parent, mount]
            env = {"AIGC_SECRETS_DIR": str(mount), **deployment.env_vars}
            start = lambda instance: self.launcher.start(deployment, context, instance, env)  # noqa: E731
            retire = lambda: self.launcher.retire(context)  # noqa: E731
        pool = FunctionPool(deployment, start, self.state_dir / "logs", self.session,
                            self.options.ready_timeout, self.logs)
        pool.wake = self.wake
        self.metrics.declare(deployment.name)
        pool.on_replica_ready = lambda s, n=deployment.name: self.metrics.replica_start_seconds.labels(n).observe(s)
        pool.on_replica_exit = lambda oom, n=deployment.name: self.metrics.replica_exit(n, oom)
        pool.folders = folders
        pool.retire = retire
        pool.mount = mount
        old = self.pools.get(deployment.name)
        if old is not None:
            pool.calls = old.calls  # the count goes on, including requests the old replicas still finish
            pool.idle_times = old.idle_times  # and what keep-alive learned of its idle times
        else:
            pool.idle_times = IdleHistogram(self.options.keepalive_bin)
        await pool.reconcile(self.room())
        if old is not None and old.ready:
            await pool.wait_ready(self.options.ready_timeout)
        self.pools[deployment.name] = pool
        if old is not None:
            await self._retire(old)

    async def _retire(self, pool: FunctionPool) -> None:
        await pool.stop_all()  # SIGTERM: each replica finishes its in-flight requests first
        await asyncio.to_thread(pool.retire)
        for folder in pool.folders:
            shutil.rmtree(folder, ignore_errors=True)

    async def remove(self, name: str) -> bool:
        pool = self.pools.pop(name, None)
        if pool is None:
            return False
        await self._retire(pool)
        self.queue.forget_schedule(name)
        self.metrics.forget(name)
        self.meter.forget(name)
        self.logs.forget(name)
        return True

    def room(self) -> int:
        """Replicas that may start now: within the gateway's total and its limit on simultaneous starts,
        so no burst or label can start more processes than this machine was given."""
        replicas = [r for p in self.pools.values() for r in p.active]
        starting = sum(1 for r in replicas if r.state == "starting")
        return max(0, min(self.options.max_replicas - len(replicas), self.options.max_starting - starting))

    def scale(self, name: str, replicas: int) -> None:
        pool = self.pools[name]
        pool.manual = replicas
        pool.manual_pending = True
        self.wake.set()

    # --- autoscaling ---------------------------------------------------------
    async def _autoscale(self) -> None:
        purged_at = 0.0
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self.options.scale_interval)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            for name, pool in list(self.pools.items()):
                try:
                    await pool.reconcile(self.room())
                except Exception:  # one function's trouble must not stop scaling for the others
                    log.exception("reconciling %s failed", name)
                self.metrics.replicas.labels(name).set(len(pool.active))
                self.metrics.available.labels(name).set(len(pool.ready))
                self.metrics.held.labels(name).set(pool.held)
            self.metrics.async_queued.set(self.queue.pending())
            if time.monotonic() - purged_at > 60:
                purged_at = time.monotonic()
                await asyncio.to_thread(self.queue.purge)

    # --- schedules (cron-connector annotations) ----------------------------------
    def next_run(self, name: str) -> str:
        schedule = self.pools[name].deployment.schedule
        if schedule is None:
            return ""
        handled = self.queue.handled(name, schedule.text, time.time())
        return cron.iso(schedule.next_after(datetime.fromtimestamp(handled, timezone.utc)))

    def schedule_annotations(self, name: str) -> dict[str, str]:
        """A scheduled function's next run and its last tick's outcome, shown as annotations in its status
        (so `faas-cli describe` prints them): last-status is the HTTP status, or queued/running/cancelled."""
        next_run = self.next_run(name)
        if not next_run:
            return {}
        out = {deploy.NEXT_RUN: next_run}
        last = self.queue.last_tick(name)
        if last is not None:
            created, state, status = last
            out[deploy.LAST_RUN] = cron.iso(datetime.fromtimestamp(created, timezone.utc))
            out[deploy.LAST_STATUS] = str(status) if status is not None else state
        return out

    def run_schedules(self, now: float) -> list[str]:
        """Queue each scheduled function's due tick (one call however many fell since the last), as async
        calls; the ids of those queued."""
        queued = []
        for name, pool in list(self.pools.items()):
            schedule = pool.deployment.schedule
            if schedule is None:
                continue
            handled = self.queue.handled(name, schedule.text, now)
            tick = schedule.next_after(datetime.fromtimestamp(handled, timezone.utc))
            if tick.timestamp() <= now:
                call_id = cron.call_id(name, tick)
                if self.queue.put_tick(call_id, name, now):
                    queued.append(call_id)
                    log.info("cron: %s tick %s queued as %s", name, cron.iso(tick), call_id)
        return queued

    async def _cron(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_schedules, time.time())
            except Exception:  # a broken schedule must not stop the others
                log.exception("running schedules failed")
            await asyncio.sleep(self.options.cron_interval)

    # --- metering ----------------------------------------------------------------
    async def _meter(self) -> None:
        while True:
            groups = {name: [(r.instance.process.pid, r.busy_seconds()) for r in pool.replicas
                             if r.state in ("starting", "ready", "stopping") and r.alive()]
                      for name, pool in self.pools.items()}
            try:
                await asyncio.to_thread(self.meter.sample, groups)
                busy = await asyncio.to_thread(self.cpu_clock.busy_cores)
            except Exception:  # a bad sample must not stop metering
                log.exception("metering sample failed")
            else:
                self._hold(busy)
            await asyncio.sleep(self.options.meter_interval)

    def _hold(self, busy_cores: float | None) -> None:
        """Tell each pool whether the cores are too full for it to add replicas (capacity.py)."""
        held = capacity.holds(busy_cores, self.cpu_budget, self.meter.window) if self.options.cpu_aware else {}
        if busy_cores is not None:
            self.metrics.cpu_busy.set(busy_cores)
        for name, pool in self.pools.items():
            pool.cpu_hold = held.get(name)

    def observe(self, name: str, code: int, seconds: float) -> None:
        """A call that ended (sync or async): its metrics and its metering."""
        self.metrics.observe(name, code, seconds)
        self.meter.invoked(name, seconds)

    # --- invocation ------------------------------------------------------------
    async def acquire(self, name: str):
        pool = self.pools[name]
        started = time.monotonic()
        replica, cold = await pool.acquire(self.options.upstream_timeout)
        if cold:
            self.metrics.cold_starts.labels(name).inc()
            self.meter.cold_start(name)
            self.metrics.cold_start_seconds.labels(name).observe(time.monotonic() - started)
        return pool, replica

    async def invoke(self, call: Call) -> tuple[int, dict[str, str], bytes, float]:
        """Run one queued call to completion (status, headers, body, seconds)."""
        started = time.monotonic()
        pool, replica = await self.acquire(call.function)
        try:
            url = replica.url + call.path + (f"?{call.query}" if call.query else "")
            headers = dict(call.headers, **self.credentials.get(call.call_id, {}), **{"X-Call-Id": call.call_id})
            # a queued call may run as long as the function allows (a training job: hours), as OpenFaaS's
            # queue-worker is configured with ack_wait above the function's exec_timeout
            limit = max(self.options.upstream_timeout, pool.deployment.exec_timeout + 10)
            timeout = aiohttp.ClientTimeout(total=limit)
            async with self.session.post(url, data=call.body, headers=headers, timeout=timeout) as resp:
                body = await resp.read()
                return resp.status, forward_headers(resp.headers), body, time.monotonic() - started
        finally:
            await pool.release(replica)

    def accept_async(self, name: str, path: str, query: str, headers: dict[str, str], body: bytes) -> str:
        call_id = headers.get("X-Call-Id") or str(uuid.uuid4())
        callback = headers.get("X-Callback-Url")
        kept = {k: v for k, v in headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() not in CREDENTIALS and k.lower() != "x-callback-url"}
        secret = {k: v for k, v in headers.items() if k.lower() in CREDENTIALS}
        self.queue.put(call_id, name, path, query, kept, body, callback)
        if secret:  # in memory only (bounded by the queue's quotas): after a restart the call runs without them
            self.credentials[call_id] = secret
        return call_id

    def call_ended(self, call_id: str) -> None:
        self.credentials.pop(call_id, None)
