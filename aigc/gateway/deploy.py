"""Deployments: what the OpenFaaS API's FunctionDeployment describes, resolved to a handler.

A cluster pulls `image`; this gateway cannot run images, so an image is
resolved to the stack.yml function that builds it (its template and handler).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..runtime.config import parse_duration
from ..stack import Stack, StackFunction
from .policy import Policy, PolicyError

NAMESPACE = "openfaas-fn"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


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
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
    created: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.fn.name

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

    def status(self, replicas: int, available: int, invocations: int) -> dict[str, Any]:
        """FunctionStatus, as GET /system/functions returns it."""
        return {"name": self.name, "image": self.fn.image, "namespace": NAMESPACE, "envProcess": self.env_process,
                "envVars": self.env_vars, "constraints": [], "secrets": self.secrets, "labels": self.fn.labels,
                "annotations": self.fn.annotations, "limits": self.limits, "requests": self.requests,
                "readOnlyRootFilesystem": False, "invocationCount": invocations, "replicas": replicas,
                "availableReplicas": available, "createdAt": self.created_at}


def from_stack(fn: StackFunction) -> Deployment:
    try:
        policy = Policy.from_labels(fn.labels)
    except PolicyError as exc:
        raise DeployError(f"function {fn.name!r}: {exc}") from None
    return Deployment(fn=fn, policy=policy, env_vars=fn.env(), secrets=list(fn.secrets), limits=fn.limits,
                      requests=fn.requests)


def _str_map(body: dict, key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DeployError(f"'{key}' must be an object of string values")
    return dict(value)


def from_request(body: Any, stack: Stack) -> Deployment:
    """A FunctionDeployment body (POST/PUT /system/functions) → Deployment."""
    if not isinstance(body, dict):
        raise DeployError("body must be a FunctionDeployment JSON object with 'service' and 'image'")
    name, image = body.get("service"), body.get("image")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise DeployError("'service' must be a DNS label: lowercase letters, digits and '-', at most 63")
    if not isinstance(image, str) or not image:
        raise DeployError("'image' is required")
    source = next((f for f in stack.functions.values() if f.image == image), None)
    if source is None:
        known = sorted(f.image for f in stack.functions.values())
        raise DeployError(f"image {image!r} cannot be run by the local gateway: it runs images built from "
                          f"{stack.path.name}, which are {known}")
    labels, annotations, env = _str_map(body, "labels"), _str_map(body, "annotations"), _str_map(body, "envVars")
    secrets = body.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        raise DeployError("'secrets' must be a list of secret names")
    fn = StackFunction(name=name, lang=source.lang, handler=source.handler, image=image,
                       environment=env, labels=labels, annotations=annotations, secrets=secrets)
    try:
        policy = Policy.from_labels(labels)
    except PolicyError as exc:
        raise DeployError(str(exc)) from None
    return Deployment(fn=fn, policy=policy, env_vars=env, secrets=secrets, limits=body.get("limits"),
                      requests=body.get("requests"), env_process=body.get("envProcess") or "")
