"""finetune's own tests, run by the image's test stage (TEST_ENABLED=true): routes, config errors, and a
two-step LoRA run on the baked base model and a few Coq lines, so the image is known to train."""

import json

import pytest

from aigc.runtime import errors, testing
from function import handler

BASE = "smollm2-135m"
COQ = ("Lemma and_swap : forall P Q : Prop, P /\\ Q -> Q /\\ P.\n"
       "Proof.\n  intros P Q [p q]. split; assumption.\nQed.\n")


@pytest.fixture(autouse=True)
def jobs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_JOBS_DIR", str(tmp_path / "jobs"))
    return tmp_path / "jobs"


def post(path: str, body) -> dict:
    return handler.handle(testing.request(path, json.dumps(body)), None)


def test_no_runs_yet():
    assert handler.handle(testing.request("/runs", method="GET"), None) == {"runs": []}


@pytest.mark.parametrize("body, fragment", [({"run_id": "x", "method": "qlora"}, "method 'qlora'"),
                                            ({"run_id": "../etc"}, "run_id"),
                                            ({"run_id": "x", "steps": "ten"}, "steps"),
                                            ([1, 2], "mapping")])
def test_bad_configs_are_400_before_anything_loads(body, fragment):
    with pytest.raises(errors.InvalidInput, match=fragment):
        post("/", body)


def test_unknown_runs_and_routes_are_404():
    with pytest.raises(errors.ModelNotFound, match="no run"):
        handler.handle(testing.request("/runs/nope", method="GET"), None)
    with pytest.raises(errors.ModelNotFound, match="no route"):
        handler.handle(testing.request("/train"), None)


def test_a_corpus_is_a_name_under_the_functions_corpora_never_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_FINETUNE_DATA", str(tmp_path))
    for path in ("/etc", str(tmp_path), "../x"):
        with pytest.raises(errors.InvalidInput, match="not a path"):
            post("/", {"run_id": "x", "corpus": path})
    with pytest.raises(errors.InvalidInput, match="store entry name"):
        post("/", {"run_id": "x", "base": "../other/" + BASE})


@testing.needs_model(BASE)
def test_two_lora_steps_on_the_baked_base(tmp_path, jobs_dir, monkeypatch):
    monkeypatch.setenv("AIGC_FINETUNE_DATA", str(tmp_path / "data"))
    corpus = tmp_path / "data" / "corpora" / "logic"
    corpus.mkdir(parents=True)
    (corpus / "logic.v").write_text(COQ * 8)
    out = post("/", {"run_id": "image-check", "base": BASE, "corpus": "logic", "steps": 2, "batch_size": 1,
                     "seq_len": 32, "warmup_steps": 0, "eval_every": 0, "eval_blocks": 1, "save_every": 0,
                     "log_every": 1})
    assert out["state"] == "succeeded", out
    assert (jobs_dir / "image-check" / "adapter" / "adapter_model.safetensors").is_file()

    # the routes the UI's run page uses: config as submitted, every metrics line, final metrics, publish
    got = handler.handle(testing.request("/runs/image-check", method="GET"), None)
    assert got["state"] == "succeeded" and got["config"]["corpus"] == "logic" and "eval_loss" in got["final"]
    points = handler.handle(testing.request("/runs/image-check/metrics", method="GET"), None)["points"]
    assert [p["step"] for p in points if "loss" in p] == [1, 2]
    with pytest.raises(errors.InvalidInput, match="no adapter name"):
        handler.handle(testing.request("/runs/image-check/publish", "{}"), None)
    with pytest.raises(errors.InvalidInput, match="adapter name"):
        handler.handle(testing.request("/runs/image-check/publish", '{"adapter": "Bad Name"}'), None)


def test_validate_checks_a_config_without_training(tmp_path, jobs_dir, monkeypatch):
    monkeypatch.setenv("AIGC_FINETUNE_DATA", str(tmp_path))
    with pytest.raises(errors.InvalidInput, match="steps must be >= 1"):
        post("/validate", {"run_id": "v", "steps": 0})
    with pytest.raises(errors.InvalidInput, match="corpus 'nope' is not a folder"):
        post("/validate", {"run_id": "v", "corpus": "nope"})
    assert not jobs_dir.exists()  # nothing was started or written
