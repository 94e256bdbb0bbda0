"""Templates follow OpenFaaS conventions and hold no copy of the runtime: they link to it."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from aigc import buildctx, stack

from conftest import REPO

TEMPLATES = sorted(p for p in (REPO / "templates").iterdir() if (p / "template.yml").is_file())
RUNTIME_LINKS = {"aigc/__init__.py": "aigc/__init__.py", "aigc/runtime": "aigc/runtime", "aigc/wasm": "aigc/wasm"}


def test_faas_cli_finds_templates_under_template():
    # faas-cli build reads ./template/<lang>; `faas-cli template pull <repo>` copies the repo's template/
    assert (REPO / "template").resolve() == (REPO / "templates").resolve()
    assert {t.name for t in TEMPLATES} == {"aigc-onnx", "aigc-torch", "aigc-tf"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_the_runtime_is_linked_not_copied(template):
    """faas-cli follows links when it writes a build context (and on `template pull`), so one source serves all."""
    entries = {p.relative_to(template).as_posix() for p in (template / "aigc").iterdir()}
    assert entries == set(RUNTIME_LINKS)
    for rel, target in RUNTIME_LINKS.items():
        link = template / rel
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), f"{rel} must be a relative link"
        assert link.resolve() == (REPO / target).resolve()
    copies = [p for p in template.rglob("*.py") if not p.is_symlink() and "aigc" in p.relative_to(template).parts]
    assert copies == []


def test_an_image_context_holds_files_not_links(tmp_path):
    st = stack.load(REPO / "stack.yml")
    context = buildctx.assemble(st.functions["image-classify"], REPO, tmp_path, image=True)
    links = [str(p) for p in context.rglob("*") if p.is_symlink()]
    assert links == []
    assert (context / "aigc/runtime/app.py").read_bytes() == (REPO / "aigc/runtime/app.py").read_bytes()
    assert (context / "aigc/wasm/modules/tokenizer.wasm").is_file()
    assert not list(context.rglob("__pycache__")), "an image context is faas-cli's: no bytecode from this tree"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_template_yml_and_dockerfile_conventions(template):
    spec = yaml.safe_load((template / "template.yml").read_text())
    assert spec["language"] == template.name and "gunicorn" in spec["fprocess"]
    assert all(set(opt) == {"name", "packages"} for opt in spec.get("build_options", []))
    dockerfile = (template / "Dockerfile").read_text()
    args = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
    assert {"BASE_IMAGE", "ADDITIONAL_PACKAGE", "TEST_ENABLED", "TEST_COMMAND", "AIGC_MODELS"} <= args
    stages = re.findall(r"^FROM \S+ AS (\w+)", dockerfile, re.M)
    assert stages == ["base", "build", "test", "ship"]
    ship = dockerfile.split("AS ship", 1)[1]
    assert re.search(r"^USER app$", ship, re.M), "the shipped image must run as a non-root user"
    assert "COPY --from=test" in ship, "ship must depend on test or BuildKit skips the tests"
    assert "pytest" not in ship and "FROM base AS ship" in dockerfile, "test tools stay out of the shipped image"
    assert "aigc.runtime.bake function/model-store" in dockerfile
    for needed in ("index.py", "requirements.txt", "function/handler.py", "function/handler_test.py",
                   "function/requirements.txt"):
        assert (template / needed).is_file()


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_template_pins_its_requirements(template):
    lines = [l.strip() for l in (template / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines and all("==" in l for l in lines)


def test_one_dockerfile_serves_every_template():
    for name in ("aigc-torch", "aigc-tf"):
        link = REPO / "templates" / name / "Dockerfile"
        assert link.is_symlink() and os.readlink(link) == "../aigc-onnx/Dockerfile"


def test_torch_is_pinned_to_the_cpu_build():
    """PyPI's torch==2.13.0 is the CUDA build; the +cpu pin exists only on the CPU index, so a missing
    index fails the build instead of pulling GBs of CUDA wheels."""
    reqs = (REPO / "templates/aigc-torch/requirements.txt").read_text()
    assert re.search(r"^torch==2\.13\.0\+cpu$", reqs, re.M)
    dockerfile = (REPO / "templates/aigc-torch/Dockerfile").read_text()
    assert 'pip install --no-deps --index-url "${TORCH_INDEX_URL}" "${torch}"' in dockerfile
    assert "a CUDA build of torch was installed" in dockerfile


def test_every_stack_build_arg_is_declared_by_its_template():
    # faas-cli passes stack.yml build_args as --build-arg; one the Dockerfile does not declare is silently ignored
    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    for name, fn in doc["functions"].items():
        dockerfile = (REPO / "template" / fn["lang"] / "Dockerfile").read_text()
        declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
        assert set(fn.get("build_args") or {}) <= declared, name


def test_every_function_carries_its_own_handler_test():
    """The template's sample test would otherwise run against the function's handler in the test stage."""
    for fn in stack.load(REPO / "stack.yml").functions.values():
        assert (fn.handler / "handler_test.py").is_file(), fn.name


@pytest.mark.slow
def test_shipped_wasm_modules_are_what_the_sources_build(tmp_path):
    """aigc/wasm/modules/ is committed (images and `faas-cli template pull` need it without a Zig build)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, str(REPO / "wasm" / "build.py"), "--out", str(tmp_path), "--no-ship"],
                   check=True, capture_output=True)
    for name in ("tokenizer.wasm", "image.wasm"):
        assert (tmp_path / name).read_bytes() == (REPO / "aigc/wasm/modules" / name).read_bytes(), name
