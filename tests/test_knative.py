"""knative/ is generated from stack.yml, fresh, and acceptable to Knative."""

from __future__ import annotations

import copy

import pytest
import yaml

from aigc import knative, stack

from conftest import REPO

CRD = REPO.parent / "shared" / "spec" / "knative-serving-service-crd.yaml"


@pytest.fixture
def st(monkeypatch):
    for var in ("REGISTRY", "OPENFAAS_URL"):  # the committed files use the defaults
        monkeypatch.delenv(var, raising=False)
    return stack.load(REPO / "stack.yml")


def test_committed_manifests_are_fresh(st):
    wanted = knative.generate(st, REPO / "knative")
    for path, text in wanted.items():
        assert path.is_file() and path.read_text() == text, f"{path.name} is stale: run `aigc knative generate`"
    assert set((REPO / "knative").rglob("*.yaml")) == set(wanted)


def test_manifests_carry_the_stack_settings(st):
    for fn in st.functions.values():
        m = knative.service(fn)
        ann = m["spec"]["template"]["metadata"]["annotations"]
        spec = m["spec"]["template"]["spec"]
        labels = fn.labels
        assert ann["autoscaling.knative.dev/max-scale"] == labels["com.openfaas.scale.max"]
        zero = labels.get("com.openfaas.scale.zero") == "true"
        assert ann["autoscaling.knative.dev/min-scale"] == ("0" if zero else labels.get("com.openfaas.scale.min", "1"))
        assert spec["containerConcurrency"] == int(fn.env()["max_inflight"])
        container = spec["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/_/ready"
        assert container["image"] == fn.image and knative.check(m) == []


def _closed(schema):
    """Emulate the API server's pruning: unknown fields are errors where the schema lists properties."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.mark.skipif(not CRD.is_file(), reason="the Knative CRD schema sits beside the repo only in this project's CI")
def test_manifests_validate_against_the_service_crd_schema(st):
    import jsonschema

    crd = yaml.safe_load(CRD.read_text())
    schema = _closed(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft7Validator(schema)
    for fn in st.functions.values():
        for delivery in knative.DELIVERIES:
            errors = [e.message for e in validator.iter_errors(knative.service(fn, delivery))]
            assert errors == [], (fn.name, delivery, errors)
    broken = knative.service(next(iter(st.functions.values())))
    broken["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    broken["spec"]["template"]["spec"]["containerConcurrency"] = "eight"
    assert len(list(validator.iter_errors(broken))) == 2


@pytest.mark.parametrize("key, value, fragment", [
    ("max-scale", "1", "max-scale must be >= min-scale"),
    ("target", "0.001", "target must be >= 0.01"),
    ("metric", "cpu", "metric must be"),
    ("scale-to-zero-pod-retention-period", "2h", "within 0s..1h"),
    ("min-scale", "-1", "non-negative integer"),
])
def test_webhook_rules_catch_bad_annotations(st, key, value, fragment):
    m = knative.service(st.functions["image-classify"])
    m["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] = "2"
    m["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/" + key] = value
    assert any(fragment in p for p in knative.check(m))


def test_spec_limits_are_checked(st):
    m = knative.service(st.functions["embed"])
    m["spec"]["template"]["spec"]["containerConcurrency"] = 5000
    m["spec"]["template"]["spec"]["timeoutSeconds"] = 900
    problems = knative.check(m)
    assert any("containerConcurrency" in p for p in problems) and any("timeoutSeconds" in p for p in problems)


def test_delivery_variants_mount_what_the_runtime_reads(st):
    fn = st.functions["text-generate"]
    baked = knative.service(fn)["spec"]["template"]["spec"]
    assert "volumes" not in baked and "volumeMounts" not in baked["containers"][0]
    for delivery, store_path, read_only in (("pull", "/models", None), ("mount", "/mnt/models", True)):
        spec = knative.service(fn, delivery)["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["AIGC_MODEL_STORE"] == store_path and env["MODEL_NAME"] == "smollm2-135m"
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == store_path)
        assert mount.get("readOnly") is read_only and {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {v["name"] for v in spec["volumes"]} == {"tmp", mount["name"]}
    pull = knative.service(fn, "pull")["spec"]["template"]["spec"]
    assert pull["containers"][0]["envFrom"] == [{"secretRef": {"name": knative.REMOTE_SECRET}}]
    assert next(v for v in pull["volumes"] if v["name"] == "models")["emptyDir"]["sizeLimit"]
    with pytest.raises(ValueError, match="delivery"):
        knative.service(fn, "ftp")
