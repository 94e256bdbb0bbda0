"""The image-classify image as faas-cli builds it, built with podman and run as a cluster would run it.

The build context is faas-cli's (template + handler folder, links followed), the
build arguments are stack.yml's, and the base is a debootstrap stand-in for
python:3.11-slim-bookworm (made once per machine). Every container runs as a
non-root uid that is not in the image's passwd (OpenShift-style) on a
read-only root filesystem, with the model delivered each way the README
documents: baked, pulled at start from a real S3 server (moto), mounted.
`bash run.sh images` builds and runs every function's image (AIGC_ALL_IMAGES=1).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from aigc import stack
from aigc.container.podman import LoadFailed, Podman, available
from aigc.runtime import remote, store

from conftest import REPO, free_port
from image_helpers import build_function

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="podman is not installed (run.sh test installs it)")]
UID = "12345:0"  # arbitrary, as OpenShift assigns; group 0 like its restricted SCC
MODEL = "efficientnet-lite0"
CAT_CLASSES = range(281, 286)
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
PHOTOS = REPO / "functions" / "image-classify" / "testdata"


@pytest.fixture(scope="module")
def podman():
    return Podman()


@pytest.fixture(scope="module")
def image(podman, model_store, tmp_path_factory) -> str:
    return build_function("image-classify", podman, model_store, tmp_path_factory.mktemp("images")).image


@pytest.fixture
def run(podman, image):
    started = []

    def start(env=None, volumes=(), wait=True, **kwargs):
        container = podman.run(image, f"aigc-test-{uuid.uuid4().hex[:8]}", free_port(), env=env, user=UID,
                               read_only=True, volumes=list(volumes), **kwargs)
        started.append(container)
        if wait:
            container.wait(timeout=120)
        return container

    yield start
    for container in started:
        container.remove()


def post(url: str, photo: str) -> list[dict]:
    req = urllib.request.Request(url + "/", data=(PHOTOS / photo).read_bytes(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["predictions"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def load_failure(container) -> str:
    """The instance's `failed: …`, reported on /_/ready once its model load has failed."""
    with pytest.raises(LoadFailed) as caught:
        container.wait(timeout=60)
    return caught.value.error


@pytest.fixture
def bucket(moto_url, monkeypatch, tmp_path):
    import boto3

    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    name = f"models-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=name)
    return name


def pushed(bucket: str, moto_url: str, model_store: Path, tmp_path: Path) -> remote.S3Remote:
    s3 = remote.S3Remote(bucket, "aigc", endpoint=moto_url, cache=tmp_path / "push-cache")
    s3.push(model_store / MODEL)
    return s3


def remote_env(bucket: str, moto_url: str, store_path: str = "/tmp/models") -> dict[str, str]:
    return {"AIGC_MODEL_STORE": store_path, "AIGC_MODEL_REMOTE": f"s3://{bucket}/aigc",
            "AIGC_S3_ENDPOINT": moto_url, **AWS}


def test_baked_model_serves_as_any_uid_on_a_read_only_root(run):
    container = run()
    assert post(container.url, "coffee.jpg")[0]["label"] == "espresso"
    assert any(p["index"] in CAT_CLASSES for p in post(container.url, "chelsea.jpg"))
    status, metrics = get(container.url + "/metrics")
    assert status == 200 and f'aigc_model_ready{{model="{MODEL}"}} 1.0' in metrics
    assert f"model {MODEL} ready in" in container.logs()


def test_pulled_at_start_from_s3(run, bucket, moto_url, model_store, tmp_path):
    pushed(bucket, moto_url, model_store, tmp_path)
    container = run(env=remote_env(bucket, moto_url))
    assert post(container.url, "coffee.jpg")[0]["label"] == "espresso"
    _, metrics = get(container.url + "/metrics")
    pull = [line for line in metrics.splitlines() if line.startswith(f'aigc_model_pull_seconds{{model="{MODEL}"}}')]
    assert pull and float(pull[0].split()[-1]) > 0
    assert f'aigc_model_pull_bytes{{model="{MODEL}"}} 1.8' in metrics  # ~18.6 MB, as 1.86…e+07
    assert f"model {MODEL} ready in" in container.logs() and f"from s3://{bucket}/aigc in" in container.logs()


def test_mounted_store_read_only(run, model_store, tmp_path):
    """An entry as the store publishes it (0755/0644) is readable by whatever uid runs the image."""
    work = tmp_path / "mounted" / ".work"
    shutil.copytree(model_store / MODEL, work)
    for path in [work, *work.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)  # as tempfile.mkdtemp and some writers leave them
    store.publish(work, tmp_path / "mounted" / MODEL)
    container = run(env={"AIGC_MODEL_STORE": "/mnt/models"}, volumes=[f"{tmp_path / 'mounted'}:/mnt/models:ro"])
    assert post(container.url, "coffee.jpg")[0]["label"] == "espresso"


def test_no_model_and_a_wrong_remote_fail_loudly(run, moto_url, bucket):
    container = run(env=remote_env("no-such-bucket-here", moto_url), wait=False)
    error = load_failure(container)
    assert error.startswith(f"failed: {MODEL}: RemoteError") and "NoSuchBucket" in error, error
    status, health = get(container.url + "/_/health")
    assert status == 503 and "failed:" in health
    logs = container.logs()
    assert logs.count(f"model {MODEL} failed to load") == 1 and "NoSuchBucket" in logs, logs[-2000:]


def test_a_flipped_byte_on_the_remote_is_refused_and_nothing_partial_stays(run, bucket, moto_url, model_store,
                                                                            tmp_path):
    import boto3

    s3 = pushed(bucket, moto_url, model_store, tmp_path)
    manifest = json.loads((model_store / MODEL / store.MANIFEST).read_text())
    digest = manifest["files"]["model.onnx"]["sha256"]
    client = boto3.client("s3", endpoint_url=moto_url)
    key = f"aigc/{s3.blob_key(digest)}"
    blob = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    blob[len(blob) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(blob))
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # the container's uid is not ours
    container = run(env=remote_env(bucket, moto_url, "/models"), volumes=[f"{cache}:/models:rw"], wait=False)
    error = load_failure(container)
    assert "IntegrityError" in error and digest in error, error
    assert not (cache / MODEL).exists()
    leftovers = [p.name for p in cache.rglob("*") if p.name.startswith((".pull-", ".tmp-"))]
    assert leftovers == []
    for blob_file in (cache / ".blobs" / "sha256").glob("*"):  # what stayed is whole and verified
        assert store.sha256_file(blob_file) == blob_file.name
    assert not (cache / ".blobs" / "sha256" / digest).exists()


TOKEN = "image-check-token"  # the finetune-token secret, mounted as OpenFaaS mounts secrets


def send(url: str, path: str, body: bytes | dict, timeout: float = 300, headers: dict | None = None) -> dict:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url + path, data=data, method="POST", headers=dict(
        {"Content-Type": "application/json"} if isinstance(body, dict) else {}, **(headers or {})))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def check_classifier(url, corpus):
    assert post(url, "coffee.jpg")[0]["label"] == "espresso"
    assert any(p["index"] in CAT_CLASSES for p in post(url, "chelsea.jpg"))


def check_embed(url, corpus):
    import numpy as np

    out = send(url, "/v1/embeddings", {"model": "minilm-l6-int8",
                                        "input": ["A cat sits on the mat.", "A kitten is resting on a rug."]})
    cat, kitten = (np.array(d["embedding"]) for d in out["data"])
    assert float(cat @ kitten) > 0.5


def check_face(url, corpus):
    face = (REPO / "functions" / "face-emotion" / "testdata" / "astronaut-face.jpg").read_bytes()
    assert send(url, "/", face)["label"] == "happy"


def check_text(url, corpus):
    out = send(url, "/v1/chat/completions", {"model": "smollm2-135m", "max_tokens": 16, "temperature": 0,
                                              "messages": [{"role": "user",  # see test_text_generate_e2e
                                                            "content": "Name the capital of France."}]})
    assert "Paris" in out["choices"][0]["message"]["content"], out


def check_finetune(url, corpus):
    body = {"run_id": "image-check", "corpus": "logic", "steps": 2, "batch_size": 1, "seq_len": 32,
            "warmup_steps": 0, "eval_every": 0, "eval_blocks": 1, "save_every": 0}
    with pytest.raises(urllib.error.HTTPError) as refused:
        send(url, "/", body)
    assert refused.value.code == 401  # stack.yml's AIGC_AUTH_TOKEN_SECRET holds in the image too
    out = send(url, "/", body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert out["state"] == "succeeded", out


def check_speech(url, corpus):
    body = {"model": "hibari-heart", "voice": "heart", "input": "The quick brown fox jumps over the lazy dog.",
            "response_format": "wav"}
    req = urllib.request.Request(url + "/v1/audio/speech", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        data = resp.read()
    assert data[:4] == b"RIFF" and 1.5 <= (len(data) - 44) / 2 / 24000 <= 5.0


def check_image_generate(url, corpus):
    body = {"model": "terrain-diffusion", "prompt": "difficulty 50", "n": 2, "seed": 5}
    first, again = (send(url, "/v1/images/generations", body) for _ in range(2))
    assert len(first["data"]) == 2 and first["data"] == again["data"]


CHECKS = {"image-classify": check_classifier, "image-classify-torch": check_classifier, "embed": check_embed,
          "face-emotion": check_face, "text-generate": check_text, "finetune": check_finetune,
          "speech": check_speech, "image-generate": check_image_generate}


@pytest.mark.skipif(os.environ.get("AIGC_ALL_IMAGES") != "1", reason="bash run.sh images builds every image")
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_function_image_builds_and_serves(name, podman, model_store, tmp_path_factory):
    """faas-cli build semantics, the baked model, a real request; sizes and times go to the report."""
    tmp = tmp_path_factory.mktemp(name)
    built = build_function(name, podman, model_store, tmp)
    corpus = tmp / "data" / "corpora" / "logic"
    corpus.mkdir(parents=True)
    (corpus / "logic.v").write_text("Lemma and_swap : forall P Q : Prop, P /\\ Q -> Q /\\ P.\n"
                                    "Proof.\n  intros P Q [p q]. split; assumption.\nQed.\n" * 8)
    for folder in (corpus, corpus.parent, corpus.parent.parent):
        folder.chmod(0o755)
    secrets = tmp / "secrets"
    secrets.mkdir(mode=0o755)
    (secrets / "finetune-token").write_text(TOKEN)
    (secrets / "finetune-token").chmod(0o644)
    env = dict(stack.load(REPO / "stack.yml").functions[name].env(), AIGC_JOBS_DIR="/tmp/jobs",
               AIGC_FINETUNE_DATA="/data")  # as deployed, plus where the test's corpus is
    container = podman.run(built.image, f"aigc-test-{name}", free_port(), user=UID, read_only=True, env=env,
                           volumes=[f"{corpus.parent.parent}:/data:ro", f"{secrets}:/var/openfaas/secrets:ro"])
    try:
        ready = container.wait(timeout=300)
        CHECKS[name](container.url, corpus)
        print(f"\n{name}: {built.image} {built.size / 1e6:.0f} MB, built in {built.seconds:.0f} s, "
              f"ready {ready:.1f} s after podman run -d returned")
    finally:
        container.remove()
