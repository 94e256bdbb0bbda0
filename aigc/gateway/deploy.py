"""Deployments: what the OpenFaaS API's FunctionDeployment describes, resolved to what runs it.

With the process runtime an image is resolved to the stack.yml function that
builds it (its template and handler), run as a process; with a container
runtime (`aigc up --runtime podman`) any local image runs, as faasd runs them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..runtime.config import parse_duration
from ..stack import Stack, StackFunction
from .cron import Schedule, ScheduleError, schedule_of
from .policy import Policy, PolicyError

NAMESPACE = "openfaas-fn"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Kubernetes quantities, as FunctionDeployment's limits and requests carry them
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m)?$")
NEXT_RUN = "com.aigc-functions.schedule.next-run"
LAST_RUN = "com.aigc-functions.schedule.last-run"
LAST_STATUS = "com.aigc-functions.schedule.last-status"
MIN_MEMORY = 16 << 20  # below this no Python process starts: a typo like "16" (bytes) is refused


def memory_bytes(quantity: str) -> int:
    found = _MEMORY.fullmatch(quantity)
    if not found:
        raise DeployError(f"memory {quantity!r} is not a quantity like 512Mi or 1Gi")
    value = int(float(found.group(1)) * _MEMORY_UNITS[found.group(2)])
    if value < MIN_MEMORY:
        raise DeployError(f"memory {quantity!r} is below {MIN_MEMORY >> 20}Mi, too little for any function")
    return value


def cpu_cores(quantity: str) -> float:
    found = _CPU.fullmatch(quantity)
    if not found or float(found.group(1)) == 0:
        raise DeployError(f"cpu {quantity!r} is not a quantity like 500m or 2")
    return float(found.group(1)) / (1000 if found.group(2) else 1)


def _resources(value: Any, key: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"memory", "cpu"} or \
            not all(isinstance(v, str) for v in value.values()):
        raise DeployError(f"'{key}' must be an object with string 'memory' and/or 'cpu', e.g. "
                          '{"memory": "512Mi", "cpu": "500m"}')
    if value.get("memory"):
        memory_bytes(value["memory"])
    if value.get("cpu"):
        cpu_cores(value["cpu"])
    return dict(value)


class DeployError(ValueError):
    """A deployment request that cannot be honoured; the message says what to change."""


@dataclass
class Deployment:
    fn: StackFunction                       # lang + handler + env to run
    policy: Policy
    env_vars: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None
    env_process: str = ""
    read_only_root: bool = False
    schedule: Schedule | None = None  # cron-connector annotations
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
    created: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.fn.name

    @property
    def memory_limit_bytes(self) -> int | None:
        memory = (self.limits or {}).get("memory")
        return memory_bytes(memory) if memory else None

    @property
    def max_inflight(self) -> int:
        try:
            return max(0, int(self.env_vars.get("max_inflight", "0")))
        except ValueError:
            return 0

    @property
    def exec_timeout(self) -> float:
        """The function's own exec_timeout (0 if unset or unreadable: the replica reports that at start)."""
        try:
            return parse_duration(self.env_vars.get("exec_timeout", "0"))
        except ValueError:
            return 0.0

    def status(self, replicas: int, available: int, invocations: int,
               schedule: dict[str, str] | None = None) -> dict[str, Any]:
        """FunctionStatus, as GET /system/functions returns it; a scheduled function's next and last runs are
        shown as annotations (Gateway.schedule_annotations), so `faas-cli describe` prints them."""
        annotations = dict(self.fn.annotations, **(schedule or {}))
        return {"name": self.name, "image": self.fn.image, "namespace": NAMESPACE, "envProcess": self.env_process,
                "envVars": self.env_vars, "constraints": [], "secrets": self.secrets, "labels": self.fn.labels,
                "annotations": annotations, "limits": self.limits, "requests": self.requests,
                "readOnlyRootFilesystem": self.read_only_root, "invocationCount": invocations, "replicas": replicas,
                "availableReplicas": available, "createdAt": self.created_at}


def from_stack(fn: StackFunction, max_replicas: int = 20) -> Deployment:
    try:
        policy = Policy.from_labels(fn.labels, max_replicas)
        limits, requests = _resources(fn.limits, "limits"), _resources(fn.requests, "requests")
        schedule = schedule_of(fn.annotations)
    except (PolicyError, DeployError, ScheduleError) as exc:
        raise DeployError(f"function {fn.name!r}: {exc}") from None
    return Deployment(fn=fn, policy=policy, env_vars=fn.env(), secrets=list(fn.secrets), limits=limits,
                      requests=requests, read_only_root=fn.read_only_root, schedule=schedule)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# variables that make the interpreter, the loader or a library run something of the deployer's choosing, and
# the ones this gateway sets itself: refused for process replicas, which run as the gateway's own user
_HOST_ENV_PREFIXES = ("PYTHON", "LD_", "DYLD_", "GCONV_", "MALLOC_")
_HOST_ENV_NAMES = {"PATH", "BROWSER", "PERL5OPT", "NODE_OPTIONS", "BASH_ENV", "ENV", "PORT", "AIGC_HOST",
                   "AIGC_STATE_DIR", "AIGC_SECRETS_DIR", "AIGC_FUNCTION_NAME"}


def check_env(env: dict[str, str]) -> None:
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise DeployError(f"env var name {name!r} must be letters, digits and '_', not starting with a digit")
        if "\0" in value:
            raise DeployError(f"env var {name} holds a NUL byte")


def check_process_env(env: dict[str, str]) -> None:
    """Refuse settings that would change what a process replica runs on the host (use a container to set them)."""
    for name in env:
        if name.upper().startswith(_HOST_ENV_PREFIXES) or name.upper() in _HOST_ENV_NAMES:
            raise DeployError(f"env var {name} cannot be set for a function run as a process: it changes what the "
                              "interpreter or loader runs, or how the gateway reaches the function (run the "
                              "gateway with --runtime podman to set it inside a container)")


def _str_map(body: dict, key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DeployError(f"'{key}' must be an object of string values")
    return dict(value)


def from_request(body: Any, stack: Stack, runs_images: bool = False, max_replicas: int = 20) -> Deployment:
    """A FunctionDeployment body (POST/PUT /system/functions) → Deployment. `runs_images`: the gateway
    has a container runtime, so an image that no stack.yml function builds can run too."""
    if not isinstance(body, dict):
        raise DeployError("body must be a FunctionDeployment JSON object with 'service' and 'image'")
    name, image = body.get("service"), body.get("image")
    if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
        raise DeployError("'service' must be a DNS label: lowercase letters, digits and '-', at most 63")
    if not isinstance(image, str) or not image:
        raise DeployError("'image' is required")
    source = next((f for f in stack.functions.values() if f.image == image), None)
    if source is None and not runs_images:
        known = sorted(f.image for f in stack.functions.values())
        raise DeployError(f"image {image!r} is not built by {stack.path.name} ({known}), and this gateway runs "
                          "functions as processes from their handlers; to run any image, start it with "
                          "`aigc up --runtime podman`, or deploy one of those images")
    labels, annotations, env = _str_map(body, "labels"), _str_map(body, "annotations"), _str_map(body, "envVars")
    check_env(env)
    secrets = body.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        raise DeployError("'secrets' must be a list of secret names")
    env_process, read_only = body.get("envProcess") or "", body.get("readOnlyRootFilesystem", False)
    if not isinstance(env_process, str):
        raise DeployError("'envProcess' must be a string: the command the function runs")
    if not isinstance(read_only, bool):
        raise DeployError("'readOnlyRootFilesystem' must be true or false")
    fn = StackFunction(name=name, lang=source.lang if source else "", handler=source.handler if source else None,
                       image=image, environment=env, labels=labels, annotations=annotations, secrets=secrets,
                       copy=source.copy if source else [])
    try:
        policy = Policy.from_labels(labels, max_replicas)
        schedule = schedule_of(annotations)
    except (PolicyError, ScheduleError) as exc:
        raise DeployError(str(exc)) from None
    return Deployment(fn=fn, policy=policy, env_vars=env, secrets=secrets, schedule=schedule,
                      limits=_resources(body.get("limits"), "limits"),
                      requests=_resources(body.get("requests"), "requests"), env_process=env_process,
                      read_only_root=read_only)
