"""Run functions from a stack.yml as local processes, without a cluster.

Each instance is the template's real entrypoint started in its assembled
build context, with the function's environment, bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import buildctx
from .runtime.zygote import die_with_parent as set_parent_death_signal  # noqa: F401 (the gateway's too)
from .stack import StackFunction


@dataclass
class Instance:
    fn: StackFunction
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.fn.name} exited with code {self.process.returncode} before it was ready")
            try:
                with urllib.request.urlopen(self.url + "/_/ready", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.02)
        raise TimeoutError(f"{self.fn.name} was not ready after {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


GATEWAY_ONLY = ("AIGC_STATE_DIR",)  # where the gateway keeps its password and queue: not the functions' business


def instance_env(fn: StackFunction, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, then the function's, then `extra`; the address it binds comes last, so
    no function setting can make it listen elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_ONLY}
    env.update(fn.env())
    env.update(extra or {})
    env.update({"PORT": str(port), "AIGC_HOST": "127.0.0.1", "AIGC_FUNCTION_NAME": fn.name,
                "PYTHONUNBUFFERED": "1"})
    return env


def launch(context: Path, fn: StackFunction, port: int, extra_env: dict[str, str] | None = None,
           die_with_parent: bool = False, **popen) -> Instance:
    """Start the template's entrypoint in an already assembled build context."""
    process = subprocess.Popen(buildctx.entrypoint(context), cwd=context, env=instance_env(fn, port, extra_env),
                               start_new_session=True, preexec_fn=set_parent_death_signal if die_with_parent else None,
                               **popen)
    return Instance(fn, port, process)


def start(fn: StackFunction, root: Path, port: int, extra_env: dict[str, str] | None = None,
          build_dir: Path | None = None, **popen) -> Instance:
    return launch(buildctx.assemble(fn, root, build_dir), fn, port, extra_env, **popen)
