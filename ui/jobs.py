"""Fine-tuning from the browser, through the finetune function's own routes (functions/finetune/handler.py).

The form is checked three times before anything is queued, so a mistake is a
message beside its field and never a run that fails later: each field alone
and then the whole form by the same RunConfig class the function uses
(finetune/config.py), the base against the gateway's store, the run id
against the function's runs, and finally the function's `POST /validate`
(the corpus and everything else only it can see). Then the run goes to
`/async-function/finetune` (it may take hours), and its page polls
`GET /runs/<id>` and `/runs/<id>/metrics`. Every call carries the bearer
token of the function (AIGC_UI_FINETUNE_TOKEN).
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, url_for

from finetune.config import ATTENTIONS, METHODS, TASKS, ConfigError, RunConfig, field_of

from . import catalog
from .gateway import GatewayError
from .views import config, gateway

bp = Blueprint("jobs", __name__)
# (name, kind, label, help): the form's fields, in the order shown; others keep RunConfig's defaults
FIELDS = (
    ("run_id", "text", "Run id", "letters, digits, '_', '.', '-'; names the run's folder and page"),
    ("method", "choice", "Method", "lora and dora train low-rank matrices; ia3 scales; prompt learns virtual tokens"),
    ("base", "choice", "Base model", "a text-generation model of the gateway's store"),
    ("adapter", "text", "Adapter name", "publish as base:adapter when done (leave empty to publish later)"),
    ("init_adapter", "text", "Start from adapter", "a published adapter of the base to continue (same rank, alpha)"),
    ("corpus", "text", "Corpus", "'debian' or a folder name under the function's corpora"),
    ("task", "choice", "Task", "text: token blocks of the corpus; proofs: retrieval prompt to proof (seq_len >= 256)"),
    ("steps", "int", "Steps", "optimiser steps"),
    ("batch_size", "int", "Batch", "blocks per step"),
    ("seq_len", "int", "Sequence length", "tokens per block"),
    ("learning_rate", "float", "Learning rate", "e.g. 0.002"),
    ("warmup_steps", "int", "Warm-up steps", "linear warm-up"),
    ("lora_r", "int", "LoRA rank", "lora and dora"),
    ("lora_alpha", "int", "LoRA alpha", "scale = alpha / rank"),
    ("lora_dropout", "float", "LoRA dropout", "0 to below 1"),
    ("num_virtual_tokens", "int", "Virtual tokens", "prompt tuning"),
    ("seed", "int", "Seed", "same seed, same run"),
    ("log_every", "int", "Log every", "steps between loss points"),
    ("eval_every", "int", "Evaluate every", "steps between validation losses (0: at the end)"),
    ("save_every", "int", "Checkpoint every", "steps between checkpoints, for resuming (0: at the end)"),
    # memory and speed levers (finetune/README.md, "Memory and speed levers")
    ("bf16", "bool", "bf16 autocast", "faster where the CPU has bf16 instructions; rounding moves the loss a little"),
    ("loss_chunk", "int", "Loss chunk", "tokens per cross-entropy chunk, so the logits never exist whole (0: off)"),
    ("gradient_checkpointing", "bool", "Checkpointing", "recompute activations in backward: far less memory, slower"),
    ("micro_batch", "int", "Micro-batch", "rows per forward/backward, gradients added up: less memory (0: the batch)"),
    ("attention", "choice", "Attention", "sdpa: fused; eager: keeps every head's T x T matrix (more memory)"),
)
BOOLEANS = ("false", "true")
OPTIONAL = {"adapter", "init_adapter"}
MAX_SUBMITTED = 256  # runs this UI queued and not yet seen by the function, remembered for their pages


# fields shown as a list (the base's list comes from the store)
CHOICES = {"method": METHODS, "task": TASKS, "attention": ATTENTIONS,
           **{name: BOOLEANS for name, kind, *_ in FIELDS if kind == "bool"}}


def _text(value) -> str:
    """A config value as the form shows it: booleans as the select's lower-case options."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@functools.cache
def _default_values() -> tuple[tuple[str, str], ...]:
    d = RunConfig(run_id="x").to_dict()
    return tuple((name, "" if name == "run_id" or name in OPTIONAL else _text(d[name])) for name, *_ in FIELDS)


def _defaults() -> dict[str, str]:
    return dict(_default_values())


def _submitted() -> OrderedDict:
    return current_app.extensions.setdefault("aigc_submitted_runs", OrderedDict())


def _finetune():
    """(gateway client, function name, token); a page that explains when no token is configured."""
    c = config()
    if not c.finetune_token:
        raise GatewayError(503, "the UI has no token for the finetune function: set AIGC_UI_FINETUNE_TOKEN to "
                                "the value of the gateway's finetune-token secret (bash run.sh up does)")
    return gateway(), c.finetune_function, c.finetune_token


def _bases(gw) -> list[str] | None:
    cards = gw.models()
    if cards is None:
        return None
    return [c["name"] for c in cards if c.get("task") == "text-generation" and not c.get("problem")]


def parse_form(form, bases: list[str] | None) -> tuple[dict, dict[str, str]]:
    """The form as a RunConfig dict, and per-field messages for everything wrong with it."""
    raw, errors = {}, {}
    for name, kind, *_ in FIELDS:
        text = form.get(name, "").strip()
        if not text:
            if name == "run_id":
                errors[name] = "give the run an id"
            elif name not in OPTIONAL:
                errors[name] = f"{name} is empty: give a value (default {_defaults()[name]})"
            continue
        if kind == "bool":
            if text.lower() not in BOOLEANS:
                errors[name] = f"{name} must be true or false, got {text!r}"
                continue
            raw[name] = text.lower() == "true"
            continue
        try:
            value = int(text) if kind == "int" else float(text) if kind == "float" else text
        except ValueError:
            errors[name] = f"{name} must be a {'whole number' if kind == 'int' else 'number'}, got {text!r}"
            continue
        if isinstance(value, float) and not math.isfinite(value):
            errors[name] = f"{name} must be a finite number, got {text!r}"
            continue
        raw[name] = value
        try:  # this field alone, so every wrong field gets its message at once, not one per submission
            RunConfig.from_dict({"run_id": "x", name: value} if name != "run_id" else {"run_id": value})
        except ConfigError as exc:
            errors[name] = str(exc)
    if bases is not None and isinstance(raw.get("base"), str) and raw["base"] not in bases and "base" not in errors:
        errors["base"] = (f"unknown base {raw['base']!r}: the gateway's store has "
                          f"{', '.join(bases) or 'no text-generation model'}")
    if not errors:
        try:
            RunConfig.from_dict(raw)
        except ConfigError as exc:
            errors[exc.field or "form"] = str(exc)
    return raw, errors


@bp.get("/jobs")
def index():
    try:
        gw, fn, token = _finetune()
        runs = catalog.runs(gw.call(fn, "GET", "/runs", token=token))
        problem = None
    except GatewayError as exc:
        runs, problem = [], _explain(exc)
    return render_template("jobs.html", runs=runs, problem=problem, function=config().finetune_function)


def _explain(exc: GatewayError) -> str:
    fn = config().finetune_function
    if exc.status == 404 and "not found" in exc.message:
        return f"The gateway has no function {fn!r}: deploy it (Deploy page, or `faas-cli deploy --filter {fn}`)."
    if exc.status == 401:
        return (f"{fn} refused the UI's token: AIGC_UI_FINETUNE_TOKEN must hold the value of the gateway's "
                "finetune-token secret.")
    return exc.message


@bp.route("/jobs/new", methods=["GET", "POST"])
def new():
    gw = gateway()
    bases = _bases(gw)
    values = _defaults() if request.method == "GET" else {k: request.form.get(k, "") for k, *_ in FIELDS}
    if request.method == "GET" and request.args.get("from"):
        values.update(_copied(request.args["from"]))
    errors: dict[str, str] = {}
    if request.method == "POST":
        raw, errors = parse_form(request.form, bases)
        if not errors:
            errors = _submit(raw)
            if not errors:
                flash(f"Run {raw['run_id']} queued on {config().finetune_function}.", "ok")
                return redirect(url_for(".run", run_id=raw["run_id"]))
    page = render_template("job_new.html", fields=FIELDS, values=values, errors=errors, choices=CHOICES,
                           bases=bases or [], defaults=_defaults())
    return page, 400 if errors else 200


def _copied(run_id: str) -> dict[str, str]:
    """A finished run's config as form values, for "train again with changes"."""
    try:
        gw, fn, token = _finetune()
        cfg = gw.call(fn, "GET", f"/runs/{_run_id(run_id)}", token=token).get("config") or {}
    except (GatewayError, AttributeError):
        return {}
    return {name: _text(cfg[name]) for name, *_ in FIELDS if cfg.get(name) is not None and name != "run_id"}


def _submit(raw: dict) -> dict[str, str]:
    gw, fn, token = _finetune()
    try:
        if any(r["id"] == raw["run_id"] for r in catalog.runs(gw.call(fn, "GET", "/runs", token=token))):
            return {"run_id": f"a run {raw['run_id']!r} exists: choose another id (or resume it from its page)"}
        gw.call(fn, "POST", "/validate", raw, token=token)
        call_id = gw.call_async(fn, "/", raw, token=token)
    except GatewayError as exc:
        if exc.status == 400:
            message = exc.message.split(": ", 1)[-1]
            return {field_of(message) or "form": message}
        raise
    submitted = _submitted()
    submitted[raw["run_id"]] = {"call_id": call_id, "at": time.time()}
    while len(submitted) > MAX_SUBMITTED:
        submitted.popitem(last=False)
    return {}


def _run_id(run_id: str) -> str:
    if not catalog.RUN_ID.match(run_id):
        raise GatewayError(400, f"{run_id!r} is not a run id")
    return run_id


def _status(run_id: str) -> dict:
    """The run as its page shows it; a run this UI queued that the function has not started yet is 'queued'."""
    gw, fn, token = _finetune()
    try:
        status = gw.call(fn, "GET", f"/runs/{_run_id(run_id)}", token=token)
    except GatewayError as exc:
        queued = _submitted().get(run_id)
        if exc.status != 404 or not queued:
            raise
        return dict(catalog.run_summary({"state": "queued", "message": "queued at the gateway; the function "
                                         "starts it when a replica is free"}, run_id), points=[], final=None,
                    config={}, eta=None, call_id=queued["call_id"])
    rows = gw.call(fn, "GET", f"/runs/{run_id}/metrics", token=token).get("points")
    run = catalog.run_summary(status, run_id)
    run.update(points=catalog.loss_points(rows), final=status.get("final"), config=status.get("config") or {},
               eta=_eta(run, rows))
    return run


def _eta(run: dict, rows) -> float | None:
    """Seconds left, from the training seconds per step logged so far."""
    timed = [r for r in rows or [] if isinstance(r, dict) and isinstance(r.get("train_seconds"), (int, float))]
    if run["state"] != "running" or not timed or not run["total"] or not timed[-1].get("step"):
        return None
    last = timed[-1]
    return max(0.0, (run["total"] - last["step"]) * last["train_seconds"] / last["step"])


@bp.get("/jobs/<run_id>")
def run(run_id):
    status = _status(run_id)
    return render_template("job.html", run=status, final=catalog.flatten(status["final"]))


@bp.get("/api/jobs/<run_id>")
def api_run(run_id):
    return jsonify(_status(run_id))


@bp.post("/jobs/<run_id>/cancel")
def cancel(run_id):
    gw, fn, token = _finetune()
    gw.call(fn, "POST", f"/runs/{_run_id(run_id)}/cancel", token=token)
    flash(f"Asked {run_id} to stop at its next step (it saves a checkpoint first).", "ok")
    return redirect(url_for(".run", run_id=run_id))


@bp.post("/jobs/<run_id>/resume")
def resume(run_id):
    gw, fn, token = _finetune()
    status = gw.call(fn, "GET", f"/runs/{_run_id(run_id)}", token=token)
    if status.get("state") not in ("cancelled", "failed") or not status.get("config"):
        raise GatewayError(400, f"run {run_id} is {status.get('state')}: only a cancelled or failed run resumes")
    gw.call_async(fn, "/", status["config"], token=token)  # the same config resumes from the checkpoint
    flash(f"Run {run_id} queued again; it goes on from its last checkpoint.", "ok")
    return redirect(url_for(".run", run_id=run_id))


@bp.post("/jobs/<run_id>/publish")
def publish(run_id):
    gw, fn, token = _finetune()
    adapter = request.form.get("adapter", "").strip()
    try:
        answer = gw.call(fn, "POST", f"/runs/{_run_id(run_id)}/publish", {"adapter": adapter} if adapter else {},
                         token=token)
    except GatewayError as exc:
        if exc.status == 400:
            exc.field = "adapter"  # a wrong or taken name: shown beside the name box
        raise
    flash(f"Published: text-generate serves {answer.get('served_as', adapter)} from its next request.", "ok")
    return redirect(url_for(".run", run_id=run_id))
