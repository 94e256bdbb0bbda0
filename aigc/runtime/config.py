"""Instance settings, read once from documented environment variables.

The names `exec_timeout` and `max_inflight` are of-watchdog's, so a stack.yml
written for OpenFaaS python templates means the same thing here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from `30`, `30s`, `1m30s`, `500ms` (of-watchdog accepts the same forms)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30, 30s, 1m30s, 500ms)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `512Ki`, `10Mi`, `1Gi` (Kubernetes quantity suffixes)."""
    m = re.fullmatch(r"\s*(\d+)\s*(Ki|Mi|Gi)?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes or Ki/Mi/Gi, e.g. 10Mi)")
    return int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m.group(2)]


def parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError("use true or false")


def read_env(env, name: str, parse, default):
    """`env[name]` parsed, or `default` when unset or empty; a ValueError naming the variable otherwise."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ValueError(f"invalid {name}={raw!r}: {exc}") from None


def default_model_store() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "aigc" / "models"


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    host: str = "0.0.0.0"
    workers: int = 1
    threads: int = 4
    worker_class: str = "gthread"  # or "sync": one request at a time per worker
    exec_timeout: float = 60.0
    max_inflight: int = 0  # 0 = unlimited, like of-watchdog
    max_body_bytes: int = 10 << 20
    model_store: Path = default_model_store()
    auth_token_secret: str = ""  # a secret's name: its value is the bearer token every call must carry

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)

        def get(name: str, parse, default):
            return read_env(env, name, parse, default)

        settings = cls(
            port=get("PORT", int, cls.port),
            host=get("AIGC_HOST", str, cls.host),
            workers=get("AIGC_WORKERS", int, cls.workers),
            threads=get("AIGC_THREADS", int, cls.threads),
            worker_class=get("AIGC_WORKER_CLASS", str, cls.worker_class),
            exec_timeout=get("exec_timeout", parse_duration, cls.exec_timeout),
            max_inflight=get("max_inflight", int, cls.max_inflight),
            max_body_bytes=get("AIGC_MAX_BODY_SIZE", parse_size, cls.max_body_bytes),
            model_store=get("AIGC_MODEL_STORE", Path, default_model_store()),
            auth_token_secret=get("AIGC_AUTH_TOKEN_SECRET", str, cls.auth_token_secret),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            (1 <= self.port <= 65535, f"PORT must be 1..65535, got {self.port}"),
            (self.workers >= 1, f"AIGC_WORKERS must be >= 1, got {self.workers}"),
            (self.threads >= 1, f"AIGC_THREADS must be >= 1, got {self.threads}"),
            (self.worker_class in ("gthread", "sync"),
             f"AIGC_WORKER_CLASS must be gthread or sync, got {self.worker_class!r}"),
            (self.exec_timeout > 0, f"exec_timeout must be > 0, got {self.exec_timeout}"),
            (self.max_inflight >= 0, f"max_inflight must be >= 0, got {self.max_inflight}"),
            (self.max_body_bytes > 0, f"AIGC_MAX_BODY_SIZE must be > 0, got {self.max_body_bytes}"),
            (self.auth_token_secret == "" or re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.auth_token_secret),
             f"AIGC_AUTH_TOKEN_SECRET must be a secret's name, got {self.auth_token_secret!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
