"""A run's folder in $AIGC_JOBS_DIR, in the format the UI's jobs pages read (ui/README.md).

    <run>/status.json     state, step/total, message; replaced atomically
    <run>/metrics.jsonl   one line per logged step: {"step", "loss", ["eval_loss"], ...}
    <run>/config.json     the run's config (written when it starts)
    <run>/cancel          present = stop at the next step boundary (after a checkpoint)
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def config(self) -> dict[str, Any]:
        """The run's config.json (what resubmitting resumes), {} before the run has written it."""
        try:
            config = json.loads((self.path / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return config if isinstance(config, dict) else {}

    def final_metrics(self) -> dict[str, Any] | None:
        """metrics.json, written when the run succeeds (eval loss, perplexity, tokens/s, peak memory…)."""
        try:
            final = json.loads((self.path / "metrics.json").read_text())
        except (OSError, ValueError):
            return None
        return final if isinstance(final, dict) else None

    def set_status(self, state: str, **fields: Any) -> dict[str, Any]:
        if state not in STATES:
            raise ValueError(f"state {state!r} is not one of {STATES}")
        self.path.mkdir(parents=True, exist_ok=True)
        status = self.status()
        status.setdefault("created_at", now())
        status.update(fields, state=state, updated_at=now())
        tmp = self.path / "status.json.tmp"
        tmp.write_text(json.dumps(status, sort_keys=True) + "\n")
        os.replace(tmp, self.path / "status.json")
        return status

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a half-written last line
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Drop lines logged after `step` (a resumed run logs those steps again)."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= step]
        tmp = self.path / "metrics.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.path / "metrics.jsonl")

    def request_cancel(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "cancel").touch()

    @property
    def cancel_requested(self) -> bool:
        return (self.path / "cancel").exists()

    def clear_cancel(self) -> None:
        (self.path / "cancel").unlink(missing_ok=True)
