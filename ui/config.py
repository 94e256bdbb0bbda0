"""The UI's settings: a few environment variables, validated at start.

| variable | default |
|---|---|
| AIGC_UI_GATEWAY | http://127.0.0.1:8080 |
| AIGC_UI_SECRET_KEY | random per start (cookies signed before a restart stop working) |
| AIGC_UI_STACK | ./stack.yml (the entries the deploy page offers) |
| AIGC_UI_FINETUNE_FUNCTION | finetune (the function whose /runs the jobs pages show) |
| AIGC_UI_FINETUNE_TOKEN | unset (its bearer token: the value of the gateway's finetune-token secret) |
| AIGC_UI_TIMEOUT | 30s (gateway /system calls) |
| AIGC_UI_INVOKE_TIMEOUT | 300s (function calls: a cold start plus the work) |
| AIGC_UI_MAX_UPLOAD | 10Mi |
| AIGC_UI_SESSION_IDLE | 12h (a login unused this long is forgotten) |
| AIGC_UI_SECURE_COOKIE | false (set true behind HTTPS) |

A wrong value stops the UI at start with a message naming the variable,
rather than failing on the first request. Nothing here names a folder of the
gateway's machine: every page reads through HTTP (the gateway's /system API and
the functions' own routes), so the UI works the same against a remote gateway.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from aigc.runtime.config import parse_bool, parse_duration, parse_size, read_env


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


def check_gateway_url(url: str, name: str = "AIGC_UI_GATEWAY") -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{name}={url!r} must be an http(s) URL such as http://127.0.0.1:8080")
    return url.strip().rstrip("/")


def check_function(name: str) -> str:
    from .gateway import NAME

    if not NAME.fullmatch(name):
        raise ConfigError(f"AIGC_UI_FINETUNE_FUNCTION={name!r} is not a function name")
    return name


@dataclass(frozen=True)
class Config:
    gateway: str = "http://127.0.0.1:8080"
    secret_key: str = ""
    secret_key_generated: bool = False
    stack_file: Path = Path("stack.yml")
    finetune_function: str = "finetune"
    finetune_token: str = ""
    timeout: float = 30.0
    invoke_timeout: float = 300.0
    max_upload: int = 10 << 20
    session_idle: float = 12 * 3600.0
    secure_cookie: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Config":
        env = os.environ if env is None else env

        def get(name, parse, default):
            try:
                return read_env(env, name, parse, default)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

        def positive(parse):
            def inner(text):
                value = parse(text)
                if value <= 0:
                    raise ValueError("must be > 0")
                return value
            return inner

        key = env.get("AIGC_UI_SECRET_KEY", "")
        if key and len(key) < 16:
            raise ConfigError("AIGC_UI_SECRET_KEY must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        config = cls(
            gateway=check_gateway_url(env.get("AIGC_UI_GATEWAY") or cls.gateway),
            secret_key=key or secrets.token_hex(32),
            secret_key_generated=not key,
            stack_file=Path(env.get("AIGC_UI_STACK") or "stack.yml"),
            finetune_function=check_function(env.get("AIGC_UI_FINETUNE_FUNCTION") or cls.finetune_function),
            finetune_token=env.get("AIGC_UI_FINETUNE_TOKEN", "").strip(),
            timeout=get("AIGC_UI_TIMEOUT", positive(parse_duration), cls.timeout),
            invoke_timeout=get("AIGC_UI_INVOKE_TIMEOUT", positive(parse_duration), cls.invoke_timeout),
            max_upload=get("AIGC_UI_MAX_UPLOAD", positive(parse_size), cls.max_upload),
            session_idle=get("AIGC_UI_SESSION_IDLE", positive(parse_duration), cls.session_idle),
            secure_cookie=get("AIGC_UI_SECURE_COOKIE", parse_bool, cls.secure_cookie),
        )
        if "gateway" in overrides:
            overrides["gateway"] = check_gateway_url(overrides["gateway"], "--gateway")
        return replace(config, **overrides)
