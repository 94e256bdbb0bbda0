"""A shared, content-addressed copy of the model store: on S3, or in a plain directory.

    <prefix>/blobs/sha256/<hex>       every file, once, named by its sha256
    <prefix>/models/<name>.json       one ref per store entry: its manifest.json, byte for byte

The manifest already lists each file's sha256 and size, so the ref is all a
reader needs. `push` uploads the blobs first and the ref last, so an entry
whose blobs are not all there is never visible: a single S3 PUT (or a rename
on a filesystem) is atomic, and nothing reads a blob that no ref names.
Blobs the remote already has are not uploaded again.

`pull` fetches blobs into a local cache ($AIGC_BLOB_CACHE, by default
`<store>/.blobs/sha256/<hex>`, on the store's volume so entries are hard links),
hashing each download before it may enter the cache, then builds the store
entry in a temporary directory and renames it into place, manifest last, as
`adapters.write_adapter` does. A hash mismatch raises `IntegrityError`, a
ValueError (bad data, like a bad setting; the CLI reports both the same way),
and leaves nothing behind.

Configuration: AIGC_MODEL_REMOTE (s3://bucket/prefix, file:///path or a
directory; unset = local store only), AIGC_S3_ENDPOINT (optional),
AIGC_BLOB_CACHE, and boto3's own AWS_* variables for credentials and region.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import urlparse

from . import errors, store
from .config import read_env

ENV_REMOTE = "AIGC_MODEL_REMOTE"
ENV_ENDPOINT = "AIGC_S3_ENDPOINT"
ENV_CACHE = "AIGC_BLOB_CACHE"
DEFAULT_REGION = "us-east-1"
CHUNK = 1 << 20

# Entry names become object keys and directory names: no '/', no leading '.' (so no '..').
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HEX = re.compile(r"[0-9a-f]{64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RAISE = object()


class IntegrityError(ValueError):
    """A file's bytes do not match the sha256 (or size) its manifest records."""


class RemoteError(RuntimeError):
    """The remote could not be used: unreachable, refused, or misconfigured."""


def default_blob_cache(store_root: Path) -> Path:
    """Beside the entries, on the same volume: pulls hard-link instead of copying, and a container
    whose only writable place is the store's volume (an emptyDir, a PVC) can still pull."""
    return Path(store_root) / ".blobs"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise errors.InvalidInput(f"store entry name {name!r} must be 1-128 of A-Z, a-z, 0-9, '_', '.', '-', "
                                  "starting with a letter or digit")
    return name


def _check_files(manifest: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The manifest's file table, refusing paths that would land outside the entry (a ref is remote input)."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise IntegrityError(f"{where}: manifest has no 'files' table")
    for rel, entry in files.items():
        parts = PurePosixPath(rel).parts
        if (not parts or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel
                or rel == store.MANIFEST or not isinstance(entry, dict)
                or not _HEX.fullmatch(str(entry.get("sha256"))) or not isinstance(entry.get("size"), int)):
            raise IntegrityError(f"{where}: bad manifest entry for file {rel!r}")
    return files


def _hash_copy(chunks: Iterator[bytes], dest, limit: int) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:  # stop a wrong (or hostile) blob early instead of filling the disk
            break
        digest.update(chunk)
        dest.write(chunk)
    return digest.hexdigest(), size


class Remote:
    """Push and pull store entries; subclasses supply six storage primitives on keys under the prefix."""

    url: str

    def __init__(self, cache: Path | None = None):
        # None: the default cache beside the store that a pull writes into
        self.cache = Path(cache) if cache else read_env(os.environ, ENV_CACHE, Path, None)
        self.downloads = 0  # blobs fetched from the remote by this object; cache hits do not count
        self.last_pull: dict[str, Any] = {}

    # --- storage primitives -------------------------------------------------------------------
    def _exists(self, key: str) -> bool: raise NotImplementedError
    def _put_file(self, key: str, path: Path, sha256: str) -> None: raise NotImplementedError
    def _put_bytes(self, key: str, data: bytes) -> None: raise NotImplementedError
    def _read(self, key: str) -> bytes | None: raise NotImplementedError  # None when absent
    def _chunks(self, key: str) -> Iterator[bytes]: raise NotImplementedError
    def _keys(self, under: str) -> list[str]: raise NotImplementedError

    @staticmethod
    def blob_key(sha256: str) -> str:
        return f"blobs/sha256/{sha256}"

    @staticmethod
    def ref_key(name: str) -> str:
        return f"models/{name}.json"

    # --- operations ---------------------------------------------------------------------------
    def list(self) -> list[str]:
        return sorted(k[len("models/"):-len(".json")] for k in self._keys("models/") if k.endswith(".json"))

    def push(self, entry_path: Path | str) -> dict[str, Any]:
        entry_path = Path(entry_path).resolve()
        name = check_name(entry_path.name)
        manifest_path = entry_path / store.MANIFEST
        if not manifest_path.is_file():
            raise errors.ModelNotFound(f"{entry_path} is not a store entry (no {store.MANIFEST})")
        ref = manifest_path.read_bytes()
        files = _check_files(json.loads(ref), str(manifest_path))
        # Hash everything before the first upload: a corrupt entry must not leave even orphan blobs.
        for rel, entry in files.items():
            path = entry_path / rel
            if not path.is_file() or path.stat().st_size != entry["size"]:
                raise IntegrityError(f"{name}/{rel}: missing or not {entry['size']} bytes; not pushed")
            actual = store.sha256_file(path)
            if actual != entry["sha256"]:
                raise IntegrityError(f"{name}/{rel}: sha256 {actual} does not match the manifest's "
                                     f"{entry['sha256']}; not pushed")
        uploaded = skipped = sent = 0
        seen = set()
        for rel, entry in sorted(files.items()):
            digest = entry["sha256"]
            if digest in seen or self._exists(self.blob_key(digest)):
                skipped += 1
            else:
                self._put_file(self.blob_key(digest), entry_path / rel, digest)
                uploaded, sent = uploaded + 1, sent + entry["size"]
            seen.add(digest)
        self._put_bytes(self.ref_key(name), ref)  # last: from now on readers see the entry
        return {"name": name, "remote": self.url, "uploaded": uploaded, "skipped": skipped, "bytes": sent}

    def pull(self, name: str, store_root: Path | str | None = None, replace: bool = True) -> store.StoredModel:
        """Fetch `name` into the store. With `replace` off, an entry that appears meanwhile (another
        process pulled it) is kept and this download is dropped."""
        check_name(name)
        root = Path(store_root) if store_root else store.store_root()
        cache = self.cache or default_blob_cache(root)
        ref = self._read(self.ref_key(name))
        if ref is None:
            raise errors.ModelNotFound(f"model {name!r} is not on the remote {self.url}; "
                                       f"push it with `aigc models push {name}`")
        files = _check_files(json.loads(ref), f"{self.url} ref {name!r}")
        fetched = cached = received = 0
        blobs = {}
        for rel, entry in sorted(files.items()):
            if entry["sha256"] not in blobs:
                blobs[entry["sha256"]], downloaded = self._cached_blob(cache, name, rel, entry)
                if downloaded:
                    fetched, received = fetched + 1, received + entry["size"]
                else:
                    cached += 1
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".pull-{name}-", dir=root))
        try:
            for rel, entry in files.items():
                dest = work / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:  # no second copy of big weights; a cached blob is re-hashed before each use
                    os.link(blobs[entry["sha256"]], dest)
                except OSError:  # another filesystem
                    shutil.copyfile(blobs[entry["sha256"]], dest)
            (work / store.MANIFEST).write_bytes(ref)  # last, as in write_manifest
            store.publish(work, root / name, replace=replace)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.last_pull = {"name": name, "remote": self.url, "downloaded": fetched, "cached": cached,
                          "bytes": received}
        return store.open_model(name, root)

    def _cached_blob(self, cache: Path, name: str, rel: str, entry: dict[str, Any]) -> tuple[Path, bool]:
        """The verified cache path of a blob, and whether it had to be downloaded."""
        digest, size = entry["sha256"], entry["size"]
        path = cache / "sha256" / digest
        if path.is_file():
            if path.stat().st_size == size and store.sha256_file(path) == digest:
                return path, False
            path.unlink(missing_ok=True)  # damaged on disk (or through a hardlinked store file): fetch it again
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                actual, got = _hash_copy(self._chunks(self.blob_key(digest)), fh, size)
            self.downloads += 1
            if got != size or actual != digest:
                raise IntegrityError(f"{name}/{rel} from {self.url}: blob {digest} has sha256 {actual} "
                                     f"({'more than ' if got > size else ''}{got} bytes, expected {size}); "
                                     "the remote copy is corrupt")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path, True


class DirRemote(Remote):
    """The same layout in a directory (a shared filesystem, or tests); renames make each write atomic."""

    def __init__(self, root: Path | str, cache: Path | None = None):
        super().__init__(cache)
        self.root = Path(root)
        self.url = self.root.as_uri()

    def _exists(self, key):
        return (self.root / key).is_file()

    def _write(self, key: str, write) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _put_file(self, key, path, sha256):
        def write(fh):
            # hashed again while copying: the file may have changed since push verified it
            with open(path, "rb") as src:
                actual, _ = _hash_copy(iter(lambda: src.read(CHUNK), b""), fh, 1 << 62)
            if actual != sha256:
                raise IntegrityError(f"{path} changed while being pushed (sha256 {actual}, expected {sha256})")
        self._write(key, write)

    def _put_bytes(self, key, data):
        self._write(key, lambda fh: fh.write(data))

    def _read(self, key):
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def _chunks(self, key):
        with open(self.root / key, "rb") as fh:
            yield from iter(lambda: fh.read(CHUNK), b"")

    def _keys(self, under):
        base = self.root / under
        return [p.relative_to(self.root).as_posix() for p in base.iterdir()
                if p.is_file() and not p.name.startswith(".")] if base.is_dir() else []


class S3Remote(Remote):
    """S3 or anything speaking its API (MinIO, Ceph, moto). boto3 is imported on first use only:
    importing it (and ssl) in a gevent process before monkey-patching breaks gevent."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, cache: Path | None = None):
        super().__init__(cache)
        self.bucket, self.prefix, self.endpoint = bucket, prefix.strip("/"), endpoint
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def client(self):
        if self._client is None:
            import boto3

            session = boto3.session.Session()
            self._client = session.client("s3", endpoint_url=self.endpoint,
                                          region_name=session.region_name or DEFAULT_REGION)
        return self._client

    def _call(self, op: str, absent: Any = _RAISE, **kwargs):
        """One S3 call; `absent` is returned for a missing key, any other failure names the endpoint."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"{self.url} at {self.client.meta.endpoint_url}"
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if absent is not _RAISE and err.get("Code") in ("404", "NoSuchKey", "NotFound"):
                return absent
            raise RemoteError(f"S3 {op} on {where} failed: {err.get('Code')} {err.get('Message', '')}") from None
        except BotoCoreError as exc:  # EndpointConnectionError and friends: the message names the URL
            raise RemoteError(f"S3 {op} on {where} failed: {exc}") from None

    def _exists(self, key):
        return self._call("head_object", Key=self._key(key), absent=None) is not None

    def _put_file(self, key, path, sha256):
        # S3 itself checks the body against this checksum, so a file changed after verification is refused.
        with open(path, "rb") as fh:
            self._call("put_object", Key=self._key(key), Body=fh,
                       ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode())

    def _put_bytes(self, key, data):
        self._call("put_object", Key=self._key(key), Body=data, ContentType="application/json")

    def _read(self, key):
        found = self._call("get_object", Key=self._key(key), absent=None)
        return None if found is None else found["Body"].read()

    def _chunks(self, key):
        body = self._call("get_object", Key=self._key(key))["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def _keys(self, under):
        start, keys, token = self._key(under), [], {}
        while True:
            page = self._call("list_objects_v2", Prefix=start, **token)
            keys += [obj["Key"][len(start) - len(under):] for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = {"ContinuationToken": page["NextContinuationToken"]}


def _parse_endpoint(text: str) -> str:
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("use an http(s) URL, e.g. http://localhost:9000")
    return text


def _parse_remote(text: str) -> tuple[str, str, str]:
    """('s3', bucket, prefix) or ('dir', path, '')."""
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not _BUCKET.fullmatch(parsed.netloc):
            raise ValueError(f"{parsed.netloc!r} is not an S3 bucket name")
        return "s3", parsed.netloc, parsed.path.strip("/")
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError("a file:// URL must name a local path (file:///path)")
        text = parsed.path
    elif "://" in text:
        raise ValueError("use s3://bucket/prefix, file:///path or a directory path")
    path = Path(text).expanduser()
    if not path.is_dir():
        # a typo must not quietly start a new, empty remote
        raise ValueError(f"{path} is not a directory; create it first")
    return "dir", str(path.resolve()), ""


def from_env(env: dict[str, str] | None = None) -> Remote | None:
    """The remote that AIGC_MODEL_REMOTE names, or None (the default: local store only)."""
    env = dict(os.environ if env is None else env)
    spec = read_env(env, ENV_REMOTE, _parse_remote, None)
    if spec is None:
        return None
    cache = read_env(env, ENV_CACHE, Path, None)
    kind, where, prefix = spec
    if kind == "dir":
        return DirRemote(where, cache=cache)
    return S3Remote(where, prefix, endpoint=read_env(env, ENV_ENDPOINT, _parse_endpoint, None), cache=cache)
