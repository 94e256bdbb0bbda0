"""A seeded grid around one run config: each row changes a few fields, is trained in its own process (so its
peak RSS is its own) and measured on the same test blocks. METHODOLOGY.md is written from its table.

    python -m finetune sweep finetune/sweeps/methodology.yaml --out finetune/results/sweep.json
    python -m finetune sweep finetune/sweeps/methodology.yaml --only lr-8e-3      # one row again

A sweep file names the config the rows change (a path relative to the sweep file), the run-id prefix, the
number and length of test blocks, and the rows, each a name and the fields it changes:

    config: cmp-lora.yaml
    prefix: sweep
    test_blocks: 32
    test_seq_len: 512
    rows:
      reference: {}
      seed-1: {seed: 1}
      r-16: {lora_r: 16, lora_alpha: 32}

Rows whose run already finished are not trained again (a cut sweep resumes); the rows whose only change is
`seed` (and the reference) give the noise every other row is read against. The base model comes from the
model store ($AIGC_MODEL_STORE), in the training processes as here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from .config import RUN_ID, ConfigError, RunConfig

FIXED = ("run_id", "adapter")  # a row is an experiment: it never publishes and its run id is the sweep's


def load(path: Path) -> dict[str, Any]:
    """The sweep file, checked: every row's config is built (and so validated) before anything runs."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"sweep {path}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("rows"), dict) or not spec["rows"]:
        raise ConfigError(f"sweep {path}: needs `config`, `prefix` and a non-empty mapping `rows`")
    unknown = set(spec) - {"config", "prefix", "test_blocks", "test_seq_len", "rows"}
    if unknown:
        raise ConfigError(f"sweep {path}: unknown keys {sorted(unknown)}")
    base = RunConfig.from_file(Path(path).parent / str(spec.get("config", ""))).to_dict()
    prefix = str(spec.get("prefix", "sweep"))
    blocks, seq_len = spec.get("test_blocks", 32), spec.get("test_seq_len", 512)
    for key, value, top in (("test_blocks", blocks, 512), ("test_seq_len", seq_len, 8192)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise ConfigError(f"sweep {path}: {key} must be an integer 1-{top}, got {value!r}")
    rows = {}
    for name, change in spec["rows"].items():
        change = change or {}
        if not isinstance(change, dict) or set(change) & set(FIXED):
            raise ConfigError(f"sweep row {name!r}: a mapping of config fields, not {', '.join(FIXED)}")
        run_id = f"{prefix}-{name}"
        if not RUN_ID.fullmatch(run_id):
            raise ConfigError(f"sweep row {name!r}: {run_id!r} is not a valid run_id")
        rows[name] = {"change": change, "config": RunConfig.from_dict({**base, **change, "run_id": run_id,
                                                                       "adapter": None})}
    return {"path": str(path), "prefix": prefix, "test_blocks": blocks, "test_seq_len": seq_len, "rows": rows}


def train_row(cfg: RunConfig, jobs_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Train one row in a fresh interpreter (RSS is per process; a finished run returns its metrics)."""
    metrics = Path(jobs_dir) / cfg.run_id / "metrics.json"
    if not metrics.is_file():
        with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
            json.dump(cfg.to_dict(), fh)
            fh.flush()
            subprocess.run([sys.executable, "-m", "finetune", "--data-dir", str(data_dir), "--jobs-dir",
                            str(jobs_dir), "train", fh.name, "--no-progress"], check=True,
                           stdout=subprocess.DEVNULL)
    return json.loads(metrics.read_text())


def test_perplexity(cfg: RunConfig, trained: bool, jobs_dir: Path, data_dir: Path, spec: dict[str, Any]) -> float:
    """Perplexity on the first test blocks of the row's corpus: of its run, or (trained=False) of the base."""
    from . import blocks
    from .evaluate import load_run, perplexity
    from .train import load_base

    model, tokenizer, _ = load_base(cfg.base)
    if trained:
        _, model = load_run(Path(jobs_dir) / cfg.run_id, model)
    return perplexity(model, tokenizer, blocks.files_for(cfg.corpus, data_dir, "test"), spec["test_blocks"],
                      spec["test_seq_len"])


def run(spec: dict[str, Any], jobs_dir: Path, data_dir: Path, out: Path | None = None,
        only: list[str] | None = None) -> dict[str, Any]:
    names = list(spec["rows"])
    missing = [n for n in only or [] if n not in spec["rows"]]
    if missing:
        raise ConfigError(f"no row(s) {missing} in the sweep; it has {names}")
    previous = json.loads(out.read_text()) if out and out.is_file() else {}
    test = {"test_blocks": spec["test_blocks"], "test_seq_len": spec["test_seq_len"]}
    if any(previous.get(k) != v for k, v in test.items()):
        previous = {}  # measured on other blocks: nothing carries over
    results: dict[str, Any] = {"sweep": spec["path"], **test, "rows": previous.get("rows", {})}
    results["rows"] = {n: results["rows"][n] for n in names if n in results["rows"]}  # dropped rows go
    first = next(iter(spec["rows"].values()))["config"]
    results["base_perplexity"] = previous.get("base_perplexity") or test_perplexity(first, False, jobs_dir,
                                                                                    data_dir, spec)
    for name in only or names:
        cfg = spec["rows"][name]["config"]
        began = time.perf_counter()
        metrics = train_row(cfg, jobs_dir, data_dir)
        results["rows"][name] = {
            "change": spec["rows"][name]["change"], "run_id": cfg.run_id,
            "test_perplexity": test_perplexity(cfg, True, jobs_dir, data_dir, spec),
            **{k: metrics[k] for k in ("eval_loss", "final_train_loss", "train_seconds", "train_tokens",
                                       "train_tokens_per_second", "peak_rss_mb", "trainable_parameters",
                                       "trainable_percent")},
        }
        print(f"{name}: perplexity {results['rows'][name]['test_perplexity']:.3f} "
              f"({time.perf_counter() - began:.0f} s)", file=sys.stderr)
        results["rows"] = {n: results["rows"][n] for n in names if n in results["rows"]}
        if out:
            out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def noise(results: dict[str, Any], key: str = "test_perplexity") -> tuple[float, float] | None:
    """(min, max) of `key` over the rows that differ from the reference only by their seed."""
    values = [r[key] for r in results["rows"].values() if set(r["change"]) <= {"seed"}]
    return (min(values), max(values)) if len(values) > 1 else None


def describe(change: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in change.items()) or "(reference)"


def table(results: dict[str, Any]) -> str:
    rows = results["rows"]
    ref = rows.get("reference", next(iter(rows.values()), None))
    lines = ["| row | change | test perplexity | vs reference | val loss | train s | tokens/s | peak RSS MB | "
             "trainable |", "|---|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| base | no training | {results['base_perplexity']:.2f} | "
             f"{100 * (results['base_perplexity'] / ref['test_perplexity'] - 1):+.1f}% | - | - | - | - | 0 |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {describe(r['change'])} | {r['test_perplexity']:.2f} | "
                     f"{100 * (r['test_perplexity'] / ref['test_perplexity'] - 1):+.1f}% | {r['eval_loss']:.3f} | "
                     f"{r['train_seconds']:.0f} | {r['train_tokens_per_second']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['trainable_parameters']:,} |")
    spread, loss = noise(results), noise(results, "eval_loss")
    if spread:
        lines.append(f"\nSeed noise: test perplexity {spread[0]:.2f}–{spread[1]:.2f} over the seed rows "
                     f"(±{100 * (spread[1] - spread[0]) / 2 / ref['test_perplexity']:.1f}% of the reference), "
                     f"validation loss {loss[0]:.3f}–{loss[1]:.3f}.")
    return "\n".join(lines)
