"""Knative Services (serving.knative.dev/v1) generated from stack.yml, and their checks.

stack.yml is the one source of truth: `aigc knative generate` writes
knative/<fn>.yaml, and a test fails when a committed file is stale. The
checks mirror what Knative's webhook enforces on autoscaling annotations,
which the CRD schema alone does not (values there are plain strings).

One Service per function and per way its model reaches the container:
- knative/<fn>.yaml        baked into the image (`faas-cli build` with AIGC_MODELS), nothing to mount;
- knative/pull/<fn>.yaml   pulled at start from AIGC_MODEL_REMOTE into an emptyDir (feature flag
                           kubernetes.podspec-volumes-emptydir); remote and credentials from the Secret
                           `aigc-model-remote`;
- knative/mount/<fn>.yaml  a PersistentVolumeClaim `aigc-models` mounted read-only at the store path
                           (kubernetes.podspec-persistent-volume-claim).
The last two run with a read-only root filesystem and a writable /tmp.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .gateway.policy import Policy
from .runtime.config import parse_duration
from .stack import Stack, StackFunction

AS = "autoscaling.knative.dev/"
MAX_TIMEOUT_SECONDS = 600  # Knative's default max-revision-timeout-seconds
MAX_CONCURRENCY = 1000     # container-concurrency-max-limit
HEADER = "# Generated from stack.yml by `aigc knative generate`; edit stack.yml, not this file.\n"
DELIVERIES = ("baked", "pull", "mount")
REMOTE_SECRET = "aigc-model-remote"  # AIGC_MODEL_REMOTE, AIGC_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
MODELS_CLAIM = "aigc-models"
PULL_CACHE_LIMIT = "4Gi"  # the pulled store's bound: the largest model with its adapters fits


def service(fn: StackFunction, delivery: str = "baked") -> dict:
    policy = Policy.from_labels(fn.labels)
    env = fn.env()
    annotations = {
        AS + "class": "kpa.autoscaling.knative.dev",
        AS + "metric": "concurrency",
        AS + "target": _number(policy.target),
        AS + "min-scale": "0" if policy.zero else str(policy.min),
        AS + "max-scale": str(policy.max),
    }
    if policy.zero:
        # Knative's scale-to-zero grace is cluster-wide; keeping the last pod this long is per revision
        annotations[AS + "scale-to-zero-pod-retention-period"] = f"{int(min(policy.zero_duration, 3600))}s"
    spec: dict = {
        "containerConcurrency": int(env.get("max_inflight", "0") or 0),
        "timeoutSeconds": int(min(parse_duration(env.get("exec_timeout", "60s")) + 1, MAX_TIMEOUT_SECONDS)),
        "containers": [{
            "name": "function",
            "image": fn.image,
            "ports": [{"containerPort": 8080}],
            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
            "readinessProbe": {"httpGet": {"path": "/_/ready"}, "periodSeconds": 1},
            "livenessProbe": {"httpGet": {"path": "/_/health"}, "periodSeconds": 10},
        }],
    }
    resources = {k: v for k, v in (("requests", fn.requests), ("limits", fn.limits)) if v}
    if resources:
        spec["containers"][0]["resources"] = resources
    _deliver(spec, delivery)
    _mount_secrets(spec, fn.secrets)
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": fn.name, "labels": {"app.kubernetes.io/part-of": "aigc-functions"}},
            "spec": {"template": {"metadata": {"annotations": annotations}, "spec": spec}}}


def _deliver(spec: dict, delivery: str) -> None:
    """Volumes and settings for a model that is not baked into the image."""
    if delivery == "baked":
        return
    if delivery not in DELIVERIES:
        raise ValueError(f"delivery must be one of {DELIVERIES}, got {delivery!r}")
    container = spec["containers"][0]
    env = [e for e in container["env"] if e["name"] != "AIGC_MODEL_STORE"]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes = [{"name": "tmp", "emptyDir": {}}]
    if delivery == "pull":
        env.append({"name": "AIGC_MODEL_STORE", "value": "/models"})
        container["envFrom"] = [{"secretRef": {"name": REMOTE_SECRET}}]
        mounts.append({"name": "models", "mountPath": "/models"})
        volumes.append({"name": "models", "emptyDir": {"sizeLimit": PULL_CACHE_LIMIT}})
    else:
        env.append({"name": "AIGC_MODEL_STORE", "value": "/mnt/models"})
        mounts.append({"name": "models", "mountPath": "/mnt/models", "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}})
    container["env"] = sorted(env, key=lambda e: e["name"])
    container["volumeMounts"] = mounts
    container["securityContext"] = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    spec["volumes"] = volumes


def _mount_secrets(spec: dict, names: list[str]) -> None:
    """Stack secrets as files under /var/openfaas/secrets, where OpenFaaS mounts them (one Kubernetes
    Secret per name, holding a key of that name, as `faas-cli secret create` makes them)."""
    if not names:
        return
    container = spec["containers"][0]
    container.setdefault("volumeMounts", []).append(
        {"name": "openfaas-secrets", "mountPath": "/var/openfaas/secrets", "readOnly": True})
    spec.setdefault("volumes", []).append(
        {"name": "openfaas-secrets", "projected": {"sources": [{"secret": {"name": n}} for n in names]}})


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def check(manifest: dict) -> list[str]:
    """Problems Knative's admission webhook would report; empty when the Service is acceptable."""
    problems = []
    if manifest.get("apiVersion") != "serving.knative.dev/v1" or manifest.get("kind") != "Service":
        problems.append("apiVersion/kind must be serving.knative.dev/v1 Service")
    template = manifest.get("spec", {}).get("template", {})
    ann = template.get("metadata", {}).get("annotations", {})
    spec = template.get("spec", {})

    def num(key):
        try:
            return float(ann[key]) if key in ann else None
        except ValueError:
            problems.append(f"{key}={ann[key]!r} is not a number")
            return None

    lo, hi, target = num(AS + "min-scale"), num(AS + "max-scale"), num(AS + "target")
    for key, value in ((AS + "min-scale", lo), (AS + "max-scale", hi)):
        if value is not None and (value < 0 or not value.is_integer()):
            problems.append(f"{key} must be a non-negative integer")
    if lo is not None and hi is not None and hi and hi < lo:
        problems.append("max-scale must be >= min-scale")
    if target is not None and target < 0.01:
        problems.append("target must be >= 0.01")
    if ann.get(AS + "metric", "concurrency") not in ("concurrency", "rps"):
        problems.append("metric must be concurrency or rps with the KPA class")
    for key in ("scale-to-zero-pod-retention-period", "scale-down-delay"):
        if AS + key in ann:
            try:
                if not 0 <= parse_duration(ann[AS + key]) <= 3600:
                    problems.append(f"{key} must be within 0s..1h")
            except ValueError:
                problems.append(f"{key}={ann[AS + key]!r} is not a duration")
    cc = spec.get("containerConcurrency", 0)
    if not isinstance(cc, int) or not 0 <= cc <= MAX_CONCURRENCY:
        problems.append(f"containerConcurrency must be an integer in 0..{MAX_CONCURRENCY}")
    timeout = spec.get("timeoutSeconds", 300)
    if not isinstance(timeout, int) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        problems.append(f"timeoutSeconds must be in 1..{MAX_TIMEOUT_SECONDS}")
    containers = spec.get("containers") or []
    if len(containers) != 1 or not containers[0].get("image"):
        problems.append("exactly one container with an image is required")
    return problems


def render(fn: StackFunction, delivery: str = "baked") -> str:
    manifest = service(fn, delivery)
    problems = check(manifest)
    if problems:
        raise ValueError(f"{fn.name}: " + "; ".join(problems))
    return HEADER + yaml.safe_dump(manifest, sort_keys=False)


def path_of(out_dir: Path, fn: StackFunction, delivery: str) -> Path:
    return out_dir / f"{fn.name}.yaml" if delivery == "baked" else out_dir / delivery / f"{fn.name}.yaml"


def generate(stack: Stack, out_dir: Path) -> dict[Path, str]:
    """The files knative/ should hold, by path."""
    return {path_of(out_dir, fn, d): render(fn, d) for fn in stack.functions.values() for d in DELIVERIES}
