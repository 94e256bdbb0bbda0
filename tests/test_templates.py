"""Templates follow OpenFaaS conventions and carry an exact copy of the runtime."""

from __future__ import annotations

import re

import pytest
import yaml

from aigc import templates

from conftest import REPO

TEMPLATES = templates.template_dirs()


def test_faas_cli_finds_templates_under_template():
    # faas-cli build reads ./template/<lang>; `faas-cli template pull <repo>` copies the repo's template/
    assert (REPO / "template").resolve() == (REPO / "templates").resolve()
    assert {t.name for t in TEMPLATES} >= {"aigc-onnx"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_runtime_copy_has_not_drifted(template):
    assert templates.drift(template) == [], "run `aigc templates sync`"


def test_drift_is_detected(tmp_path):
    import shutil

    copy = tmp_path / "aigc-onnx"
    shutil.copytree(REPO / "templates" / "aigc-onnx", copy)
    (copy / "aigc" / "runtime" / "app.py").write_text("# edited by hand\n")
    (copy / "aigc" / "runtime" / "stray.py").write_text("")
    assert templates.drift(copy) == ["aigc/runtime/app.py", "aigc/runtime/stray.py"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_template_yml_and_dockerfile_conventions(template):
    spec = yaml.safe_load((template / "template.yml").read_text())
    assert spec["language"] == template.name and "gunicorn" in spec["fprocess"]
    assert all(set(opt) == {"name", "packages"} for opt in spec.get("build_options", []))
    dockerfile = (template / "Dockerfile").read_text()
    args = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
    assert {"BASE_IMAGE", "ADDITIONAL_PACKAGE", "TEST_ENABLED", "TEST_COMMAND"} <= args
    stages = re.findall(r"^FROM \S+ AS (\w+)", dockerfile, re.M)
    assert stages == ["build", "test", "ship"]
    ship = dockerfile.split("AS ship", 1)[1]
    assert re.search(r"^USER app$", ship, re.M), "the shipped image must run as a non-root user"
    assert "COPY --from=test" in ship, "ship must depend on test or BuildKit skips the tests"
    for needed in ("index.py", "requirements.txt", "function/handler.py", "function/requirements.txt"):
        assert (template / needed).is_file()


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_template_pins_its_requirements(template):
    lines = [l.strip() for l in (template / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines and all("==" in l for l in lines)


def test_every_stack_build_arg_is_declared_by_its_template():
    # faas-cli passes stack.yml build_args as --build-arg; one the Dockerfile does not declare is silently ignored
    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    for name, fn in doc["functions"].items():
        dockerfile = (REPO / "template" / fn["lang"] / "Dockerfile").read_text()
        declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
        assert set(fn.get("build_args") or {}) <= declared, name
