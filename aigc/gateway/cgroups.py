"""Memory limits for replicas that run as plain processes: one memory cgroup per replica.

A function's `limits.memory` is what Kubernetes enforces with the container's
cgroup; a process replica gets the same: its own cgroup (v1 `memory` controller
or v2 `memory.max`) under the gateway's, so the kernel counts every process of
the replica (gunicorn's master and workers) and its OOM killer acts at the
limit. The kernel kills one process; as Kubernetes does with cgroup v2's
`memory.oom.group`, the pool then ends the whole replica and replaces it.

Where no cgroup can be made (not root, no delegation) `Cgroups.usable` is
False and the gateway says at start that limits are not enforced.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

log = logging.getLogger("aigc.gateway")
ROOT = Path("/sys/fs/cgroup")
_OOM_KILL = re.compile(r"^oom_kill (\d+)$", re.M)


def own_path(version: int, proc_cgroup: str) -> str:
    """This process's cgroup path for the memory hierarchy (v1) or the unified one (v2)."""
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if (version == 1 and "memory" in controllers.split(",")) or (version == 2 and controllers == ""):
            return path
    return "/"


class Cgroup:
    """One replica's cgroup: add the replica's first process in its preexec, read OOM kills, remove."""

    def __init__(self, path: Path, version: int):
        self.path, self.version = path, version

    def enter(self) -> None:
        """Move the calling process into the cgroup (runs in the child, before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            found = _OOM_KILL.search((self.path / name).read_text())
        except OSError:
            return 0
        return int(found.group(1)) if found else 0

    def under_oom(self) -> bool:
        """v1 with the OOM killer disabled: the cgroup's processes wait at the limit (see containers.py)."""
        try:
            return "under_oom 1" in (self.path / "memory.oom_control").read_text()
        except OSError:
            return False

    def peak_bytes(self) -> int:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return 0

    def remove(self, timeout: float = 2.0) -> None:
        """Remove once the replica's processes are gone (a dying process leaves the cgroup a moment later)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    log.warning("cgroup %s could not be removed", self.path)
                    return
                time.sleep(0.05)


class Cgroups:
    """Makes per-replica memory cgroups below this gateway's own cgroup, if the host lets it."""

    def __init__(self, root: Path = ROOT, label: str = "aigc"):
        self.version, self.base = 0, None
        proc = Path("/proc/self/cgroup").read_text() if Path("/proc/self/cgroup").is_file() else ""
        if (root / "memory" / "cgroup.procs").is_file():
            self.version, mount = 1, root / "memory"
        elif (root / "cgroup.controllers").is_file():
            self.version, mount = 2, root
        else:
            return
        own = mount / own_path(self.version, proc).lstrip("/")
        for parent in (own, mount):
            self._remove_leftovers(parent)
            base = parent / f"{label}-{os.getpid()}"
            try:
                base.mkdir(exist_ok=True)
                if self.version == 2:
                    # v2: a cgroup with processes cannot hand out controllers; ours holds none
                    (base / "cgroup.subtree_control").write_text("+memory")
                self.base = base
                return
            except OSError:
                try:
                    base.rmdir()
                except OSError:
                    pass

    def _remove_leftovers(self, parent: Path) -> None:
        """Empty cgroups of gateways that died without closing (kill -9): named PREFIX-…-PID."""
        try:
            found = [p for p in parent.iterdir() if p.is_dir() and p.name.startswith("aigc-")]
        except OSError:
            return
        for stale in found:
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                for child in stale.iterdir():
                    if child.is_dir():
                        Cgroup(child, self.version).remove(0)
                Cgroup(stale, self.version).remove(0)

    @property
    def usable(self) -> bool:
        return self.base is not None

    def create(self, name: str, limit_bytes: int) -> Cgroup:
        path = self.base / name
        path.mkdir(exist_ok=True)
        if self.version == 1:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            try:  # with swap, the limit would only push pages out; count swap too where the kernel allows
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            except OSError:
                pass
        else:
            (path / "memory.max").write_text(str(limit_bytes))
            try:
                (path / "memory.swap.max").write_text("0")
            except OSError:
                pass
        return Cgroup(path, self.version)

    def close(self) -> None:
        if self.base is not None:
            for child in self.base.iterdir():
                if child.is_dir():
                    Cgroup(child, self.version).remove(0.5)
            Cgroup(self.base, self.version).remove(0.5)
