"""Fine-tuning on a tiny random Llama: configs, training, checkpoints and resume, outputs, the corpus and coqc.

The tiny model (2 layers, 32 wide, the real GPT-2 tokenizer) trains a step in
a few milliseconds; the corpus is a handful of Coq files written here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import pytest

from aigc.runtime import adapters, store
from conftest import REPO
from finetune import coq, data, jobs
from finetune.__main__ import main as cli
from finetune.jobs import RunDir
from finetune.config import ConfigError, RunConfig
from finetune.train import Cancelled, Run

BASE = "tiny-llama"
COQ_FILES = {
    "nat_facts.v": "Require Import Arith.\n\nLemma add_0_r' : forall n : nat, n + 0 = n.\nProof.\n"
                   "  intro n. induction n; simpl; auto.\nQed.\n",
    "bools.v": "Lemma negb_involutive' : forall b : bool, negb (negb b) = b.\nProof.\n  destruct b; reflexivity.\nQed.\n",
    "lists.v": "Require Import List.\nImport ListNotations.\n\nLemma app_nil_r' : forall (A : Type) (l : list A), "
               "l ++ [] = l.\nProof.\n  intros A l. induction l; simpl; congruence.\nQed.\n",
    "logic.v": "Lemma and_swap : forall P Q : Prop, P /\\ Q -> Q /\\ P.\nProof.\n  intros P Q [p q]. split; "
               "assumption.\nQed.\n",
}


def _gpt2_tokenizer_json():
    spec = importlib.util.spec_from_file_location("wasm_fixtures", REPO / "tests" / "wasm" / "wasm_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prepare_gpt2()


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("finetune-store")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(_gpt2_tokenizer_json()), eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>")
    torch.manual_seed(0)
    # heads of 16: ONNX Runtime's fused attention (text-generate's engine) takes multiples of 16
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256, tie_word_embeddings=True))
    model.save_pretrained(root / BASE)
    tokenizer.save_pretrained(root / BASE)
    store.write_manifest(root / BASE, {"name": BASE, "task": "text-generation", "format": "safetensors",
                                       "note": "random weights, for tests"})
    from aigc.models import smollm2_onnx

    onnx_dir = root / f"{BASE}-onnx"  # what text-generate serves (its ONNX engine)
    onnx_dir.mkdir()
    store.write_manifest(onnx_dir, dict(smollm2_onnx.convert(root / BASE, onnx_dir, BASE), name=f"{BASE}-onnx",
                                        note="random weights, for tests"))
    return root


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in COQ_FILES.items():
        (folder / name).write_text(text * 3)
    return folder


def config(corpus, **changes) -> RunConfig:
    fields = dict(run_id="t1", base=BASE, corpus=str(corpus), steps=6, batch_size=2, seq_len=32,
                  learning_rate=0.01, warmup_steps=1, eval_every=3, eval_blocks=2, save_every=3, log_every=1,
                  threads=1)
    fields.update(changes)
    return RunConfig.from_dict(fields)


def run(cfg, tiny_store, tmp_path, jobs_dir=None, **kwargs) -> Run:
    return Run(cfg, jobs_dir or tmp_path / "jobs", store_root=tiny_store, data_dir=tmp_path / "no-data",
               progress=False, **kwargs)


# --- configs and bad input: errors before anything loads ------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"method": "qlora"}, "method 'qlora' is unknown"),
    ({"lora_rank": 8}, "unknown field(s) 'lora_rank'"),
    ({"steps": "ten"}, "steps must be int"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"learning_rate": 3}, "learning_rate must be in (0, 1)"),
    ({"run_id": "../etc"}, "run_id '../etc'"),
    ({"adapter": "Bad Name"}, "adapter name 'Bad Name'"),
    ({"method": "full", "adapter": "x"}, "full fine-tuning makes a whole model"),
    ({"micro_batch": 3}, "micro_batch must be 0 (the whole batch) to batch_size (2)"),
])
def test_invalid_configs_name_the_field(changes, message, tmp_path):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, **changes)
    assert message in str(err.value)


def test_a_corpus_without_coq_files_fails_before_the_model_loads(tiny_store, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not coq")
    import finetune.train as train_module
    monkeypatch.setattr(train_module, "load_base", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(data.DataError, match="contains no .v files"):
        run(config(empty), tiny_store, tmp_path)
    with pytest.raises(data.DataError, match="is not a directory"):
        run(config(tmp_path / "missing"), tiny_store, tmp_path)


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_id: x\nmethod: magic\n")
    assert cli(["--jobs-dir", str(tmp_path), "train", str(bad)]) == 2
    assert "error: method 'magic' is unknown" in capsys.readouterr().err
    bad.write_text("run_id: [unclosed\n")
    assert cli(["--jobs-dir", str(tmp_path), "train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_the_example_configs_are_valid():
    configs = [RunConfig.from_file(p) for p in sorted((REPO / "finetune" / "configs").glob("*.yaml"))]
    assert len(configs) >= 4 and len({c.run_id for c in configs}) == len(configs)
    assert {c.method for c in configs} >= {"lora", "dora", "ia3", "full"}


# --- training, outputs, reload, resume, cancel -------------------------------------------------------------

def test_train_save_reload_gives_the_same_loss(tiny_store, tmp_path, corpus):
    import torch
    from peft import PeftModel

    from finetune import blocks
    from finetune.train import EVAL_SEED, load_base, mean_loss

    cfg = config(corpus, adapter="coq")
    metrics = run(cfg, tiny_store, tmp_path).train()
    out = tmp_path / "jobs" / "t1"
    assert json.loads((out / "status.json").read_text())["state"] == "succeeded"
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert 0 < metrics["trainable_percent"] < 100 and metrics["eval_loss"] < metrics["initial_eval_loss"]
    lines = jobs.RunDir(out).metrics()
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]

    model, tokenizer, _ = load_base(BASE, tiny_store)
    reloaded = PeftModel.from_pretrained(model, str(out / "adapter"))
    val = blocks.make_blocks(tokenizer, blocks.files_for(str(corpus), tmp_path, "validation"), cfg.seq_len,
                             cfg.eval_blocks, EVAL_SEED)
    assert mean_loss(reloaded, val.split(cfg.batch_size)) == pytest.approx(metrics["eval_loss"], abs=1e-6)
    with reloaded.disable_adapter():
        assert mean_loss(reloaded, val.split(cfg.batch_size)) == pytest.approx(metrics["initial_eval_loss"],
                                                                              abs=1e-6)
    # published: a store entry with the card, served as tiny-llama:coq
    stored = adapters.open_adapter(BASE, "coq", tiny_store)
    assert stored.verify() == [] and "README.md" in stored.manifest["files"]
    assert stored.manifest["training"]["steps"] == 6
    assert torch.load  # torch stays importable after training (no global state broken)


@pytest.mark.parametrize("levers", [{"gradient_checkpointing": True}, {"loss_chunk": 7},
                                    {"gradient_checkpointing": True, "loss_chunk": 16}, {"attention": "eager"},
                                    {"malloc_mmap_threshold": 1 << 20}, {"micro_batch": 1, "lora_dropout": 0.0}],
                         ids=["checkpointing", "chunked-loss", "both", "eager-attention", "mmap-threshold",
                              "micro-batch"])
def test_memory_levers_change_nothing_in_the_loss(levers, tiny_store, tmp_path, corpus):
    """Same seed, 5 steps (dropout on): every training and validation loss within 1e-4 of the plain run.
    Micro-batches draw their own dropout masks, so that lever is compared with dropout off in both runs."""
    levers = dict(levers)
    dropout = levers.pop("lora_dropout", 0.1)

    def losses(run_id, **changes):
        cfg = config(corpus, run_id=run_id, steps=5, eval_every=5, lora_dropout=dropout, **changes)
        run(cfg, tiny_store, tmp_path).train()
        return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in RunDir(tmp_path / "jobs" / run_id).metrics()]

    plain, levered = losses("plain"), losses("levered", **levers)
    assert [s for s, *_ in plain] == [s for s, *_ in levered] == [0, 1, 2, 3, 4, 5]
    for (step, loss, val), (_, loss2, val2) in zip(plain, levered):
        for a, b in ((loss, loss2), (val, val2)):
            assert (a is None) == (b is None) and (a is None or abs(a - b) < 1e-4), (step, a, b)


def test_proof_examples_are_the_evaluation_prompt_with_the_proof_as_the_only_target(tiny_store, tmp_path, corpus):
    from finetune import examples
    from finetune.train import load_base

    _, tokenizer, _ = load_base(BASE, tiny_store)
    lib = examples.library(str(corpus), tmp_path)
    assert lib.files == ["lists.v", "logic.v", "nat_facts.v"]  # bools.v is held out (the 1st of every 10 files)
    ids, labels = examples.make_examples(tokenizer, str(corpus), tmp_path, "train", lib, 256, 6, seed=0)
    proofs_by_statement = {l.statement: l.proof for text in COQ_FILES.values() for l in coq.lemmas(text)}
    for row_ids, row_labels in zip(ids, labels):
        targets = row_labels != examples.IGNORE
        first = int(targets.nonzero()[0])
        assert (row_labels[targets] == row_ids[targets]).all() and targets[first:int(targets.nonzero()[-1]) + 1].all()
        prompt, target = tokenizer.decode(row_ids[:first]), tokenizer.decode(row_ids[row_labels != examples.IGNORE])
        statement = prompt.rsplit("\n\n", 1)[1].removesuffix("\nProof.\n")
        assert target == f"{proofs_by_statement[statement]}\nQed.<|endoftext|>"
    ids, labels = examples.make_examples(tokenizer, str(corpus), tmp_path, "train", lib, 2048, 2, seed=0)
    trimmed_ids, trimmed_labels = examples.trim(ids, labels)
    assert trimmed_ids.shape[1] < 2048 and (trimmed_labels[:, -1] != examples.IGNORE).any()


@pytest.mark.parametrize("levers", [{"loss_chunk": 16, "gradient_checkpointing": True}, {"bf16": False},
                                    {"micro_batch": 1, "loss_chunk": 16, "lora_dropout": 0.0}],
                         ids=["chunked-and-checkpointed", "plain-again", "micro-batch"])
def test_proof_task_trains_on_proofs_and_its_levers_change_nothing(levers, tiny_store, tmp_path, corpus):
    levers = dict(levers)
    dropout = levers.pop("lora_dropout", 0.05)  # micro-batches draw their own dropout masks: compared without

    def losses(run_id, **changes):
        cfg = config(corpus, run_id=run_id, task="proofs", seq_len=256, steps=4, eval_every=2, lora_dropout=dropout,
                     **changes)
        metrics = run(cfg, tiny_store, tmp_path).train()
        assert metrics["eval_loss"] < metrics["initial_eval_loss"]
        return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in RunDir(tmp_path / "jobs" / run_id).metrics()]

    plain, levered = losses("plain"), losses("levered", **levers)
    for (step, loss, val), (_, loss2, val2) in zip(plain, levered):
        for a, b in ((loss, loss2), (val, val2)):
            assert (a is None) == (b is None) and (a is None or abs(a - b) < 1e-4), (step, a, b)
    with pytest.raises(ConfigError, match="seq_len must be >= 256 for task 'proofs'"):
        config(corpus, task="proofs", seq_len=128)
    with pytest.raises(ConfigError, match="task 'qa' is unknown"):
        config(corpus, task="qa")


def test_resume_continues_from_the_checkpoint(tiny_store, tmp_path, corpus, monkeypatch):
    import torch
    from safetensors.torch import load_file

    cfg = config(corpus)
    run(cfg, tiny_store, tmp_path, jobs_dir=tmp_path / "straight").train()

    # the second run is interrupted in step 5 (after the checkpoint of step 3), then started again
    real_clip, calls = torch.nn.utils.clip_grad_norm_, []

    def interrupt_in_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", interrupt_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tiny_store, tmp_path, jobs_dir=tmp_path / "resumed").train()
    resumed_dir = jobs.RunDir(tmp_path / "resumed" / "t1")
    assert resumed_dir.status()["state"] == "cancelled"
    checkpoint = resumed_dir.path / "checkpoint" / "state.pt"
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 3
    del state["config"]["micro_batch"]  # as a checkpoint written before that field existed
    torch.save(state, checkpoint)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    run(cfg, tiny_store, tmp_path, jobs_dir=tmp_path / "resumed").train()

    straight = [r for r in jobs.RunDir(tmp_path / "straight" / "t1").metrics() if "loss" in r]
    resumed = [r for r in resumed_dir.metrics() if "loss" in r]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in straight], abs=1e-6)
    a = load_file(tmp_path / "straight" / "t1" / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed_dir.path / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_changed_config_does_not_resume_a_run(tiny_store, tmp_path, corpus):
    run(config(corpus, steps=3), tiny_store, tmp_path).train()
    with pytest.raises(ConfigError, match="exists with another config"):
        run(config(corpus, steps=4), tiny_store, tmp_path)


def test_cancel_stops_at_a_step_boundary_and_the_run_resumes(tiny_store, tmp_path, corpus):
    cfg = config(corpus)
    r = run(cfg, tiny_store, tmp_path)
    r.dir.request_cancel()
    with pytest.raises(Cancelled):
        r.train()
    assert r.dir.status()["state"] == "cancelled"
    r.dir.clear_cancel()
    assert r.train()["steps"] == 6 and r.dir.status()["state"] == "succeeded"


def test_the_train_command_resumes_after_the_cancel_command(tiny_store, tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("AIGC_MODEL_STORE", str(tiny_store))
    cfg_file = tmp_path / "run.json"
    cfg_file.write_text(json.dumps(config(corpus).to_dict()))
    jobs_dir = tmp_path / "jobs"
    (jobs_dir / "t1").mkdir(parents=True)
    assert cli(["--jobs-dir", str(jobs_dir), "cancel", "t1"]) == 0  # asked before the command below starts
    assert cli(["--jobs-dir", str(jobs_dir), "--data-dir", str(tmp_path), "train", "--no-progress",
                str(cfg_file)]) == 0
    assert RunDir(jobs_dir / "t1").status()["state"] == "succeeded"


def test_a_run_starts_from_a_published_adapter(tiny_store, tmp_path, corpus, monkeypatch):
    first = run(config(corpus, run_id="text", adapter="init-source"), tiny_store, tmp_path).train()
    # the second run's step-0 validation loss (same validation blocks) is the first run's last: same weights
    second = run(config(corpus, run_id="task", steps=2, init_adapter="init-source"), tiny_store, tmp_path)
    second.train()
    assert second.dir.metrics()[0] == {"step": 0, "eval_loss": pytest.approx(first["eval_loss"], abs=1e-6)}
    fresh = run(config(corpus, run_id="fresh", steps=2), tiny_store, tmp_path)
    fresh.train()
    assert fresh.dir.metrics()[0]["eval_loss"] == pytest.approx(first["initial_eval_loss"], abs=1e-6)
    narrower = run(config(corpus, run_id="narrow", steps=2, init_adapter="init-source", target_modules=["q_proj"]),
                   tiny_store, tmp_path)
    with pytest.raises(ConfigError, match="init_adapter 'init-source' targets other modules than this run"):
        narrower.train()

    # what cannot be a start is refused before the model loads, naming the field
    import finetune.train as train_module
    monkeypatch.setattr(train_module, "load_base", lambda *a: pytest.fail("the model was loaded"))
    for changes, message in [({"init_adapter": "missing"}, "init_adapter: model 'tiny-llama:missing' does not exist"),
                             ({"init_adapter": "init-source", "lora_r": 8}, "its r 4 (the run has 8)"),
                             ({"init_adapter": "init-source", "method": "dora"}, "use_dora False (the run has True)")]:
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            run(config(corpus, run_id="bad", **changes), tiny_store, tmp_path)
        assert err.value.field == "init_adapter"
    with pytest.raises(ConfigError, match="init_adapter: a published adapter is LoRA weights"):
        config(corpus, method="ia3", init_adapter="init-source")
    with pytest.raises(ConfigError, match="init_adapter: adapter name '../x'"):
        config(corpus, init_adapter="../x")


@pytest.mark.parametrize("method", ["dora", "ia3", "prompt", "full"])
def test_other_methods_train_and_count_their_parameters(method, tiny_store, tmp_path, corpus):
    metrics = run(config(corpus, method=method, steps=2, eval_every=0), tiny_store, tmp_path).train()
    out = tmp_path / "jobs" / "t1"
    assert metrics["method"] == method and metrics["eval_loss"] is not None
    if method == "full":
        assert metrics["trainable_parameters"] == metrics["base_parameters"]
        assert (out / "model" / "model.safetensors").is_file()
    else:
        assert metrics["trainable_parameters"] < metrics["base_parameters"] / 10
        assert json.loads((out / "adapter" / "adapter_config.json").read_text())["peft_type"] in (
            "LORA", "IA3", "PROMPT_TUNING")


# --- the corpus and the split ----------------------------------------------------------------------------

def test_split_is_by_path_hash_and_duplicates_are_dropped(tmp_path, monkeypatch):
    debs = tmp_path / "debs"
    for package, files in {"libcoq-a": {"x/One.v": "Lemma a : True.\n", "x/Two.v": "Lemma b : True. \n"},
                           "libcoq-b": {"y/Same.v": "Lemma a : True.\r\n", "y/Three.v": "Lemma c : True.\n"}}.items():
        for rel, text in files.items():
            (debs / package / rel).parent.mkdir(parents=True, exist_ok=True)
            (debs / package / rel).write_text(text)
    monkeypatch.setattr(data, "PACKAGES", ("libcoq-a", "libcoq-b"))
    files, dropped = data.collect(debs)
    assert dropped == 1 and [f.key for f in files] == ["libcoq-a/x/One.v", "libcoq-a/x/Two.v", "libcoq-b/y/Three.v"]
    assert all(f.split == data.split_of(f.key) for f in files)
    assert data.digest(files) == data.digest(list(reversed(files)))
    shares = [data.split_of(f"libcoq-z/f{i}.v") for i in range(4000)]
    assert 0.87 < shares.count("train") / 4000 < 0.93 and 0.035 < shares.count("test") / 4000 < 0.065


@pytest.mark.slow
def test_the_data_command_reproduces_the_published_split(tmp_path):
    """Downloads the 50 packages from Debian (176 MB) and rebuilds the split: same digest as the data card."""
    import re

    card = (REPO / "finetune" / "DATA_CARD.md").read_text()
    published = re.search(r"split_digest\*\*: `([0-9a-f]{64})`", card)[1]
    assert cli(["--data-dir", str(tmp_path), "data", "--card", str(tmp_path / "card.md")]) == 0
    assert (tmp_path / "card.md").read_text() == card  # versions, counts and licences too
    summary = data.load_split(tmp_path)
    assert summary["split_digest"] == published
    assert summary["files"] == {"train": 2999, "validation": 174, "test": 191}
    assert all(data.split_of(e["key"]) == e["split"] for e in summary["entries"])


# --- coqc --------------------------------------------------------------------------------------------------

def test_lemmas_are_cut_out_with_their_proofs():
    text = COQ_FILES["nat_facts.v"] + COQ_FILES["bools.v"]
    found = coq.lemmas(text)
    assert [(l.name, l.proof) for l in found] == [("add_0_r'", "intro n. induction n; simpl; auto."),
                                                  ("negb_involutive'", "destruct b; reflexivity.")]
    assert text[found[1].offset:].startswith("Lemma negb_involutive'")
    assert coq.open_blocks("Section S.\nModule M.\nEnd M.\nModule N := Nat.\nSection T.\n") == ["S", "T"]
    assert coq.proof_of("  auto.\nQed.\nLemma next") == "auto."
    assert coq.proof_of("  auto. auto.") is None


@pytest.mark.skipif(shutil.which("coqc") is None, reason="needs coqc (run.sh installs Debian's coq)")
def test_coqc_accepts_a_proof_and_rejects_wrong_or_cheating_ones():
    context = "Require Import Arith.\nSection S.\nVariable k : nat.\n"
    statement = "Lemma plus_k : k + 0 = k."
    assert coq.check(context, statement, "auto with arith.").ok
    wrong = coq.check(context, statement, "reflexivity.")
    assert not wrong.ok and "Error" in wrong.reason
    assert coq.check(context, statement, "admit.").reason == "forbidden"
    assert coq.check(context, statement, "Admitted.").reason == "forbidden"


# --- as a serverless job: the finetune function through the local gateway ----------------------------------

def test_finetune_function_runs_async_reports_progress_cancels_and_text_generate_serves_the_adapter(
        tiny_store, tmp_path, corpus):
    import time

    import requests

    from gateway_helpers import CallbackServer, GatewayProcess, write_stack

    own_store = tmp_path / "store"  # the session store holds adapters that other tests published
    for entry in (BASE, f"{BASE}-onnx"):  # the checkpoint fine-tuning starts from; text-generate's build of it
        shutil.copytree(tiny_store / entry, own_store / entry)
    data_dir = tmp_path / "data"
    shutil.copytree(corpus, data_dir / "corpora" / "coq-sample")
    (data_dir / "corpora" / "empty").mkdir()
    env = {"AIGC_MODEL_STORE": str(own_store), "AIGC_JOBS_DIR": str(tmp_path / "jobs"), "AIGC_THREADS": "4",
           "exec_timeout": "10m"}
    stack_file = write_stack(tmp_path / "stack.yml", {
        "finetune": {"handler": str(REPO / "functions" / "finetune"), "secrets": ["finetune-token"],
                     "environment": dict(env, AIGC_AUTH_TOKEN_SECRET="finetune-token",
                                         AIGC_FINETUNE_DATA=str(data_dir))},
        "text-generate": {"handler": str(REPO / "functions" / "text-generate"),
                          "environment": dict(env, MODEL_NAME=BASE, exec_timeout="60s")},
    })
    callbacks = CallbackServer()
    token = "t0ken-for-this-test"
    secrets_dir = tmp_path / "state" / "secrets"
    secrets_dir.mkdir(parents=True)
    (secrets_dir / "finetune-token").write_text(token)
    gw = GatewayProcess(stack_file, tmp_path / "state")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        fn = gw.url + "/function/"
        anonymous = requests.post(fn + "finetune", json={"run_id": "x"}, timeout=120)
        assert anonymous.status_code == 401 and "finetune-token" in anonymous.json()["error"]  # finding 2
        assert requests.get(fn + "finetune/runs", timeout=30).status_code == 401
        assert requests.get(fn + "finetune/runs", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        models = requests.get(fn + "text-generate/v1/models", timeout=120).json()
        assert [m["id"] for m in models["data"]] == [BASE]  # running before the adapter exists

        bad = requests.post(fn + "finetune", json={"run_id": "x", "method": "magic"}, headers=auth, timeout=120)
        assert bad.status_code == 400 and "method 'magic' is unknown" in bad.json()["error"]
        nocoq = requests.post(fn + "finetune", json={"run_id": "x", "corpus": "empty"}, headers=auth, timeout=60)
        assert nocoq.status_code == 400 and "no .v files" in nocoq.json()["error"]
        nobase = requests.post(fn + "finetune", json={"run_id": "x", "corpus": "coq-sample"}, headers=auth,
                               timeout=60)
        assert nobase.status_code == 400 and "'smollm2-135m' is not in the store" in nobase.json()["error"]
        # finding 3: a path is not a corpus, whether or not it exists; a base cannot leave the store
        for path in (str(corpus), "/etc", "/nonexistent", "../corpora/coq-sample"):
            resp = requests.post(fn + "finetune", json={"run_id": "x", "corpus": path}, headers=auth, timeout=60)
            assert resp.status_code == 400 and "not a path" in resp.json()["error"], path
        escape = requests.post(fn + "finetune", json={"run_id": "x", "base": f"../other/{BASE}"}, headers=auth,
                               timeout=60)
        assert escape.status_code == 400 and "store entry name" in escape.json()["error"]
        huge = requests.post(fn + "finetune", json={"run_id": "x", "base": BASE, "steps": 10**12}, headers=auth,
                             timeout=60)
        assert huge.status_code == 400 and "steps must be <=" in huge.json()["error"]

        good = dict(config(corpus, run_id="meow-run", adapter="meow", steps=30).to_dict(), corpus="coq-sample")
        long = dict(good, run_id="long-run", adapter="long", steps=5000, save_every=0, eval_every=0)
        ids = []
        for body in (good, long):
            resp = requests.post(gw.url + "/async-function/finetune", json=body,
                                 headers={"X-Callback-Url": callbacks.url, **auth}, timeout=30)
            assert resp.status_code == 202
            ids.append(resp.headers["X-Call-Id"])
        deadline = time.monotonic() + 120
        while True:  # the long run queues behind the first, then trains: either way it reports where it is
            status = requests.get(fn + "finetune/runs/long-run", headers=auth, timeout=30)
            if status.status_code == 200 and status.json()["state"] == "running" and status.json()["step"] > 0:
                break
            assert time.monotonic() < deadline, f"long-run never reported progress: {status.text}"
            time.sleep(0.3)
        assert requests.post(fn + "finetune/runs/long-run/cancel", headers=auth, timeout=30).status_code == 202

        received = {h["X-Call-Id"]: (h, json.loads(b)) for h, b in callbacks.wait(2, 180)}
        headers, result = received[ids[0]]
        assert headers["X-Function-Status"] == "200" and result["state"] == "succeeded"
        headers, result = received[ids[1]]
        assert headers["X-Function-Status"] == "200" and result["state"] == "cancelled"
        assert requests.get(fn + "finetune/runs/long-run", headers=auth, timeout=30).json()["state"] == "cancelled"
        runs = requests.get(fn + "finetune/runs", headers=auth, timeout=30).json()["runs"]
        listed = {r["run_id"]: r["state"] for r in runs}
        assert listed == {"meow-run": "succeeded", "long-run": "cancelled"}

        # no redeploy: the same text-generate instance lists and serves the new adapter
        models = requests.get(fn + "text-generate/v1/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == [BASE, f"{BASE}:meow"]
        done = requests.post(fn + "text-generate/v1/completions", timeout=60,
                             json={"model": f"{BASE}:meow", "prompt": "Lemma", "max_tokens": 4})
        assert done.status_code == 200 and done.json()["model"] == f"{BASE}:meow"
        assert gw.status("text-generate")["invocationCount"] >= 3
        # finding 2: another run cannot silently replace what text-generate serves
        other = dict(good, run_id="other-run")
        taken = requests.post(fn + "finetune", json=other, headers=auth, timeout=60)
        assert taken.status_code == 400 and "already published" in taken.json()["error"]
    finally:
        gw.stop()
        callbacks.close()


def test_the_published_adapter_is_small_and_publishes_from_the_results_folder(tmp_path):
    """finetune/results/smollm2-coq-lora: the run behind finetune/README.md's numbers, publishable as is."""
    from safetensors import safe_open

    from finetune.publish import publish_run

    results = REPO / "finetune" / "results"
    metrics = json.loads((results / "smollm2-coq-lora" / "metrics.json").read_text())
    with safe_open(results / "smollm2-coq-lora" / "adapter" / "adapter_model.safetensors", "pt") as f:
        counted = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    assert counted == metrics["trainable_parameters"] < 0.01 * metrics["base_parameters"]
    published = publish_run("smollm2-coq-lora", "coq", jobs_dir=results, store_root=tmp_path)
    assert published["served_as"] == "smollm2-135m:coq"
    stored = adapters.open_adapter("smollm2-135m", "coq", tmp_path)
    assert stored.verify() == [] and stored.manifest["training"]["trainable_parameters"] == counted
    evaluation = json.loads((results / "published.json").read_text())["models"]
    assert evaluation["smollm2-coq-lora"]["perplexity"] <= 0.7 * evaluation["smollm2-135m"]["perplexity"]
    # run.sh's setup publishes it once: a second run leaves the entry as it is
    before = (tmp_path / "smollm2-135m--coq" / "manifest.json").stat().st_mtime_ns
    again = publish_run("smollm2-coq-lora", jobs_dir=results, store_root=tmp_path, if_missing=True)
    assert again["published"] is False and again["served_as"] == "smollm2-135m:coq"
    assert (tmp_path / "smollm2-135m--coq" / "manifest.json").stat().st_mtime_ns == before


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_the_model_card_names_the_data_its_licences_and_the_command(tmp_path):
    from finetune import card

    (tmp_path / "split.json").write_text(json.dumps({"split_digest": "abc", "packages": {
        "libcoq-stdlib": {"version": "8.16", "files": 3, "licence": {"main": "LGPL-2.1"}},
        "libcoq-hott": {"version": "1.0", "files": 2, "licence": {"main": "BSD-2-clause"}}}}))
    metrics = {"trainable_parameters": 10, "eval_loss": 1.5}
    text = card.model_card(RunConfig(run_id="r", task="text"), metrics, data_dir=tmp_path)
    assert "| libcoq-hott | 1.0 | 2 | BSD-2-clause |" in text and "| libcoq-stdlib | 8.16 | 3 | LGPL-2.1 |" in text
    assert "python -m finetune data" in text and "python -m finetune train run.json" in text
    assert "split_digest `abc`" in text and "| eval_loss | 1.5 |" in text
    proofs_card = card.model_card(RunConfig(run_id="r", task="proofs", seq_len=1024), metrics, data_dir=tmp_path)
    assert "libcoq-hott" not in proofs_card and "libcoq-stdlib" in proofs_card and "retrieval prompt" in proofs_card
    assert "## Data and licences" not in card.model_card(RunConfig(run_id="r", corpus="/x"), metrics, data_dir=tmp_path)
