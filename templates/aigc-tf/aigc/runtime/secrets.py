"""Read a secret the way OpenFaaS mounts them: one file per secret.

On a cluster they are at /var/openfaas/secrets/NAME; the local gateway mounts
a function's secrets in a folder it names in AIGC_SECRETS_DIR.
"""

import os
from pathlib import Path

from . import errors


def read(name: str) -> str:
    folder = Path(os.environ.get("AIGC_SECRETS_DIR", "/var/openfaas/secrets"))
    path = folder / name
    try:
        return path.read_text().strip()
    except OSError:
        raise errors.ServerError(f"secret {name!r} is not mounted at {path}; list it under the function's "
                                 "'secrets' in stack.yml") from None
