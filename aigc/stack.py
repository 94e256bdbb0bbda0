"""Read an OpenFaaS stack.yml (the faas-cli schema) into plain records."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def envsubst(text: str, env: dict[str, str] | None = None) -> str:
    """`${VAR}` and `${VAR:-default}`, as faas-cli expands them before parsing."""
    env = os.environ if env is None else env
    return _ENV_REF.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


@dataclass
class StackFunction:
    name: str
    lang: str
    handler: Path | None  # None: a function deployed from an image alone (container runtime)
    image: str
    environment: dict[str, str] = field(default_factory=dict)
    environment_file: list[Path] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    build_options: list[str] = field(default_factory=list)
    copy: list[str] = field(default_factory=list)  # the stack's configuration.copy, relative to its folder
    read_only_root: bool = False  # readonly_root_filesystem

    def env(self) -> dict[str, str]:
        """environment_file entries (later files win), then inline environment on top, as faas-cli merges them."""
        merged: dict[str, str] = {}
        for path in self.environment_file:
            data = yaml.safe_load(path.read_text()) or {}
            merged.update({str(k): str(v) for k, v in (data.get("environment") or {}).items()})
        merged.update(self.environment)
        return merged


@dataclass
class Stack:
    path: Path
    gateway: str
    functions: dict[str, StackFunction]

    def find(self, ref: str) -> StackFunction:
        """A function by name, or by its handler directory."""
        if ref in self.functions:
            return self.functions[ref]
        wanted = (Path.cwd() / ref).resolve()
        for fn in self.functions.values():
            if fn.handler.resolve() == wanted:
                return fn
        raise KeyError(f"no function {ref!r} in {self.path}; it has {sorted(self.functions)}")


def _resources(path: Path, name: str, value) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"memory", "cpu"}:
        raise ValueError(f"{path}: limits/requests of {name!r} take only 'memory' and 'cpu'")
    memory = str(value.get("memory", ""))
    if memory and not re.fullmatch(r"\d+Mi", memory):
        raise ValueError(f"{path}: memory of {name!r} must be in Mi (e.g. 512Mi), as OpenFaaS on Kubernetes needs")
    return {k: str(v) for k, v in value.items()}


def _mapping(path: Path, where: str, value, optional: bool = True) -> dict:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {where} must be a mapping, got {type(value).__name__}")
    return value


def _strings(path: Path, where: str, value) -> dict[str, str]:
    """A mapping of scalars, as strings (labels, annotations, environment, build_args)."""
    mapping = _mapping(path, where, value)
    if not all(isinstance(v, (str, int, float, bool)) for v in mapping.values()):
        raise ValueError(f"{path}: the values of {where} must be strings or numbers")
    return {str(k): str(v) for k, v in mapping.items()}


def _list(path: Path, where: str, value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: {where} must be a list of strings")
    return list(value)


def load(path: str | Path = "stack.yml") -> Stack:
    path = Path(path)
    try:
        doc = yaml.safe_load(envsubst(path.read_text())) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    doc = _mapping(path, "the file", doc)
    provider = _mapping(path, "provider", doc.get("provider"))
    if provider.get("name") != "openfaas":
        raise ValueError(f"{path}: provider.name must be 'openfaas'")
    base = path.parent
    copy = _list(path, "configuration.copy", _mapping(path, "configuration", doc.get("configuration")).get("copy"))
    functions = {}
    for name, spec in _mapping(path, "functions", doc.get("functions")).items():
        if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
            raise ValueError(f"{path}: function name {name!r} must be a DNS label (a-z, 0-9, '-', max 63)")
        spec = _mapping(path, f"function {name!r}", spec, optional=False)
        for key in ("lang", "handler", "image"):
            if not spec.get(key) or not isinstance(spec[key], str):
                raise ValueError(f"{path}: function {name!r} needs '{key}' (a string)")
        where = f"function {name!r}"
        functions[name] = StackFunction(
            name=name, lang=spec["lang"], handler=(base / spec["handler"]).resolve(), image=spec["image"],
            environment=_strings(path, f"{where} environment", spec.get("environment")),
            environment_file=[(base / f).resolve() for f in _list(path, f"{where} environment_file",
                                                                  spec.get("environment_file"))],
            secrets=_list(path, f"{where} secrets", spec.get("secrets")),
            labels=_strings(path, f"{where} labels", spec.get("labels")),
            annotations=_strings(path, f"{where} annotations", spec.get("annotations")),
            limits=_resources(path, name, spec.get("limits")), requests=_resources(path, name, spec.get("requests")),
            build_args=_strings(path, f"{where} build_args", spec.get("build_args")),
            build_options=_list(path, f"{where} build_options", spec.get("build_options")), copy=copy,
            read_only_root=spec.get("readonly_root_filesystem") is True,
        )
    gateway = provider.get("gateway", "http://127.0.0.1:8080")
    return Stack(path=path, gateway=gateway if isinstance(gateway, str) else "http://127.0.0.1:8080",
                 functions=functions)
