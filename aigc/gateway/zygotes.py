"""Replicas forked from a zygote: scale from zero without a process start or a model load.

For a deployment whose fprocess is `python -m gunicorn …` (every template's),
the process launcher starts a zygote (aigc/runtime/zygote.py) beside the first
replica: the deployment's app with its models loaded, waiting on a Unix socket.
Later replicas are forked from it, ready in tens of milliseconds, sharing its
pages copy-on-write. Until the zygote is ready, or when it cannot fork (it
says why in the function's logs and exits), replicas start as new processes.
A zygote holds one replica's memory while its function is scaled to zero:
that is the price of the fast start (`AIGC_ZYGOTE=off` turns it off).

Pages the zygote touched stay charged to the zygote's memory cgroup, not the
replica's: a forked replica's limit counts what it writes, which is what a
fresh process would have on top of the shared model.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..runtime import zygote as protocol

log = logging.getLogger("aigc.gateway")
GUNICORN = ("-m", "gunicorn")


def gunicorn_args(argv: list[str]) -> list[str] | None:
    """The gunicorn arguments of a `python -m gunicorn …` fprocess, or None for any other command."""
    if len(argv) >= 3 and Path(argv[0]).name.startswith("python") and tuple(argv[1:3]) == GUNICORN:
        return argv[3:]
    return None


class ForkedProcess:
    """What the pool needs of a subprocess.Popen, for a replica that is the zygote's child, not ours:
    the zygote reports its exit status on the connection that asked for it."""

    def __init__(self, pid: int, conn: socket.socket, stdout):
        self.pid, self.stdout, self.returncode = pid, stdout, None
        self.args = f"replica forked by a zygote (pid {pid})"
        self._conn = conn
        self._buffer = b""

    def _read(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        ready, _, _ = select.select([self._conn], [], [], timeout)
        if not ready:
            return
        try:
            chunk = self._conn.recv(protocol.MAX_MESSAGE)
        except OSError:
            chunk = b""
        self._buffer += chunk
        if b"\n" in self._buffer:
            try:
                self.returncode = int(json.loads(self._buffer.split(b"\n", 1)[0])["exit"])
            except (ValueError, KeyError, TypeError):
                self.returncode = -signal.SIGKILL
        elif not chunk:  # the zygote is gone, and its replicas with it (they die with their parent)
            self.returncode = -signal.SIGTERM
        if self.returncode is not None:
            self._conn.close()

    def poll(self) -> int | None:
        self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._read(left)
        return self.returncode


class Zygote:
    """One deployment's zygote process, started in its build context with the replicas' environment."""

    def __init__(self, context: Path, args: list[str], env: dict[str, str], preexec, name: str, cgroup=None):
        self.name, self.cgroup = name, cgroup
        self.folder = Path(tempfile.mkdtemp(prefix="aigc-zygote-"))  # a socket path must stay under 108 bytes
        self.path = self.folder / "socket"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aigc.runtime.zygote", str(self.path), "--", *args], cwd=context, env=env,
            start_new_session=True, preexec_fn=preexec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = self.process.stdout
        self.reported = False

    def ready(self) -> bool:
        return self.process.poll() is None and self.path.exists()

    def fork(self, port: int, cgroup: str | None) -> ForkedProcess:
        """A replica on `port`, in `cgroup`; raises OSError or ValueError when the zygote cannot make one."""
        read_end, write_end = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(5.0)
            conn.connect(str(self.path))
            request = json.dumps({"port": port, "cgroup": cgroup}).encode() + b"\n"
            socket.send_fds(conn, [request], [write_end])
            os.close(write_end)
            write_end = -1
            reply, _ = protocol.read_message(conn)
            if "pid" not in reply:
                raise ValueError(f"the zygote refused: {reply.get('error', reply)}")
            conn.setblocking(True)
            return ForkedProcess(int(reply["pid"]), conn, os.fdopen(read_end, "rb"))
        except BaseException:
            conn.close()
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
            raise

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.cgroup:
            self.cgroup.remove()

