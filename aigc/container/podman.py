"""Podman, driven through its CLI: build function images and run them as containers.

Debian's podman works on machines without a Docker daemon. Two settings make
it work on hosts like this project's CI (cgroup v1, low hard ulimits), where
podman's default runtime crun cannot start a container: runc, and ulimits
lowered to what the host allows. They go in a containers.conf that
`CONTAINERS_CONF` names, unless the caller already set one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CONF = """[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
"""


class PodmanError(RuntimeError):
    pass


class LoadFailed(PodmanError):
    """The function in the container reported that its model cannot load (`failed: …` on /_/ready)."""

    def __init__(self, container: str, error: str):
        super().__init__(f"container {container}: {error}")
        self.error = error


def available() -> bool:
    return shutil.which("podman") is not None


def environment(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and shutil.which("runc"):
        conf = state_dir / "containers.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        if not conf.is_file() or conf.read_text() != CONF:
            conf.write_text(CONF)
        env["CONTAINERS_CONF"] = str(conf)
    return env


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aigc" / "podman"


@dataclass
class Container:
    podman: "Podman"
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.podman("logs", self.name, check=False).stdout

    def running(self) -> bool:
        out = self.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
        return out == "true"

    def wait(self, path: str = "/_/ready", timeout: float = 120.0, interval: float = 0.02) -> float:
        """Seconds until `path` answers 200; PodmanError with the log tail if the container dies or times out."""
        started = next_check = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):
                    return time.monotonic() - started
            except urllib.error.HTTPError as exc:
                if exc.code == 503:  # a model that cannot load says so: waiting will not help
                    try:
                        error = json.loads(exc.read()).get("error", "")
                    except (ValueError, AttributeError):
                        error = ""
                    if error.startswith("failed:"):
                        raise LoadFailed(self.name, error) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() >= next_check:  # `podman inspect` costs ~50 ms: not on every poll
                if not self.running():
                    raise PodmanError(f"container {self.name} stopped before {path} answered:\n"
                                      f"{self.logs()[-3000:]}")
                next_check = time.monotonic() + 1.0
            time.sleep(interval)
        raise PodmanError(f"container {self.name}: {path} did not answer within {timeout:.0f}s:\n"
                          f"{self.logs()[-3000:]}")

    def remove(self) -> None:
        self.podman("rm", "--force", "--time", "2", self.name, check=False)


class Podman:
    def __init__(self, state_dir: Path | None = None):
        if not available():
            raise PodmanError("podman is not installed (Debian: apt-get install podman buildah runc)")
        self.env = environment(state_dir or default_state_dir())

    def __call__(self, *args: str, check: bool = True, timeout: float | None = None,
                 stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
        proc = subprocess.run(["podman", *args], env=self.env, stdout=stdout, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            tail = (proc.stdout or "")[-4000:]
            raise PodmanError(f"podman {' '.join(args[:2])} … failed ({proc.returncode}):\n{tail}")
        return proc

    def image_exists(self, ref: str) -> bool:
        return self("image", "exists", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(json.loads(self("image", "inspect", ref).stdout)[0]["Size"])

    def image_labels(self, ref: str) -> dict[str, str]:
        return json.loads(self("image", "inspect", ref).stdout)[0].get("Labels") or {}

    def build(self, context: Path, tag: str, build_args: dict[str, str], log: Path, volumes: list[str] = (),
              no_cache: bool = False, timeout: float | None = None) -> None:
        """`docker build -t TAG .` in the context, as faas-cli runs it, plus what this host needs:
        host networking to reach PyPI, no pulls (the base is local), docker format to keep HEALTHCHECK."""
        args = ["build", "--network", "host", "--pull=never", "--format", "docker", "-t", tag]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for volume in volumes:
            args += ["--volume", volume]
        if no_cache:
            args.append("--no-cache")
        args.append(str(context))
        with open(log, "w") as out:
            proc = subprocess.run(["podman", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
        if proc.returncode != 0:
            raise PodmanError(f"building {tag} failed ({proc.returncode}); log {log}:\n"
                              f"{log.read_text()[-4000:]}")

    def run(self, image: str, name: str, port: int, env: dict[str, str] | None = None, user: str | None = None,
            read_only: bool = False, volumes: list[str] = (), memory: str | None = None) -> Container:
        """`podman run -d` on the host network, the function listening on `port` (its PORT)."""
        # no HEALTHCHECK timers: podman runs them through systemd, which hosts like CI lack
        args = ["run", "-d", "--name", name, "--network", "host", "--no-healthcheck", "-e", f"PORT={port}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        if user:
            args += ["--user", user]
        if read_only:
            args.append("--read-only")  # podman mounts tmpfs on /tmp, /run and /var/tmp, as Kubernetes' emptyDir
        for volume in volumes:
            args += ["--volume", volume]
        if memory:
            args += ["--memory", memory]
        self("rm", "--force", name, check=False)
        self(*args, image)
        return Container(self, name, port)
