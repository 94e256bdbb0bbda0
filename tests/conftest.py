"""Shared fixtures: the model store, real function processes, real photos."""

from __future__ import annotations

import contextlib

import io
import socket
import subprocess
import time
from pathlib import Path

import pytest

from aigc import runner, stack
from aigc.runtime import store

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def model_store() -> Path:
    """The real models, built from their packages once (a no-op when already intact)."""
    from aigc import models

    for name in models.BUILDERS:
        models.build(name)
    return store.store_root()


@pytest.fixture(scope="session")
def stack_file():
    return stack.load(REPO / "stack.yml")


@contextlib.contextmanager
def running(fn: stack.StackFunction, folder: Path, env: dict[str, str] | None = None, ready_timeout: float = 120):
    """A function as a real gunicorn process from its assembled build context, its log in `folder`, until the
    block ends: for module-scoped fixtures (`serve` is the per-test one)."""
    inst = runner.start(fn, REPO, free_port(), extra_env=env, build_dir=folder / "build",
                        stdout=open(folder / "instance.log", "wb"), stderr=subprocess.STDOUT)
    try:
        inst.wait_ready(ready_timeout)
        yield inst.url
    finally:
        inst.stop()


@pytest.fixture
def serve(tmp_path):
    """Start a function as a real gunicorn process from its assembled build context."""
    started: list[runner.Instance] = []

    def start(fn: stack.StackFunction, env: dict[str, str] | None = None, wait: bool = True) -> runner.Instance:
        log = open(tmp_path / f"{fn.name}-{len(started)}.log", "wb")
        inst = runner.start(fn, REPO, free_port(), extra_env=env, build_dir=tmp_path / "build",
                            stdout=log, stderr=subprocess.STDOUT)
        started.append(inst)
        if wait:
            inst.wait_ready(90)
        return inst

    yield start
    for inst in started:
        inst.stop()


@pytest.fixture(scope="session")
def served_functions(model_store, stack_file, tmp_path_factory):
    """image-classify and embed from stack.yml, started once for the read-only end-to-end tests."""
    tmp = tmp_path_factory.mktemp("served")
    instances = {}
    for name in ("image-classify", "embed"):
        log = open(tmp / f"{name}.log", "wb")
        instances[name] = runner.start(stack_file.functions[name], REPO, free_port(), build_dir=tmp / "build",
                                       stdout=log, stderr=subprocess.STDOUT)
    for inst in instances.values():
        inst.wait_ready(90)
    yield {name: inst.url for name, inst in instances.items()}
    for inst in instances.values():
        inst.stop()


@pytest.fixture(scope="session")
def photos():
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee")}


def echo_function(**environment) -> stack.StackFunction:
    return stack.StackFunction(name="echo", lang="aigc-onnx", handler=REPO / "tests" / "handlers" / "echo",
                               image="localhost/echo:test", environment=environment)


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    """A real moto_server process (S3 over HTTP), started once per session."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.monotonic() + 60  # a busy 2-core machine can take a while to import moto
    while True:
        assert proc.poll() is None, f"moto_server exited with {proc.returncode}; see {log.name}"
        try:
            requests.get(url + "/moto-api/", timeout=2)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "moto_server did not answer within 60 s"
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture
def tmp_store(tmp_path, monkeypatch):
    """An empty model store of the test's own (AIGC_MODEL_STORE), with no remote to pull from."""
    root = tmp_path / "store"
    root.mkdir()
    monkeypatch.setenv("AIGC_MODEL_STORE", str(root))
    monkeypatch.delenv("AIGC_MODEL_REMOTE", raising=False)  # an unknown entry must not be pulled
    return root
