"""`GET /system/models[/NAME]`: the model store the gateway's replicas serve from, as model cards.

An extension of the local gateway (OpenFaaS has no model API), so that a UI
or a script on another machine sees the same store the functions load from,
without reading that machine's disk. Each card is the entry's manifest
(task, format, files with size and sha256, sources with licences), the
adapters of a base (or the base of an adapter), and the evaluation numbers
of an optional `metrics.json` beside the manifest. A damaged entry is listed
with its problem rather than hidden. Reading a card only stats files
(store.open_model); nothing is hashed per request.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from ..runtime import adapters, errors, store
from .http import error

METRICS_FILE = "metrics.json"  # optional evaluation numbers beside a store entry's manifest
MAX_CARDS = 1000  # a listing is bounded like everything the gateway answers


def cards(root: Path) -> list[dict[str, Any]]:
    """Every store entry, damaged ones included (with the problem), so a page shows what is there."""
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if (p / store.MANIFEST).is_file())
    return [card(root, name) for name in names[:MAX_CARDS]]


def card(root: Path, name: str) -> dict[str, Any]:
    store.check_entry(name)
    if not (root / name / store.MANIFEST).is_file():
        raise errors.ModelNotFound(f"no model {name!r} in the gateway's store")
    try:
        manifest, problem = store.open_model(name, root).manifest, None
    except (errors.AigcError, ValueError, KeyError) as exc:  # damaged or unreadable: show it, do not fail
        manifest = _read_json(root / name / store.MANIFEST)
        manifest = manifest if isinstance(manifest, dict) else {}
        problem = str(exc) or type(exc).__name__
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    base = manifest.get("base") if manifest.get("task") == adapters.TASK else None
    sources = [s for s in manifest.get("sources") or [] if isinstance(s, dict)]
    return {"name": name, "task": manifest.get("task", ""), "format": manifest.get("format", ""),
            "size": sum(f.get("size", 0) for f in files.values() if isinstance(f, dict)),
            "files": {k: v for k, v in sorted(files.items())}, "sources": sources,
            "licences": sorted({str(s.get("license", "")) for s in sources} - {""}),
            "base": base, "served_as": adapters.served_name(base, manifest.get("adapter", "")) if base else name,
            "adapters": [] if base else adapters.list_adapters(name, root), "problem": problem,
            "details": {k: v for k, v in sorted(manifest.items())
                        if k not in ("files", "sources", "name", "task", "format", "base")},
            "metrics": _read_json(root / name / METRICS_FILE)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


async def list_models(request):
    return web.json_response({"store": "local", "models": await asyncio.to_thread(cards, store.store_root())})


async def get_model(request):
    try:
        return web.json_response(await asyncio.to_thread(card, store.store_root(), request.match_info["name"]))
    except errors.InvalidInput as exc:
        return error(400, str(exc))
    except errors.ModelNotFound as exc:
        return error(404, str(exc))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/system/models", list_models)
    app.router.add_get("/system/models/{name}", get_model)
