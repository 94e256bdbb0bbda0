"""Replicas as plain processes (the default runtime): the template's fprocess in the function's build context.

A replica is the template's `fprocess` (or the deployment's `envProcess`, which
replaces it as OpenFaaS's watchdog does) started in the assembled build
context, bound to 127.0.0.1 on a free port. `limits.memory` becomes a memory
cgroup (see cgroups.py); limits that cannot be enforced on this host are
reported once at start. Replicas of a gunicorn fprocess are forked from a
zygote once it is ready (zygotes.py).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Callable

from .. import buildctx, runner
from .cgroups import Cgroup, Cgroups
from .deploy import Deployment
from .zygotes import ForkedProcess, Zygote, gunicorn_args

log = logging.getLogger("aigc.gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(deployment: Deployment, context: Path) -> list[str]:
    if not deployment.env_process:
        return buildctx.entrypoint(context)
    argv = shlex.split(deployment.env_process)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


class ProcessReplica:
    """A running replica process: its address, its output, and how it ended."""

    def __init__(self, process: subprocess.Popen | ForkedProcess, port: int, cgroup: Cgroup | None, limit: str):
        self.process, self.port, self.cgroup, self.limit = process, port, cgroup, limit
        self.url = f"http://127.0.0.1:{port}"
        self.output = process.stdout
        self.oom_killed = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup else 0

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group (gunicorn finishes in-flight requests), SIGKILL after `timeout`."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        self.process.wait()
        self.release()

    def ended(self) -> str:
        """How the replica ended, once it has (for logs and errors)."""
        code = self.process.returncode
        if self.oom_killed or (self.cgroup and self.oom_kills()):
            return f"OOMKilled: over its memory limit {self.limit} (exit code {code})"
        if code is not None and code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def release(self) -> None:
        if self.cgroup:
            self.cgroup.remove()


class ProcessLauncher:
    name = "process"

    def __init__(self, cgroups: Cgroups | None = None, zygotes: bool = True):
        self.cgroups = cgroups if cgroups is not None else Cgroups()
        self.use_zygotes = zygotes
        self.zygotes: dict[Path, Zygote] = {}  # by build context: a rolling update has two at once
        # the gateway drains a zygote's output into its function's logs: (stream, function, instance)
        self.watch: Callable[[IO[bytes], str, str], None] = lambda stream, function, instance: None

    def warnings(self) -> list[str]:
        if self.cgroups.usable:
            return []
        return ["memory limits are not enforced for process replicas: no writable memory cgroup on this host "
                "(run the gateway as root, or use --runtime podman)"]

    def _preexec(self, cgroup: Cgroup | None):
        def preexec():
            runner.set_parent_death_signal()
            if cgroup:
                cgroup.enter()
        return preexec

    def _zygote(self, deployment: Deployment, context: Path, env: dict[str, str]) -> Zygote | None:
        """The deployment's zygote when it can fork now; the first call starts it (None until it is ready)."""
        found = self.zygotes.get(context)
        if found is None:
            args = gunicorn_args(command(deployment, context))
            if self.use_zygotes and args is not None:
                name = f"{deployment.name}-zygote"
                limit = deployment.memory_limit_bytes
                cgroup = (self.cgroups.create(f"{name}-{context.parent.name}", limit)
                          if limit and self.cgroups.usable else None)
                # the port is each replica's (the zygote's placeholder is never bound)
                found = Zygote(context, args, runner.instance_env(deployment.fn, 8080, env),
                               self._preexec(cgroup), name, cgroup)
                self.zygotes[context] = found
                self.watch(found.output, deployment.name, name)
            return None
        if found.ready():
            return found
        if found.process.poll() is not None and not found.reported:
            found.reported = True
            log.warning("%s exited (code %s): %s replicas start as new processes (its log says why)",
                        found.name, found.process.returncode, deployment.name)
        return None

    def start(self, deployment: Deployment, context: Path, instance: str, env: dict[str, str]) -> ProcessReplica:
        port = free_port()
        limit = deployment.memory_limit_bytes
        cgroup = self.cgroups.create(instance, limit) if limit and self.cgroups.usable else None
        memory = (deployment.limits or {}).get("memory", "")
        zygote = self._zygote(deployment, context, env)
        if zygote is not None:
            try:
                return ProcessReplica(zygote.fork(port, str(cgroup.path) if cgroup else None), port, cgroup, memory)
            except (OSError, ValueError) as exc:
                log.warning("%s: %s could not fork it (%s); starting a new process", instance, zygote.name, exc)
        process = subprocess.Popen(command(deployment, context), cwd=context,
                                   env=runner.instance_env(deployment.fn, port, env), start_new_session=True,
                                   preexec_fn=self._preexec(cgroup), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        return ProcessReplica(process, port, cgroup, memory)

    def retire(self, context: Path) -> None:
        """The deployment built in `context` is gone: stop its zygote."""
        found = self.zygotes.pop(context, None)
        if found is not None:
            found.stop()

    def close(self) -> None:
        for context in list(self.zygotes):
            self.retire(context)
        self.cgroups.close()
