"""Replicas as containers (`aigc up --runtime podman`), as faasd runs them with containerd.

Any local image that follows the OpenFaaS watchdog contract (HTTP on port
8080) runs: published on a free 127.0.0.1 port, with the deployment's env
vars (and `fprocess` from `envProcess`, which watchdog images read), its
secrets read-only at /var/openfaas/secrets, `readOnlyRootFilesystem`, and
limits/requests as podman's --memory/--cpus/--memory-reservation/--cpu-shares.
`podman run` stays attached, so the replica's output arrives on a pipe like a
process replica's.

An out-of-memory kill must be seen to be reported: podman with runc on cgroup
v1 does not record OOMKilled, and the container's cgroup (with its counter)
is gone the moment its main process dies. So on v1 the container runs with
the kernel's OOM killer disabled for its cgroup: at the limit its processes
wait, the pool sees `under_oom`, and ends the container itself, as the kernel
would have. Containers carry a label naming this gateway's state
folder, so a restarted gateway removes what a crashed one left.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

from .. import runner
from ..container.podman import Podman, PodmanError
from .cgroups import Cgroup, own_path
from .deploy import Deployment, DeployError, cpu_cores, memory_bytes
from .processes import free_port

LABEL = "com.aigc-functions.gateway"
SECRETS = "/var/openfaas/secrets"
WATCHDOG_PORT = 8080
CGROUP_V1 = Path("/sys/fs/cgroup/memory/cgroup.procs").is_file()


def gateway_id(state_dir: Path) -> str:
    """The label value that marks this gateway's containers (one per state folder)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]


class ContainerReplica:
    def __init__(self, podman: Podman, name: str, process: subprocess.Popen, port: int, limit: str):
        self.podman, self.name, self.process, self.port, self.limit = podman, name, process, port, limit
        self.url = f"http://127.0.0.1:{port}"
        self.output = process.stdout
        self.oom_killed = False
        self._cgroup: Cgroup | None = None
        self._state: dict | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def _memory_cgroup(self) -> Cgroup | None:
        """The container's memory cgroup (v1 here), once podman has made it, to read OOM kills while it
        runs: the kernel may kill a worker process and leave the container up."""
        if self._cgroup is None:
            pid = self.podman("inspect", "--format", "{{.State.Pid}}", self.name, check=False).stdout.strip()
            if pid.isdigit() and pid != "0":
                try:
                    text = Path(f"/proc/{pid}/cgroup").read_text()
                except OSError:
                    return None
                v1 = Path("/sys/fs/cgroup/memory")
                path = v1 / own_path(1, text).lstrip("/") if v1.is_dir() else \
                    Path("/sys/fs/cgroup") / own_path(2, text).lstrip("/")
                self._cgroup = Cgroup(path, 1 if v1.is_dir() else 2)
        return self._cgroup

    def oom_kills(self) -> int:
        if not self.limit or not self.alive():
            return 0
        cgroup = self._memory_cgroup()
        if cgroup is None:
            return 0
        return int(cgroup.under_oom()) if cgroup.version == 1 else cgroup.oom_kills()

    def kill(self) -> None:
        self.podman("kill", self.name, check=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.podman("stop", "--time", str(int(max(1, timeout))), self.name, check=False)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.release()

    def _inspect(self) -> dict:
        if self._state is None:
            out = self.podman("inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}}", self.name,
                              check=False).stdout.split()
            self._state = {"oom": out[:1] == ["true"], "code": int(out[1]) if len(out) > 1 and
                           out[1].lstrip("-").isdigit() else self.process.returncode}
        return self._state

    def ended(self) -> str:
        state = self._inspect()
        if self.oom_killed or state["oom"]:
            return f"OOMKilled: over its memory limit {self.limit} (exit code {state['code']})"
        return f"exited with code {state['code']}"

    def release(self) -> None:
        self._inspect()  # before the container and its state are gone
        self.podman("rm", "--force", "--time", "1", self.name, check=False)


class PodmanLauncher:
    name = "podman"

    def __init__(self, state_dir: Path, podman: Podman | None = None):
        self.podman = podman or Podman()
        self.gateway_id = gateway_id(state_dir)
        self.remove_leftovers()

    def warnings(self) -> list[str]:
        return []

    def remove_leftovers(self) -> None:
        found = self.podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}={self.gateway_id}",
                            check=False).stdout.split()
        if found:
            self.podman("rm", "--force", "--time", "1", *found, check=False)

    def check_image(self, image: str) -> None:
        if not self.podman.image_exists(image):
            raise DeployError(f"image {image!r} is not in podman's local storage: build it "
                              f"(`aigc images build FUNCTION`, or `faas-cli build`) or `podman pull` it first")

    def start(self, deployment: Deployment, mount: Path, instance: str, env: dict[str, str]) -> ContainerReplica:
        port = free_port()
        name = f"aigc-{instance}-{uuid.uuid4().hex[:6]}"
        args = ["run", "--name", name, "--label", f"{LABEL}={self.gateway_id}", "--pull=never",
                "--no-healthcheck", "--publish", f"127.0.0.1:{port}:{WATCHDOG_PORT}",
                "--volume", f"{mount}:{SECRETS}:ro,U"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        if deployment.env_process:
            args += ["--env", f"fprocess={deployment.env_process}"]
        if deployment.read_only_root:
            args.append("--read-only")  # with tmpfs at /tmp, as Kubernetes' emptyDir in OpenFaaS
        limits, requests = deployment.limits or {}, deployment.requests or {}
        if limits.get("memory"):
            args += ["--memory", str(memory_bytes(limits["memory"])), "--memory-swap",
                     str(memory_bytes(limits["memory"]))]
            if CGROUP_V1:
                args.append("--oom-kill-disable")
        if limits.get("cpu"):
            args += ["--cpus", f"{cpu_cores(limits['cpu']):g}"]
        if requests.get("memory"):
            args += ["--memory-reservation", str(memory_bytes(requests["memory"]))]
        if requests.get("cpu"):
            args += ["--cpu-shares", str(max(2, int(cpu_cores(requests["cpu"]) * 1024)))]
        process = subprocess.Popen(["podman", *args, deployment.fn.image], env=self.podman.env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=runner.set_parent_death_signal)
        return ContainerReplica(self.podman, name, process, port, limits.get("memory", ""))

    def close(self) -> None:
        self.remove_leftovers()


def launcher(state_dir: Path) -> PodmanLauncher:
    try:
        return PodmanLauncher(state_dir)
    except PodmanError as exc:
        raise SystemExit(f"aigc up --runtime podman: {exc}") from None
