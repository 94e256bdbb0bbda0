"""What a run leaves for people: the adapter's model card and the loss curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import RunConfig


def model_card(cfg: RunConfig, metrics: dict[str, Any], evaluation: dict[str, Any] | None = None,
               data_dir: Path | None = None) -> str:
    what = "a full fine-tune" if cfg.method == "full" else f"a {cfg.method} adapter (peft)"
    task = ("token blocks of the files (next-token prediction)" if cfg.task == "text" else
            "proof examples: the evaluation's retrieval prompt (finetune/retrieval.py: library premises from the "
            "training files, earlier premises of the lemma's file, its tail, the statement) with the proof as "
            "the only target")
    lines = [
        "---",
        f"base_model: {cfg.base}",
        "library_name: peft" if cfg.method != "full" else "library_name: transformers",
        "tags: [coq, proofs, aigc-functions]",
        "---",
        f"# {cfg.run_id}",
        "",
        f"{what} of `{cfg.base}` trained on Coq sources: "
        + ("the training split of the Debian libcoq-* corpus (`python -m finetune data`; licences per library "
           "below and in finetune/DATA_CARD.md)." if cfg.corpus == "debian" else f"the `.v` files under `{cfg.corpus}`.")
        + f" Task: {task}.",
        "",
        "Intended use: completing Coq proofs and Coq source; it knows nothing the base did not, apart from style.",
        "",
        "## Reproduce",
        "",
        "Save the configuration below as `run.json`, then (AIGC Functions' repository, `bash run.sh setup`):",
        "",
        "```bash",
        *([".venv/bin/python -m finetune data"] if cfg.corpus == "debian" else []),
        *([f"# first publish the adapter it starts from, {cfg.base}:{cfg.init_adapter} (init_adapter)"]
          if cfg.init_adapter else []),
        ".venv/bin/python -m finetune train run.json",
        "```",
        "",
        "## Training",
        "",
        "```json",
        json.dumps(cfg.to_dict(), indent=2, sort_keys=True),
        "```",
        "",
        "## Results",
        "",
        "| | |",
        "|---|---|",
    ]
    for key in ("trainable_parameters", "trainable_percent", "train_tokens", "target_tokens", "train_seconds",
                "train_tokens_per_second", "peak_rss_mb", "initial_eval_loss", "eval_loss"):
        if metrics.get(key) is not None:
            lines.append(f"| {key} | {metrics[key]} |")
    for key, value in sorted((evaluation or {}).items()):
        lines.append(f"| {key} | {value} |")
    lines += _licences(cfg, data_dir)
    lines.append("")
    return "\n".join(lines)


def _licences(cfg: RunConfig, data_dir: Path | None) -> list[str]:
    """The Debian packages the corpus came from, with version and licence (from split.json)."""
    split = Path(data_dir or "") / "split.json"
    if cfg.corpus != "debian" or data_dir is None or not split.is_file():
        return []
    from .examples import PACKAGES as PROOF_PACKAGES

    summary = json.loads(split.read_text())
    packages = summary.get("packages", {})
    if cfg.task == "proofs":  # proof examples come from the checker's library only
        packages = {name: p for name, p in packages.items() if name in PROOF_PACKAGES}
    rows = ["", "## Data and licences", "", f"split_digest `{summary.get('split_digest')}`",
            "", "| package | version | files | licence |", "|---|---|---:|---|"]
    for name, p in sorted(packages.items()):
        rows.append(f"| {name} | {p.get('version')} | {p.get('files')} | {p.get('licence', {}).get('main')} |")
    return rows


def loss_plot(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; also keeps a Tk import out of worker processes
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
