"""LoRA adapters in the model store, served as extra models of their base.

An adapter is an ordinary store entry named `<base>--<adapter>`:

    $AIGC_MODEL_STORE/smollm2-135m--coq/manifest.json      task "lora-adapter", base "smollm2-135m"
    $AIGC_MODEL_STORE/smollm2-135m--coq/adapter_config.json         (peft format)
    $AIGC_MODEL_STORE/smollm2-135m--coq/adapter_model.safetensors

and is served as model `smollm2-135m:coq`. Being a plain entry, it gets the
store's sha256 manifest, `aigc models list/verify`, and the atomic
write-then-rename, with no second layout to maintain. `write_adapter()` is
what a trainer (issue 9) calls to publish one; a running instance sees it on
the next request, since the store is listed per request (a directory read).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import errors, store

SEPARATOR = "--"  # in store entry names; `:` (the served form) is not portable in file names
TASK = "lora-adapter"
FILES = ("adapter_config.json", "adapter_model.safetensors")
OPTIONAL_FILES = ("README.md",)  # the model card, when the trainer wrote one
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or SEPARATOR in name:
        raise errors.InvalidInput(f"adapter name {name!r} must be 1-63 of a-z, 0-9, '_', '.', '-' "
                                  f"(starting with a letter or digit, no {SEPARATOR!r})")
    return name


def entry_name(base: str, adapter: str) -> str:
    return f"{base}{SEPARATOR}{adapter}"


def served_name(base: str, adapter: str) -> str:
    return f"{base}:{adapter}"


def split_served(name: str) -> tuple[str, str | None]:
    """`base:adapter` -> (base, adapter); a plain base name -> (base, None)."""
    base, sep, adapter = name.partition(":")
    return base, (adapter if sep else None)


def list_adapters(base: str, root: Path | None = None) -> list[str]:
    """Names of the adapters of `base` in the store (complete entries only: the manifest comes last)."""
    root = Path(root) if root else store.store_root()
    prefix = base + SEPARATOR
    if not root.is_dir():
        return []
    return sorted(p.name[len(prefix):] for p in root.iterdir()
                  if p.name.startswith(prefix) and (p / store.MANIFEST).is_file())


def open_adapter(base: str, adapter: str, root: Path | None = None) -> store.StoredModel:
    name = entry_name(base, adapter)
    try:
        stored = store.open_model(name, root)
    except errors.ModelNotFound:
        raise errors.ModelNotFound(f"model {served_name(base, adapter)!r} does not exist: no adapter {adapter!r} "
                                   f"for {base!r} in the store") from None
    if stored.manifest.get("task") != TASK or stored.manifest.get("base") != base:
        raise errors.ServerError(f"store entry {name!r} is not a LoRA adapter of {base!r} (see its manifest)")
    for rel in FILES:
        stored.file(rel)  # raises if the manifest lacks it
    return stored


def check_publishable(base: str, adapter: str, run_id: str | None, root: Path | None = None) -> None:
    """InvalidInput if publishing would replace an adapter that another run (or no run) published."""
    root = Path(root) if root else store.store_root()
    manifest = root / store.check_entry(entry_name(store.check_entry(base), check_name(adapter))) / store.MANIFEST
    if manifest.is_file():
        previous = json.loads(manifest.read_text()).get("run_id")
        if previous is None or previous != run_id:
            raise errors.InvalidInput(f"adapter {adapter!r} of {base!r} is already published (by run {previous!r}); "
                                      "choose another adapter name, or remove that one first")


def write_adapter(files_dir: Path, base: str, adapter: str, root: Path | None = None,
                  extra: dict[str, Any] | None = None, replace: bool = False) -> store.StoredModel:
    """Publish a peft adapter (a `save_pretrained` directory) as a store entry, atomically.

    `extra` goes into the manifest (training data, steps, loss…). An adapter of
    the same name is replaced only when its manifest names the same `run_id` as
    `extra` (the run publishing again) or `replace` is set: anything else is an
    error, so no request silently swaps what text-generate serves.
    """
    root = Path(root) if root else store.store_root()
    if not replace:
        check_publishable(base, adapter, (extra or {}).get("run_id"), root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / store.check_entry(entry_name(store.check_entry(base), check_name(adapter)))
    work = Path(tempfile.mkdtemp(prefix=f".adapter-{adapter}-", dir=root))
    try:
        for rel in FILES:
            shutil.copyfile(Path(files_dir) / rel, work / rel)
        for rel in OPTIONAL_FILES:
            if (Path(files_dir) / rel).is_file():
                shutil.copyfile(Path(files_dir) / rel, work / rel)
        store.write_manifest(work, dict(extra or {}, name=target.name, task=TASK, format="peft", base=base,
                                        adapter=adapter))
        store.publish(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return store.open_model(target.name, root)
