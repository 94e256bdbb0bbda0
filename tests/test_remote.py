"""The remote model store: push/pull through a real moto S3 server and through a directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from aigc import cli
from aigc.runtime import remote
from aigc.runtime import errors, store

from conftest import REPO, free_port

NAME = "tiny--coq"  # an adapter-style entry name: '--' must survive as a key and a directory


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated store, cache and AWS settings: no ~/.aws, no ambient endpoint or profile."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AIGC_MODEL_REMOTE", "AIGC_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AIGC_MODEL_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("AIGC_BLOB_CACHE", str(tmp_path / "cache"))
    return monkeypatch


@pytest.fixture
def s3(env, moto_url):
    """A fresh bucket on the moto server; returns (boto3 client, bucket)."""
    import boto3

    env.setenv("AIGC_S3_ENDPOINT", moto_url)
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_url)
    client.create_bucket(Bucket=bucket)
    env.setenv("AIGC_MODEL_REMOTE", f"s3://{bucket}/team/models")
    return client, bucket


def make_entry(root: Path, name: str = NAME) -> Path:
    entry = root / name
    (entry / "tokenizer").mkdir(parents=True)
    (entry / "adapter_model.safetensors").write_bytes(os.urandom(300_000))
    (entry / "adapter_config.json").write_text('{"r": 8}\n')
    (entry / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (entry / "tokenizer" / "same.txt").write_text("a\nb\n")  # same bytes: one blob
    store.write_manifest(entry, {"name": name, "task": "lora-adapter", "base": "tiny"})
    return entry


def files_of(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def keys(client, bucket) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_push_pull_round_trip_and_second_pull_downloads_nothing(s3, tmp_path):
    client, bucket = s3
    entry = make_entry(tmp_path / "src")
    rem = remote.from_env()
    assert isinstance(rem, remote.S3Remote) and (rem.bucket, rem.prefix) == (bucket, "team/models")

    summary = rem.push(entry)
    assert summary == {"name": NAME, "remote": f"s3://{bucket}/team/models", "uploaded": 3, "skipped": 1,
                       "bytes": 300_000 + 9 + 4}
    manifest = json.loads((entry / store.MANIFEST).read_text())
    hashes = {f["sha256"] for f in manifest["files"].values()}
    assert keys(client, bucket) == sorted([f"team/models/blobs/sha256/{h}" for h in hashes]
                                          + [f"team/models/models/{NAME}.json"])
    ref = client.get_object(Bucket=bucket, Key=f"team/models/models/{NAME}.json")["Body"].read()
    assert ref == (entry / store.MANIFEST).read_bytes()
    assert rem.list() == [NAME]

    pulled = remote.from_env().pull(NAME)  # a fresh object, as another machine would have
    assert pulled.path == tmp_path / "store" / NAME and pulled.manifest == manifest
    assert files_of(pulled.path) == files_of(entry) and pulled.verify() == []
    assert store.open_model(NAME).name == NAME
    assert sorted(p.name for p in (tmp_path / "cache" / "sha256").iterdir()) == sorted(hashes)

    again = remote.from_env()
    again.pull(NAME)
    assert again.downloads == 0 and again.last_pull == {"name": NAME, "remote": rem.url, "downloaded": 0,
                                                        "cached": 3, "bytes": 0}
    assert files_of(store.open_model(NAME).path) == files_of(entry)
    assert rem.push(entry)["uploaded"] == 0  # the remote already has every blob


def test_flipped_byte_in_an_s3_blob_is_refused_and_leaves_nothing(s3, tmp_path):
    client, bucket = s3
    entry = make_entry(tmp_path / "src")
    remote.from_env().push(entry)
    digest = json.loads((entry / store.MANIFEST).read_text())["files"]["adapter_model.safetensors"]["sha256"]
    key = f"team/models/blobs/sha256/{digest}"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[1234] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    rem = remote.from_env()
    with pytest.raises(remote.IntegrityError, match=f"adapter_model.safetensors.*{digest}") as caught:
        rem.pull(NAME)
    import hashlib

    assert hashlib.sha256(data).hexdigest() in str(caught.value)
    assert rem.downloads >= 1
    store_root = tmp_path / "store"
    assert not store_root.exists() or list(store_root.iterdir()) == []  # no entry, no leftover temp dir
    cache = tmp_path / "cache" / "sha256"
    assert not (cache / digest).exists()
    # whatever else was fetched before the bad blob is verified content, named by its hash; no temp files
    for blob in cache.iterdir():
        assert blob.name == store.sha256_file(blob)
    # an instance opening it pulls again (AIGC_MODEL_REMOTE is set) and is refused the same way
    with pytest.raises(remote.IntegrityError):
        store.open_model(NAME)
    assert not store_root.exists() or [p.name for p in store_root.iterdir()] in ([], [".blobs"])


def test_open_model_pulls_a_missing_entry_once_and_records_it(s3, tmp_path):
    entry = make_entry(tmp_path / "src")
    remote.from_env().push(entry)
    store.pulls.pop(NAME, None)
    opened = store.open_model(NAME)  # not in the (empty) store: fetched from AIGC_MODEL_REMOTE first
    assert opened.path == tmp_path / "store" / NAME and not opened.verify()
    record = store.pulls[NAME]
    blobs = {f["sha256"]: f["size"] for f in opened.manifest["files"].values()}  # one download per content
    assert record["bytes"] == sum(blobs.values()) and record["seconds"] > 0
    modes = {oct(p.stat().st_mode & 0o777) for p in [opened.path, *opened.path.iterdir()]}
    assert modes == {"0o755", "0o644"}, "entries are world-readable, for a read-only mount as any uid"
    record["seconds"] = -1.0
    store.open_model(NAME)  # present now: no second pull
    assert store.pulls[NAME]["seconds"] == -1.0


def test_without_a_remote_a_missing_entry_is_404_naming_the_ways(env):
    with pytest.raises(errors.ModelNotFound, match="AIGC_MODEL_REMOTE"):
        store.open_model("not-there")


def test_a_pull_that_finds_the_entry_already_published_keeps_it(s3, tmp_path):
    """Two instances sharing a store volume may pull at once: the first entry in place wins, intact."""
    entry = make_entry(tmp_path / "src")
    rem = remote.from_env()
    rem.push(entry)
    first = rem.pull(NAME)
    marker = first.path / "manifest.json"
    before = marker.stat().st_ino
    rem.pull(NAME, replace=False)
    assert marker.stat().st_ino == before and not store.open_model(NAME).verify()
    assert [p.name for p in (tmp_path / "store").iterdir() if p.name.startswith(".pull-")] == []


def test_a_corrupt_local_entry_is_never_published(s3, tmp_path):
    client, bucket = s3
    entry = make_entry(tmp_path / "src")
    weights = entry / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[7] ^= 0xFF  # same size: only the hash can tell
    weights.write_bytes(bytes(data))
    rem = remote.from_env()
    with pytest.raises(remote.IntegrityError, match="adapter_model.safetensors: sha256 .* not pushed"):
        rem.push(entry)
    assert keys(client, bucket) == [] and rem.list() == []
    with pytest.raises(errors.ModelNotFound, match=f"{NAME}.*not on the remote"):
        rem.pull(NAME)


def test_a_push_failing_midway_publishes_no_ref(s3, tmp_path):
    client, bucket = s3
    entry = make_entry(tmp_path / "src")
    rem = remote.from_env()
    real_put, puts = rem._put_file, []

    def flaky_put(key, path, sha256):
        if puts:
            raise remote.RemoteError("connection reset (simulated)")
        puts.append(key)
        real_put(key, path, sha256)

    rem._put_file = flaky_put
    with pytest.raises(remote.RemoteError, match="simulated"):
        rem.push(entry)
    assert keys(client, bucket) == [f"team/models/{puts[0]}"]  # one blob landed, the ref did not
    assert rem.list() == []
    with pytest.raises(errors.ModelNotFound):
        remote.from_env().pull(NAME)
    del rem._put_file  # the class's method again
    assert rem.push(entry)["skipped"] == 2  # the retry reuses the blob that made it, and the duplicate
    assert remote.from_env().list() == [NAME]


def test_dir_remote_round_trip_and_a_damaged_cache_blob_is_fetched_again(env, tmp_path):
    (tmp_path / "remote").mkdir()
    env.setenv("AIGC_MODEL_REMOTE", (tmp_path / "remote").as_uri())
    entry = make_entry(tmp_path / "src")
    rem = remote.from_env()
    assert isinstance(rem, remote.DirRemote) and rem.push(entry)["uploaded"] == 3
    assert rem.list() == [NAME] and not list((tmp_path / "remote").rglob(".tmp-*"))
    pulled = rem.pull(NAME, store_root=tmp_path / "elsewhere")
    assert pulled.path == tmp_path / "elsewhere" / NAME and files_of(pulled.path) == files_of(entry)
    assert rem.downloads == 3

    digest = pulled.manifest["files"]["adapter_config.json"]["sha256"]
    (tmp_path / "cache" / "sha256" / digest).write_text('{"r": 9}\n')  # same size, different bytes
    pulled = rem.pull(NAME, store_root=tmp_path / "elsewhere")
    assert rem.downloads == 4 and rem.last_pull["downloaded"] == 1 and pulled.verify() == []

    blob = tmp_path / "remote" / "blobs" / "sha256" / digest
    blob.write_text('{"r": 7}\n')
    fresh = remote.DirRemote(tmp_path / "remote", cache=tmp_path / "cache2")
    with pytest.raises(remote.IntegrityError, match="adapter_config.json"):
        fresh.pull(NAME, store_root=tmp_path / "third")
    assert not (tmp_path / "third").exists() and not (tmp_path / "cache2" / "sha256" / digest).exists()


def test_refs_with_paths_outside_the_entry_are_refused(env, tmp_path):
    (tmp_path / "remote" / "models").mkdir(parents=True)
    bad = {"name": "evil", "files": {"../../escaped": {"sha256": "0" * 64, "size": 1}}}
    (tmp_path / "remote" / "models" / "evil.json").write_text(json.dumps(bad))
    with pytest.raises(remote.IntegrityError, match="escaped"):
        remote.DirRemote(tmp_path / "remote").pull("evil", store_root=tmp_path / "store")
    assert not (tmp_path / "escaped").exists()


def test_from_env_parsing(tmp_path):
    assert remote.from_env({}) is None and remote.from_env({"AIGC_MODEL_REMOTE": ""}) is None
    s3 = remote.from_env({"AIGC_MODEL_REMOTE": "s3://my-bucket/a/b/", "AIGC_S3_ENDPOINT": "http://minio:9000",
                          "AIGC_BLOB_CACHE": str(tmp_path / "c")})
    assert (s3.bucket, s3.prefix, s3.endpoint, s3.url, s3.cache) == ("my-bucket", "a/b", "http://minio:9000",
                                                                      "s3://my-bucket/a/b", tmp_path / "c")
    assert remote.from_env({"AIGC_MODEL_REMOTE": "s3://my-bucket"}).prefix == ""
    assert remote.from_env({"AIGC_MODEL_REMOTE": str(tmp_path)}).root == tmp_path
    assert remote.from_env({"AIGC_MODEL_REMOTE": tmp_path.as_uri()}).root == tmp_path


@pytest.mark.parametrize("env, fragment", [
    ({"AIGC_MODEL_REMOTE": "https://example.com/models"}, "AIGC_MODEL_REMOTE='https://"),
    ({"AIGC_MODEL_REMOTE": "gs://bucket/models"}, "AIGC_MODEL_REMOTE.*s3://bucket/prefix"),
    ({"AIGC_MODEL_REMOTE": "s3://"}, "AIGC_MODEL_REMOTE.*bucket"),
    ({"AIGC_MODEL_REMOTE": "s3://Bad_Bucket/x"}, "AIGC_MODEL_REMOTE.*bucket"),
    ({"AIGC_MODEL_REMOTE": "/no/such/dir"}, "AIGC_MODEL_REMOTE.*not a directory"),
    ({"AIGC_MODEL_REMOTE": "file://host/x"}, "AIGC_MODEL_REMOTE.*local path"),
    ({"AIGC_MODEL_REMOTE": "s3://bucket", "AIGC_S3_ENDPOINT": "minio:9000"}, "AIGC_S3_ENDPOINT"),
])
def test_bad_remote_settings_name_the_variable(env, fragment):
    with pytest.raises(ValueError, match=fragment):
        remote.from_env(env)


def test_unknown_entry_and_unreachable_endpoint_are_clear(s3, env, tmp_path):
    with pytest.raises(errors.ModelNotFound, match="'absent' is not on the remote s3://"):
        remote.from_env().pull("absent")
    with pytest.raises(errors.InvalidInput, match="entry name"):
        remote.from_env().pull("../etc")
    closed = f"http://127.0.0.1:{free_port()}"
    env.setenv("AIGC_S3_ENDPOINT", closed)
    env.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore would otherwise retry with backoff
    with pytest.raises(remote.RemoteError, match=f"{closed}"):
        remote.from_env().pull(NAME)


def test_boto3_is_imported_only_when_s3_is_used():
    code = ("import sys; from aigc.runtime import remote; r = remote.from_env({'AIGC_MODEL_REMOTE': 's3://bucket'}); "
            "assert not {'boto3', 'botocore'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_cli_push_and_pull(env, tmp_path, capsys):
    (tmp_path / "remote").mkdir()
    make_entry(tmp_path / "store")
    env.setenv("AIGC_MODEL_REMOTE", str(tmp_path / "remote"))
    assert cli.main(["models", "push", NAME]) == 0
    assert "uploaded 3 blob(s)" in capsys.readouterr().out
    env.setenv("AIGC_MODEL_STORE", str(tmp_path / "other"))
    assert cli.main(["models", "pull", NAME]) == 0
    assert "downloaded 3 blob(s)" in capsys.readouterr().out
    assert files_of(tmp_path / "other" / NAME) == files_of(tmp_path / "store" / NAME)
    assert cli.main(["models", "pull", "absent"]) == 2
    assert "'absent' is not on the remote" in capsys.readouterr().err
    env.delenv("AIGC_MODEL_REMOTE")
    assert cli.main(["models", "push", NAME]) == 2
    assert "AIGC_MODEL_REMOTE is not set" in capsys.readouterr().err
