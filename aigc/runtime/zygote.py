"""A zygote: one deployment's app and models loaded once, its replicas forked from it.

    python -m aigc.runtime.zygote SOCKET -- GUNICORN_ARGS…

The local gateway starts one per deployment, in the deployment's build context
with its environment, when the template's fprocess is `python -m gunicorn …`.
It reads gunicorn's configuration and imports the app as `--preload` would,
loads every model on one engine thread (`Model.fork_safe` models only: their
engines keep no threads a fork would lose), then waits on a Unix socket. Each
connection asks for one replica: a JSON line `{"port": …, "cgroup": …}` with
the write end of the replica's log pipe passed as SCM_RIGHTS. The zygote forks;
the child starts a new session, joins the cgroup, writes its output to the
pipe and runs gunicorn's arbiter on the port with the app and models already
in memory (shared copy-on-write), so it is ready in milliseconds instead of a
process start plus a model load. The zygote answers `{"pid": …}` and, when
that replica ends, `{"exit": CODE}` (negative: the signal, as subprocess
reports it), then closes the connection. Replicas die with their zygote, and
the zygote with its gateway (PR_SET_PDEATHSIG).

A zygote that cannot fork replicas (a model that is not fork-safe, several
workers per replica, a model that fails to load) prints why and exits with
EXIT_UNFORKABLE; the gateway then starts each replica as a new process.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

EXIT_UNFORKABLE = 3
MAX_MESSAGE = 4096


def die_with_parent() -> None:
    # PR_SET_PDEATHSIG: SIGTERM when the parent ends, even by kill -9. It fires when the forking
    # *thread* ends: fork from a long-lived thread (the gateway's event loop, the zygote's only one).
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def read_message(conn: socket.socket, with_fd: bool = False) -> tuple[dict, list[int]]:
    """One JSON line from `conn` (and the descriptors sent with its first bytes)."""
    data, fds = b"", []
    while not data.endswith(b"\n"):
        if with_fd and not fds:
            chunk, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 1)
        else:
            chunk = conn.recv(MAX_MESSAGE)
        if not chunk:
            raise ConnectionError("the connection closed before a whole message")
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise ValueError("message too long")
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a message is a JSON object")
    return message, list(fds)


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:  # the gateway let go of this replica: nobody to tell
        pass


def _spawn_request(conn: socket.socket) -> tuple[int, str | None, int]:
    conn.settimeout(2.0)
    message, fds = read_message(conn, with_fd=True)
    try:
        port, cgroup = message.get("port"), message.get("cgroup")
        if len(fds) != 1:
            raise ValueError("send the replica's log pipe with the request")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port must be 1..65535, got {port!r}")
        if cgroup is not None and not (isinstance(cgroup, str) and cgroup.startswith("/sys/fs/cgroup/")):
            raise ValueError(f"cgroup must be a path under /sys/fs/cgroup, got {cgroup!r}")
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise
    return port, cgroup, fds[0]


def _become_replica(app, port: int, cgroup: str | None, log_fd: int, settled: int) -> None:
    """In the forked child: never returns. Closes `settled` once it leads its own process group and is
    in its cgroup, so the pid the zygote then reports can be signalled as a group at once."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        die_with_parent()
        try:
            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                    fh.write(str(os.getpid()))
        finally:
            os.close(settled)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.environ["PORT"] = str(port)
        host = app.cfg.bind[0].rsplit(":", 1)[0]
        app.cfg.set("bind", [f"{host}:{port}"])
        from gunicorn.arbiter import Arbiter  # imported by main() before the fork: costs nothing here

        Arbiter(app).run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(replicas: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = replicas.pop(pid, None)
        if conn is not None:
            _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()


def serve(app, path: str) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up pipe is what matters
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(16)
    replicas: dict[int, socket.socket] = {}
    gc.freeze()  # what is loaded now stays out of the collector's sweeps: fewer pages copied in replicas
    print(f"zygote ready on {path}: replicas fork with their models loaded", flush=True)
    while True:
        readable, _, _ = select.select([server, wake_r], [], [])
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 256):
                        break
                except BlockingIOError:
                    break
            _reap(replicas)
        if server in readable:
            conn, _ = server.accept()
            try:
                port, cgroup, log_fd = _spawn_request(conn)
            except (OSError, ValueError) as exc:
                _send(conn, {"error": str(exc)})
                conn.close()
                continue
            sys.stdout.flush()
            settled_r, settled_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                for fd in (server.fileno(), wake_r, wake_w, conn.fileno(), settled_r,
                           *(c.fileno() for c in replicas.values())):
                    os.close(fd)
                _become_replica(app, port, cgroup, log_fd, settled_w)
            os.close(log_fd)
            os.close(settled_w)
            os.read(settled_r, 1)  # EOF once the child has its own group (or has died)
            os.close(settled_r)
            replicas[pid] = conn
            _send(conn, {"pid": pid})


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m aigc.runtime.zygote SOCKET -- GUNICORN_ARGS…", file=sys.stderr)
        return 2
    path, gunicorn_args = argv[0], argv[2:]
    started = time.perf_counter()
    from .config import Settings

    settings = Settings.from_env()
    if settings.workers > 1:  # each replica's workers share a metrics folder made for that replica
        print("zygote: AIGC_WORKERS > 1; replicas start as new processes", flush=True)
        return EXIT_UNFORKABLE
    from gunicorn.app.wsgiapp import WSGIApplication

    importlib.import_module("gunicorn.arbiter")  # what each replica runs: imported once, here

    sys.argv = ["gunicorn", *gunicorn_args]
    app = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
    app.cfg.worker_class  # noqa: B018  (imports the worker's module)
    runtime = getattr(app.wsgi(), "extensions", {}).get("aigc")
    if runtime is None:
        print("zygote: the app is not an aigc runtime app; replicas start as new processes", flush=True)
        return EXIT_UNFORKABLE
    reason = runtime.load_before_fork()
    if reason:
        print(f"zygote: {reason}; replicas start as new processes", flush=True)
        return EXIT_UNFORKABLE
    print(f"zygote: app and models loaded in {time.perf_counter() - started:.2f} s", flush=True)
    serve(app, path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
