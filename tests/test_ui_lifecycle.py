"""The whole lifecycle from the browser, over HTTP only (#21): Playwright in Debian's Chromium.

A gateway keeps its model store, fine-tuning runs, corpora and state in one
folder; the UI runs in a private mount namespace where that folder is an empty
tmpfs, so every page can only show what it reads through the gateway's API and
the functions' routes. In one session: log in, refuse a bad run form field by
field, start a LoRA run on the tiny model, watch it to the end, publish its
adapter, compare base and adapter answers side by side, read the function's
logs, create and delete a secret (bad names and sizes refused at the field),
and see the cron schedule with its last result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import REPO, free_port
from gateway_helpers import ECHO, GatewayProcess
from test_finetune import BASE, COQ_FILES, tiny_store  # noqa: F401  (tiny_store is a fixture)
from test_ui import wait_http
from test_ui_browser import Tab, browser  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.slow
TOKEN = "ui-lifecycle-token"


@pytest.fixture(scope="module")
def world(tiny_store, tmp_path_factory):  # noqa: F811
    """The gateway's folder (`home`: store, jobs, corpora, state) and the gateway serving from it."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    home = tmp / "gateway-home"
    store, jobs, data = home / "store", home / "jobs", home / "data"
    for entry in (BASE, f"{BASE}-onnx"):
        shutil.copytree(tiny_store / entry, store / entry)
    corpus = data / "corpora" / "coq-sample"
    corpus.mkdir(parents=True)
    for name, text in COQ_FILES.items():
        (corpus / name).write_text(text * 3)
    (home / "state" / "secrets").mkdir(parents=True)
    (home / "state" / "secrets" / "finetune-token").write_text(TOKEN)
    env = {"AIGC_MODEL_STORE": str(store), "AIGC_JOBS_DIR": str(jobs), "AIGC_THREADS": "2"}
    functions = {
        "finetune": {"handler": str(REPO / "functions" / "finetune"), "secrets": ["finetune-token"],
                     "environment": dict(env, AIGC_AUTH_TOKEN_SECRET="finetune-token", exec_timeout="10m",
                                         AIGC_FINETUNE_DATA=str(data))},
        "text-generate": {"handler": str(REPO / "functions" / "text-generate"),
                          "environment": dict(env, MODEL_NAME=BASE, exec_timeout="60s")},
        "tick": {"handler": ECHO, "labels": {"com.openfaas.scale.min": "1"},
                 "annotations": {"topic": "cron-function", "schedule": "*/2 * * * * *"}},
    }
    doc = {"version": 1.0, "provider": {"name": "openfaas", "gateway": "http://127.0.0.1:8080"},
           "functions": {name: dict(spec, lang="aigc-onnx", image=f"localhost/{name}:test")
                         for name, spec in functions.items()}}
    stack_file = tmp / "stack.yml"  # beside the hidden folder: the deploy page may read it
    stack_file.write_text(yaml.safe_dump(doc))
    gw = GatewayProcess(stack_file, home / "state", env=env)
    yield gw, home
    gw.stop()


@pytest.fixture(scope="module")
def ui(world, tmp_path_factory):
    gw, home = world
    tmp = tmp_path_factory.mktemp("lifecycle-ui")
    port = free_port()
    # the UI is told where the gateway's folders are, to show that even then it cannot read them
    env = dict(os.environ, AIGC_UI_GATEWAY=gw.url, AIGC_UI_SECRET_KEY="test-" + "k" * 32,
               AIGC_UI_FINETUNE_TOKEN=TOKEN, AIGC_UI_STACK=str(gw.stack), PYTHONUNBUFFERED="1",
               AIGC_MODEL_STORE=str(home / "store"), AIGC_JOBS_DIR=str(home / "jobs"), HOME=str(tmp))
    log = open(tmp / "ui.log", "wb")
    hide = f"mount -t tmpfs -o size=1m aigc-hidden {home} && exec {sys.executable} -m ui.app --port {port}"
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", hide], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, tmp / "ui.log")
    seen_by_ui = Path(f"/proc/{proc.pid}/root") / str(home).lstrip("/")
    assert (home / "store" / BASE).is_dir() and not (seen_by_ui / "store").exists(), \
        "the UI process must not see the gateway's folder"
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def tab(browser, ui, world):  # noqa: F811
    gw, _ = world
    t = Tab(browser, ui).log_in(gw.auth[1])
    yield t
    t.context.close()


def runs_on_the_function(gw) -> list[str]:
    resp = requests.get(gw.url + "/function/finetune/runs", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=120)
    return [r["run_id"] for r in resp.json()["runs"]]


def test_models_come_from_the_gateways_store(tab):
    page = tab.go("/models")
    text = page.inner_text("#models")
    assert BASE in text and f"{BASE}-onnx" in text and "text-generation" in text
    tab.shot("lifecycle-models")
    tab.clean()


def test_a_bad_run_form_is_refused_field_by_field_and_nothing_is_queued(tab, world):
    gw, _ = world
    page = tab.go("/jobs")
    assert "No runs yet" in page.inner_text("#jobs")
    page = tab.go("/jobs/new")
    page.fill("#f-run_id", "bad id!")
    page.fill("#f-steps", "ten")
    page.fill("#f-learning_rate", "3")
    page.fill("#f-lora_r", "0")
    page.click("#run-submit")
    for field, words in (("run_id", "run_id 'bad id!'"), ("steps", "whole number"),
                         ("learning_rate", "(0, 1)"), ("lora_r", ">= 1")):
        assert words in page.inner_text(f"#e-{field}"), field
    assert page.get_attribute("#f-steps", "aria-invalid") == "true"
    assert page.input_value("#f-steps") == "ten"  # what was typed stays, to be corrected
    # an unknown base (a hand-edited form) and a corpus only the function can check
    page.fill("#f-run_id", "ok-id")
    page.fill("#f-steps", "5")
    page.fill("#f-learning_rate", "0.01")
    page.fill("#f-lora_r", "4")
    page.eval_on_selector("#f-base", "s => { s.add(new Option('gpt-9', 'gpt-9')); s.value = 'gpt-9'; }")
    page.click("#run-submit")
    assert "unknown base 'gpt-9'" in page.inner_text("#e-base")
    page.select_option("#f-base", BASE)
    page.fill("#f-corpus", "no-such-corpus")
    page.click("#run-submit")
    assert "no-such-corpus" in page.inner_text("#e-corpus")
    tab.shot("lifecycle-run-form-errors")
    assert runs_on_the_function(gw) == []
    tab.errors.clear()  # the 400 answers are logged by the browser as failed loads


def test_start_watch_publish_and_compare(tab, world):
    gw, _ = world
    page = tab.go("/jobs/new")
    for field, value in {"run_id": "ui-run", "adapter": "", "corpus": "coq-sample", "steps": "300",
                         "batch_size": "2", "seq_len": "32", "learning_rate": "0.01", "warmup_steps": "1",
                         "eval_every": "100", "save_every": "100", "log_every": "5"}.items():
        page.fill(f"#f-{field}", value)
    page.select_option("#f-base", BASE)
    page.click("#run-submit")
    page.wait_for_selector("#job")
    assert "/jobs/ui-run" in page.url
    seen, deadline = set(), time.monotonic() + 300
    while (state := page.inner_text("#job-state")) != "succeeded":
        seen.add((state, page.inner_text("#job-step")))
        assert state not in ("failed", "cancelled", "unknown"), page.inner_text("#job-message")
        assert time.monotonic() < deadline, f"the run did not finish; seen {seen}"
        time.sleep(0.2)
    assert {s for s, _ in seen} & {"queued", "running"}, seen  # it was watched on its way, not only at the end
    tab.shot("lifecycle-run-done")
    assert page.inner_text("#loss-count") == "60"  # a training loss every 5 of 300 steps
    assert page.locator("#chart-loss path").count() >= 2  # loss and eval loss (from step 0)
    assert page.inner_text("#job-base") == BASE
    assert "eval_loss" in page.inner_text("#final-metrics")
    assert page.is_visible("#publish-form") and not page.is_visible("#job-cancel")

    page.fill("#publish-adapter", "Bad Name")
    page.click("#job-publish")
    assert "adapter name 'Bad Name'" in page.inner_text("#e-adapter")  # beside the name box
    page.fill("#publish-adapter", "ui")
    page.click("#job-publish")
    assert f"{BASE}:ui" in page.inner_text(".flash.ok")
    page = tab.go("/models")
    assert f"{BASE}--ui" in page.inner_text("#models")

    page = tab.go("/functions/text-generate/compare")
    boxes = page.locator("input[name=model]")
    assert [boxes.nth(i).get_attribute("value") for i in range(boxes.count())] == [BASE, f"{BASE}:ui"]
    page.fill("#compare-prompt", "Lemma add_comm : forall n m : nat,")
    page.fill("#compare-max", "12")
    page.click("#compare-submit")
    page.locator("section.answer[data-done]").nth(1).wait_for(timeout=120_000)  # both columns finished
    columns = page.locator("section.answer")
    notes = [columns.nth(i).locator("p").inner_text() for i in range(2)]
    assert [columns.nth(i).get_attribute("data-done") for i in range(2)] == ["ok", "ok"], notes
    answers = {columns.nth(i).get_attribute("data-model"): columns.nth(i).locator("pre").inner_text()
               for i in range(2)}
    assert all(answers.values()) and answers[BASE] != answers[f"{BASE}:ui"], answers
    tab.shot("lifecycle-compare")
    tab.clean()


def test_a_taken_run_id_is_refused_and_a_run_cancels_and_resumes(tab, world):
    gw, _ = world
    page = tab.go("/jobs/new?from=ui-run")  # "train again with changes": the form starts from that config
    assert page.input_value("#f-corpus") == "coq-sample" and page.input_value("#f-steps") == "300"
    page.fill("#f-run_id", "ui-run")
    page.click("#run-submit")
    assert "a run 'ui-run' exists" in page.inner_text("#e-run_id")
    assert runs_on_the_function(gw) == ["ui-run"]  # nothing was queued
    tab.errors.clear()

    page.fill("#f-run_id", "long-run")
    page.fill("#f-steps", "20000")
    page.fill("#f-save_every", "0")
    page.fill("#f-eval_every", "0")
    page.click("#run-submit")
    page.wait_for_selector("#job-step:has-text('step')")
    deadline = time.monotonic() + 120
    while not (page.inner_text("#job-state") == "running" and int(page.inner_text("#job-step").split()[1]) > 0):
        assert time.monotonic() < deadline, page.inner_text("#job-message")
        time.sleep(0.2)
    assert "left" in page.inner_text("#job-eta")
    page.click("#job-cancel")
    page.wait_for_selector("#job-state:has-text('cancelled')", timeout=60_000)
    stopped = int(page.inner_text("#job-step").split()[1])
    page.click("#job-resume")
    assert "goes on from its last checkpoint" in page.inner_text(".flash.ok")
    page.wait_for_selector("#job-state:has-text('running')", timeout=60_000)
    deadline = time.monotonic() + 120  # the resumed run loads the model again, as slow as the first start
    while int(page.inner_text("#job-step").split()[1]) <= stopped:  # on from where it stopped, not from 0
        assert time.monotonic() < deadline, page.inner_text("#job-message")
        time.sleep(0.2)
    tab.shot("lifecycle-run-resumed")
    page.click("#job-cancel")
    page.wait_for_selector("#job-state:has-text('cancelled')", timeout=60_000)
    tab.clean()


def test_logs_secrets_and_schedules(tab, world):
    gw, _ = world
    page = tab.go("/functions/text-generate/logs")
    try:
        page.wait_for_selector("#logs-output:not(:empty)", timeout=60_000)
    except Exception:
        raise AssertionError(f"no log lines; the page says {page.inner_text('#logs-state')!r}") from None
    lines = page.inner_text("#logs-output").splitlines()
    word = "worker"  # gunicorn: "Booting worker with pid"
    assert any(word in line for line in lines), lines[:5]
    page.fill("#logs-filter", word)
    page.uncheck("#logs-follow")
    page.click("#logs-apply")
    page.wait_for_selector("#logs-output[data-state=done]")
    filtered = page.inner_text("#logs-output").splitlines()
    assert filtered and all(word in line.lower() for line in filtered)
    tab.shot("lifecycle-logs")

    page = tab.go("/secrets")
    assert "finetune-token" in page.inner_text("#secrets")
    page.fill("#secret-name", "Bad_Name")
    page.fill("#secret-value", "x")
    page.click("#secret-save")
    assert "lowercase letters" in page.inner_text("#e-name")
    page.fill("#secret-name", "too-big")
    page.fill("#secret-value", "x" * ((1 << 20) + 1))
    page.click("#secret-save")
    assert "at most 1048576 bytes" in page.inner_text("#e-value")
    page.fill("#secret-name", "ui-secret")
    page.fill("#secret-value", "s3cret value")
    page.click("#secret-save")
    assert "ui-secret" in page.inner_text("#secrets") and "s3cret" not in page.content()
    names = [s["name"] for s in requests.get(gw.url + "/system/secrets", auth=gw.auth, timeout=30).json()]
    assert "ui-secret" in names and "too-big" not in names
    page.click("button[aria-label='delete ui-secret']")
    assert "ui-secret" not in page.inner_text("#secrets")
    tab.errors.clear()  # the refused forms' 400s

    deadline = time.monotonic() + 30
    while True:  # the tick function runs every 2 s: its last result shows once one has run
        page = tab.go("/schedules")
        row = page.inner_text("#schedules")
        if "tick" in row and "200" in row:
            break
        assert time.monotonic() < deadline, row
        time.sleep(1)
    assert "*/2 * * * * *" in row
    tab.shot("lifecycle-schedules")
    tab.clean()
