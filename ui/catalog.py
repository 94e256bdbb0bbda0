"""What the UI reads from disk, read-only: the model store, the stack file and fine-tuning runs.

Jobs (written by the fine-tuning of issue 9; the UI only reads them), one folder per run:

    $AIGC_JOBS_DIR/<run-id>/status.json    replaced atomically (write a temp file, rename)
        {"state": "queued|running|succeeded|failed|cancelled",      (required)
         "step": 120, "total": 500, "progress": 0.24,              (progress defaults to step/total)
         "base": "smollm2-135m", "adapter": "coq",                 (publishes store entry base--adapter)
         "created_at": "2025-01-01T12:00:00Z", "updated_at": "…", "message": "…"}
    $AIGC_JOBS_DIR/<run-id>/metrics.jsonl  appended, one object per logged step
        {"step": 10, "loss": 2.31, "eval_loss": 2.40, "lr": 0.0002}   (step and loss required)

A half-written last line of metrics.jsonl (the trainer mid-append) is skipped.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from aigc import stack as stack_mod
from aigc.runtime import adapters, errors, store

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
METRICS_FILE = "metrics.json"  # optional evaluation numbers beside a store entry's manifest
KINDS = {"image-classification": "image", "sentence-embedding": "embeddings", "text-embedding": "embeddings",
         "feature-extraction": "embeddings", "text-generation": "chat", "text-to-speech": "speech",
         "image-generation": "images"}


# --- models and adapters ------------------------------------------------------------
def models(root: Path) -> list[dict[str, Any]]:
    """Every store entry, damaged ones included (with the problem), so the page shows what is there."""
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if (path / store.MANIFEST).is_file():
            out.append(model_card(root, path.name))
    return out


def model_card(root: Path, name: str) -> dict[str, Any]:
    if "/" in name or name.startswith(".") or not (root / name / store.MANIFEST).is_file():
        raise errors.ModelNotFound(f"no model {name!r} in the store at {root}")
    try:
        stored = store.open_model(name, root)
        manifest, problem = stored.manifest, None
    except (errors.AigcError, ValueError, KeyError) as exc:  # damaged or unreadable: show it, do not fail the page
        try:
            manifest = json.loads((root / name / store.MANIFEST).read_text())
        except ValueError:
            manifest = {}
        problem = str(exc) or type(exc).__name__
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    base = manifest.get("base") if manifest.get("task") == adapters.TASK else None
    card = {"name": name, "task": manifest.get("task", ""), "format": manifest.get("format", ""),
            "size": sum(f.get("size", 0) for f in files.values() if isinstance(f, dict)),
            "files": sorted(files.items()), "sources": manifest.get("sources") or [], "base": base,
            "served_as": adapters.served_name(base, manifest.get("adapter", "")) if base else name,
            "adapters": [] if base else adapters.list_adapters(name, root), "problem": problem,
            "details": {k: v for k, v in sorted(manifest.items())
                        if k not in ("files", "sources", "name", "task", "format", "base")},
            "metrics": _flatten(_read_json(root / name / METRICS_FILE))}
    card["licences"] = sorted({str(s.get("license", "")) for s in card["sources"] if isinstance(s, dict)} - {""})
    return card


def model_task(root: Path, name: str | None) -> str:
    try:
        return json.loads((root / (name or "") / store.MANIFEST).read_text()).get("task", "") if name else ""
    except (OSError, ValueError):
        return ""


def served_models(root: Path, base: str) -> list[str]:
    """What a text-generation function answers to: its base model and `base:adapter` for each adapter."""
    return [base] + [adapters.served_name(base, a) for a in adapters.list_adapters(base, root)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as dotted keys, so any shape shows as one table."""
    if isinstance(data, dict):
        return [row for k, v in data.items() for row in _flatten(v, f"{prefix}{k}.")]
    if data is None:
        return []
    return [(prefix.rstrip("."), data)]


# --- the stack file -------------------------------------------------------------------
def stack_entries(path: Path) -> tuple[dict[str, stack_mod.StackFunction], str | None]:
    """The stack's functions, or none and why (no file, unreadable YAML)."""
    if not path.is_file():
        return {}, f"no stack file at {path} (set AIGC_UI_STACK)"
    try:
        return stack_mod.load(path).functions, None
    except (ValueError, OSError) as exc:
        return {}, f"{path}: {exc}"
    except Exception as exc:  # yaml errors have their own hierarchy; any of them means "cannot read it"
        return {}, f"{path}: {type(exc).__name__}: {exc}"


def deployment(fn: stack_mod.StackFunction) -> dict[str, Any]:
    """The FunctionDeployment body faas-cli would send for this stack entry."""
    body = {"service": fn.name, "image": fn.image, "envVars": fn.env(), "labels": dict(fn.labels),
            "annotations": dict(fn.annotations), "secrets": list(fn.secrets)}
    for key in ("limits", "requests"):
        if getattr(fn, key):
            body[key] = dict(getattr(fn, key))
    return body


# --- fine-tuning runs -------------------------------------------------------------------
def jobs(root: Path) -> list[dict[str, Any]]:
    if not root.is_dir():
        return []
    runs = [job(root, p.name, with_metrics=False) for p in root.iterdir()
            if RUN_ID.match(p.name) and (p / "status.json").is_file()]
    return sorted(runs, key=lambda r: (r["created_at"] or "", r["id"]), reverse=True)


def job(root: Path, run_id: str, with_metrics: bool = True) -> dict[str, Any]:
    if not RUN_ID.match(run_id) or not (root / run_id / "status.json").is_file():
        raise errors.ModelNotFound(f"no fine-tuning run {run_id!r} in {root}")
    status = _read_json(root / run_id / "status.json")
    problem = None if isinstance(status, dict) else "status.json is not a JSON object"
    status = status if isinstance(status, dict) else {}
    state = status.get("state") if status.get("state") in STATES else "unknown"
    step, total = _number(status.get("step")), _number(status.get("total"))
    progress = _number(status.get("progress"))
    if progress is None and step is not None and total:
        progress = step / total
    out = {"id": run_id, "state": state, "step": step, "total": total,
           "progress": None if progress is None else min(max(progress, 0.0), 1.0),
           "base": status.get("base"), "adapter": status.get("adapter"), "message": status.get("message") or problem,
           "created_at": status.get("created_at"), "updated_at": status.get("updated_at")}
    if with_metrics:
        out["points"] = loss_points(root / run_id / "metrics.jsonl")
    return out


def loss_points(path: Path) -> list[dict[str, float]]:
    points = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return points
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the line being appended right now
        if isinstance(row, dict) and _number(row.get("step")) is not None and _number(row.get("loss")) is not None:
            point = {"step": row["step"], "loss": row["loss"]}
            if _number(row.get("eval_loss")) is not None:
                point["eval_loss"] = row["eval_loss"]
            points.append(point)
    return points


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value
