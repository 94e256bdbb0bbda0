"""Publishing a trained adapter: into the local model store, and to the remote store when one is configured.

    python -m finetune publish RUN_ID [--adapter NAME] [--if-missing]

The local entry is what a text-generate instance on this machine serves at
once (`<base>:<adapter>`, no redeploy); with AIGC_MODEL_REMOTE set, the entry
is also pushed (content-addressed, see aigc/runtime/remote.py), so instances on other
machines can pull it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, default_jobs_dir


def publish(adapter_dir: Path, cfg: RunConfig, metrics: dict[str, Any], store_root: Path | None = None,
            adapter: str | None = None) -> dict[str, Any]:
    from aigc.runtime import remote
    from aigc.runtime import adapters

    name = adapter or cfg.adapter
    if not name:
        raise ConfigError("no adapter name: set `adapter` in the run config or pass --adapter")
    if cfg.method == "full":
        raise ConfigError("a full fine-tune is a model, not an adapter; nothing to publish as an adapter")
    extra = {"run_id": cfg.run_id, "method": cfg.method, "corpus": cfg.corpus,
             "training": {k: metrics.get(k) for k in ("steps", "train_tokens", "trainable_parameters",
                                                       "trainable_percent", "eval_loss")}}
    stored = adapters.write_adapter(adapter_dir, cfg.base, name, store_root, extra=extra)
    result: dict[str, Any] = {"entry": stored.name, "path": str(stored.path),
                              "served_as": adapters.served_name(cfg.base, name)}
    target = remote.from_env()
    if target is not None:
        result["remote"] = target.push(stored.path)
    return result


def publish_run(run_id: str, adapter: str | None = None, jobs_dir: Path | None = None,
                store_root: Path | None = None, if_missing: bool = False) -> dict[str, Any]:
    """`if_missing`: leave an adapter of that name already in the store as it is (run.sh's setup)."""
    from aigc.runtime import adapters

    run = Path(jobs_dir or default_jobs_dir()) / run_id
    if not (run / "config.json").is_file():
        raise ConfigError(f"no run {run_id!r} in {run.parent}")
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    name = adapter or cfg.adapter
    if if_missing and name and name in adapters.list_adapters(cfg.base, store_root):
        return {"served_as": adapters.served_name(cfg.base, name), "published": False,
                "why": "already in the store"}
    if not (run / "adapter" / "adapter_model.safetensors").is_file():
        raise ConfigError(f"run {run_id!r} has no adapter yet (state: {_state(run)})")
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    return publish(run / "adapter", cfg, metrics, store_root, adapter)


def _state(run: Path) -> str:
    try:
        return json.loads((run / "status.json").read_text()).get("state", "unknown")
    except (OSError, ValueError):
        return "unknown"
