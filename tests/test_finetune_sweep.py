"""The methodology sweep on the tiny model: rows trained in their own processes, measured on the same test
blocks, resumable, and sweep files checked before anything trains."""

from __future__ import annotations

import json

import pytest
import yaml

from finetune import sweep
from finetune.__main__ import main
from finetune.config import ConfigError
from test_finetune import BASE, COQ_FILES, tiny_store  # noqa: F401  (tiny_store is a fixture)

CONFIG = dict(run_id="ref", base=BASE, steps=3, batch_size=2, seq_len=32, learning_rate=0.01, warmup_steps=1,
              eval_every=3, eval_blocks=2, save_every=3, log_every=1, threads=1)


def write_sweep(tmp_path, rows, **extra):
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    for name, text in COQ_FILES.items():
        (corpus / name).write_text(text * 3)
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(dict(CONFIG, corpus=str(corpus))))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"config": "ref.yaml", "prefix": "sw", "test_blocks": 2, "test_seq_len": 32,
                                    "rows": rows, **extra}, sort_keys=False))
    return path


def test_a_sweep_trains_each_row_measures_it_and_resumes(tiny_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIGC_MODEL_STORE", str(tiny_store))
    path = write_sweep(tmp_path, {"reference": {}, "seed-1": {"seed": 1}, "r-8": {"lora_r": 8, "lora_alpha": 16}})
    out, jobs = tmp_path / "sweep.json", tmp_path / "jobs"
    assert main(["--jobs-dir", str(jobs), "sweep", str(path), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results["rows"]) == ["reference", "seed-1", "r-8"]
    for name, row in results["rows"].items():
        saved = json.loads((jobs / f"sw-{name}" / "config.json").read_text())
        assert saved["adapter"] is None and saved["run_id"] == f"sw-{name}"
        assert row["test_perplexity"] > 1 and row["peak_rss_mb"] > 0 and row["train_tokens"] == 3 * 2 * 32
    assert json.loads((jobs / "sw-r-8" / "config.json").read_text())["lora_r"] == 8
    assert results["rows"]["r-8"]["trainable_parameters"] == 2 * results["rows"]["reference"]["trainable_parameters"]
    # the seeds differ in what they learn, and their spread is the table's noise line
    low, high = sweep.noise(results)
    assert low < high and "Seed noise" in capsys.readouterr().out
    # a finished row is not trained again; --only measures that row again and keeps the others
    stamp = (jobs / "sw-reference" / "metrics.json").stat().st_mtime_ns
    assert main(["--jobs-dir", str(jobs), "sweep", str(path), "--out", str(out), "--only", "reference"]) == 0
    assert (jobs / "sw-reference" / "metrics.json").stat().st_mtime_ns == stamp
    again = json.loads(out.read_text())
    assert again["rows"] == results["rows"] and again["base_perplexity"] == results["base_perplexity"]


@pytest.mark.parametrize("rows, extra, message", [
    ({"x": {"lora_rank": 8}}, {}, "unknown field(s) 'lora_rank'"),
    ({"x": {"run_id": "other"}}, {}, "not run_id, adapter"),
    ({"x": {"adapter": "coq"}}, {}, "not run_id, adapter"),
    ({"bad name/..": {}}, {}, "is not a valid run_id"),
    ({}, {}, "non-empty mapping `rows`"),
    ({"x": {}}, {"test_blocks": 0}, "test_blocks must be an integer"),
    ({"x": {}}, {"grid": 1}, "unknown keys ['grid']"),
])
def test_bad_sweep_files_are_refused_before_anything_trains(tmp_path, rows, extra, message):
    with pytest.raises(ConfigError) as err:
        sweep.load(write_sweep(tmp_path, rows, **extra))
    assert message in str(err.value)


def test_an_unknown_only_row_is_named(tiny_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIGC_MODEL_STORE", str(tiny_store))
    path = write_sweep(tmp_path, {"reference": {}})
    assert main(["--jobs-dir", str(tmp_path / "jobs"), "sweep", str(path), "--only", "nope"]) == 2
    assert "no row(s) ['nope']" in capsys.readouterr().err
    assert not (tmp_path / "jobs").exists()


def test_the_committed_sweep_file_is_valid():
    from conftest import REPO

    spec = sweep.load(REPO / "finetune" / "sweeps" / "methodology.yaml")
    assert "reference" in spec["rows"] and all(r["config"].adapter is None for r in spec["rows"].values())
