"""What the pages show, shaped from what the gateway and the functions answer (never from the disk).

Fine-tuning runs come from the finetune function's routes (`GET /runs`,
`GET /runs/<id>`, `GET /runs/<id>/metrics`; functions/finetune/handler.py), in
the jobs format of finetune/jobs.py:

    {"state": "queued|running|succeeded|failed|cancelled",      (required)
     "step": 120, "total": 500, "progress": 0.24,              (progress defaults to step/total)
     "base": "smollm2-135m", "adapter": "coq",                 (publishes store entry base--adapter)
     "created_at": "2025-01-01T12:00:00Z", "updated_at": "…", "message": "…"}
    metrics rows: {"step": 10, "loss": 2.31, "eval_loss": 2.40, "lr": 0.0002}   (step and loss required)

Model cards come from the gateway's `GET /system/models` (aigc/gateway/models.py).
The stack file is the one input the UI reads itself: a file its user gives it,
as faas-cli reads one, not state of the gateway's machine.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from aigc import stack as stack_mod

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
KINDS = {"image-classification": "image", "sentence-embedding": "embeddings", "text-embedding": "embeddings",
         "feature-extraction": "embeddings", "text-generation": "chat", "text-to-speech": "speech",
         "image-generation": "images"}


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as dotted keys, so any shape shows as one table."""
    if isinstance(data, dict):
        return [row for k, v in data.items() for row in flatten(v, f"{prefix}{k}.")]
    if data is None:
        return []
    return [(prefix.rstrip("."), data)]


def kind(card: dict[str, Any] | None) -> str:
    """Which invoke panel a function gets, from its model's task."""
    return KINDS.get((card or {}).get("task", ""), "raw")


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
def run_summary(status: Any, run_id: str | None = None) -> dict[str, Any]:
    """One run as the pages show it, from the finetune function's status; odd values become None."""
    problem = None if isinstance(status, dict) else "the function's status is not a JSON object"
    status = status if isinstance(status, dict) else {}
    state = status.get("state") if status.get("state") in STATES else "unknown"
    step, total = _number(status.get("step")), _number(status.get("total"))
    progress = _number(status.get("progress"))
    if progress is None and step is not None and total:
        progress = step / total
    run_id = run_id or status.get("run_id")
    return {"id": run_id if isinstance(run_id, str) and RUN_ID.match(run_id) else "?", "state": state,
            "step": step, "total": total,
            "progress": None if progress is None else min(max(progress, 0.0), 1.0),
            "base": _text(status.get("base")), "adapter": _text(status.get("adapter")),
            "message": _text(status.get("message")) or problem,
            "created_at": _text(status.get("created_at")), "updated_at": _text(status.get("updated_at"))}


def runs(answer: Any) -> list[dict[str, Any]]:
    rows = answer.get("runs") if isinstance(answer, dict) else None
    out = [run_summary(r) for r in rows or [] if isinstance(r, dict)]
    return sorted(out, key=lambda r: (r["created_at"] or "", r["id"]), reverse=True)


def loss_points(rows: Any) -> list[dict[str, float]]:
    points = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or _number(row.get("step")) is None:
            continue
        point = {"step": row["step"]}
        for key in ("loss", "eval_loss"):  # a step may log either or both (step 0: only the validation loss)
            if _number(row.get(key)) is not None:
                point[key] = row[key]
        if len(point) > 1:
            points.append(point)
    return points


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value
