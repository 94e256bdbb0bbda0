"""Secrets as OpenFaaS's `/system/secrets` manages them, kept as files under `$AIGC_STATE_DIR/secrets`.

Each secret is one file, mode 0600, written atomically; a replica sees the
functions' secrets as files (as under /var/openfaas/secrets in a cluster).
Values are never listed, returned or logged: the API gives names only. Names
follow Kubernetes' Secret names (a DNS subdomain), so none can climb out of
the folder; the gateway's own credentials there are not API secrets.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Any

NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
RESERVED = frozenset({"basic-auth-password", "basic-auth-user"})
MAX_BYTES = 1 << 20  # a Kubernetes Secret holds at most 1 MiB


class SecretError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise SecretError(400, "'name' must be a secret name: lowercase letters, digits, '-' and '.', "
                               "starting and ending with a letter or digit, at most 253")
    if name in RESERVED:
        raise SecretError(400, f"{name!r} is the gateway's own credential, not a function secret")
    return name


def parse(body: Any, with_value: bool = True) -> tuple[str, bytes]:
    """A Secret body ({name, value | rawValue}) as (name, bytes)."""
    if not isinstance(body, dict):
        raise SecretError(400, 'body must be a JSON object {"name": ..., "value": ...}')
    name = check_name(body.get("name"))
    if not with_value:
        return name, b""
    value, raw = body.get("value"), body.get("rawValue")
    if isinstance(value, str) and value:
        data = value.encode()
    elif isinstance(raw, str) and raw:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(400, "'rawValue' must be base64") from None
    else:
        raise SecretError(400, "give the secret's 'value' (text) or 'rawValue' (base64)")
    if len(data) > MAX_BYTES:
        raise SecretError(413, f"a secret holds at most {MAX_BYTES} bytes, got {len(data)}")
    return name, data


def _storage_error(exc: OSError) -> SecretError:
    if exc.errno == errno.ENOSPC:
        return SecretError(507, "the gateway's disk is full: the secret was not written (its old value, if any, "
                                "is unchanged); free space under $AIGC_STATE_DIR and retry")
    return SecretError(500, f"the secret could not be written: {exc.strerror}")


class SecretStore:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_file() and p.name not in RESERVED and NAME.fullmatch(p.name))

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def write(self, name: str, data: bytes, create: bool) -> None:
        target = self.path(name)
        if create and target.exists():
            raise SecretError(409, f"secret {name!r} already exists; update it with PUT /system/secrets")
        if not create and not target.exists():
            raise SecretError(404, f"secret {name!r} not found; create it with POST /system/secrets")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)  # mkstemp: 0600 from the start
        except OSError as exc:
            raise _storage_error(exc) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)  # the old value stays whole until the new one is
        except OSError as exc:
            raise _storage_error(exc) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete(self, name: str) -> None:
        target = self.path(name)
        if not target.is_file():
            raise SecretError(404, f"secret {name!r} not found")
        target.unlink()
