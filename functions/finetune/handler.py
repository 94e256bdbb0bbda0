"""finetune: PEFT training runs as a function, to be called through /async-function/finetune.

    POST /                     a run config (JSON, the fields of finetune/config.py) -> trains, publishes
    POST /validate             the same config checks, answered at once: 400 naming the field, or 200
    GET  /runs                 every run's status
    GET  /runs/<id>            one run's status.json, its config, its last metrics line and (once it has
                               finished) its final metrics
    GET  /runs/<id>/metrics    every logged step ({"step", "loss", ["eval_loss"], ...}), for a loss curve
    POST /runs/<id>/cancel     stop the run at its next step boundary (it checkpoints first)
    POST /runs/<id>/publish    {"adapter": NAME} (optional: the config's) -> the finished run's adapter into
                               the store, as <base>:<adapter>; an adapter another run published is refused

A config error, an unknown method or a corpus without `.v` files is a 400
before anything loads. Runs go one at a time (a second waits for the first:
nothing accepted is dropped); the status and cancel routes answer meanwhile,
on the runtime's other threads. Progress goes to $AIGC_JOBS_DIR/<id>/, which
the UI's jobs pages read. A finished adapter is written to the model store,
so a text-generate function serves `<base>:<adapter>` on its next request.
A cancelled run answers 200 with state "cancelled" (the call did what was
asked); posting the same config again resumes it from its checkpoint.

Training publishes what text-generate serves, so stack.yml deploys this function
with AIGC_AUTH_TOKEN_SECRET: every call needs `Authorization: Bearer <the
finetune-token secret>`. A request's `corpus` is "debian" or the name of a
folder under $AIGC_FINETUNE_DATA/corpora/, never a path; size fields have upper
bounds (finetune/config.py), and an adapter published by another run is not
replaced.
"""

import logging
import re
import threading

from aigc.runtime import adapters, errors
from .finetune import jobs
from .finetune.config import RUN_ID, ConfigError, RunConfig, confined_corpus, default_data_dir, default_jobs_dir
from .finetune.data import DataError

log = logging.getLogger("aigc.runtime")
_one_at_a_time = threading.Lock()
_RUN_ROUTE = re.compile(rf"/runs/(?P<id>{RUN_ID.pattern})(?P<action>/cancel|/metrics|/publish)?")
MAX_POINTS = 10_000  # the most logged steps one answer carries (the latest ones)


def handle(event, context):
    path = event.path.rstrip("/") or "/"
    if (event.method, path) == ("POST", "/"):
        return _train(event.json())
    if (event.method, path) == ("POST", "/validate"):
        cfg, _ = _prepare(event.json())  # what POST / refuses before training, for a form before it queues
        return {"valid": True, "run_id": cfg.run_id, "resumes": (default_jobs_dir() / cfg.run_id).is_dir()}
    if (event.method, path) == ("GET", "/runs"):
        root = default_jobs_dir()
        runs = sorted(p.name for p in root.iterdir() if (p / "status.json").is_file()) if root.is_dir() else []
        return {"runs": [dict(jobs.RunDir(root / r).status(), run_id=r) for r in runs]}
    m = _RUN_ROUTE.fullmatch(path)
    if m:
        run = jobs.RunDir(default_jobs_dir() / m["id"])
        if not (run.path / "status.json").is_file():
            raise errors.ModelNotFound(f"no run {m['id']!r}")
        route = (event.method, m["action"])
        if route == ("POST", "/cancel"):
            if run.status().get("state") in ("succeeded", "failed", "cancelled"):
                raise errors.InvalidInput(f"run {m['id']!r} is {run.status()['state']}: nothing to cancel")
            run.request_cancel()
            return {"statusCode": 202, "body": {"run_id": m["id"], "cancel": "requested"}}
        if route == ("GET", None):
            rows = run.metrics()
            return dict(run.status(), run_id=m["id"], config=_as_submitted(run.config()),
                        last=rows[-1] if rows else None, final=run.final_metrics())
        if route == ("GET", "/metrics"):
            return {"run_id": m["id"], "points": run.metrics()[-MAX_POINTS:]}
        if route == ("POST", "/publish"):
            return _publish(m["id"], event.json() if event.body else {})
    raise errors.ModelNotFound(f"no route {event.method} {event.path}; use POST / with a run config, GET /runs, "
                               "GET /runs/<id>[/metrics] or POST /runs/<id>/cancel|publish")


def _prepare(body):
    from .finetune.train import Run

    try:
        cfg = RunConfig.from_dict(body)
        cfg = cfg.replace(corpus=confined_corpus(cfg.corpus, default_data_dir() / "corpora"))
        if cfg.adapter:
            adapters.check_publishable(cfg.base, cfg.adapter, cfg.run_id)  # before hours of training, not after
        run = Run(cfg, progress=False)  # checks the corpus and any earlier run of this id; loads nothing
    except (ConfigError, DataError, TypeError) as exc:
        raise errors.InvalidInput(str(exc)) from None
    return cfg, run


def _train(body):
    from .finetune.train import Cancelled

    cfg, run = _prepare(body)
    run.dir.clear_cancel()  # a cancel is for the submission it was aimed at, not for a resubmission
    if _one_at_a_time.locked():
        run.dir.set_status("queued", step=0, total=cfg.steps, base=cfg.base, adapter=cfg.adapter,
                           message="waiting for the run before it")
    with _one_at_a_time:
        try:
            metrics = run.train()
        except Cancelled as exc:
            return {"run_id": cfg.run_id, "state": "cancelled", "message": str(exc)}
        except ConfigError as exc:  # e.g. a base that is not in the store, found on loading
            raise errors.InvalidInput(str(exc)) from None
    return {"run_id": cfg.run_id, "state": "succeeded", "metrics": metrics}


def _as_submitted(config: dict) -> dict:
    """The config as a caller sends it again to resume: the corpus by its name, not the function's path."""
    corpus = config.get("corpus")
    if isinstance(corpus, str) and "/" in corpus:
        config = dict(config, corpus=corpus.rstrip("/").rsplit("/", 1)[-1])
    return config


def _publish(run_id: str, body):
    from .finetune.publish import publish_run

    if not isinstance(body, dict) or set(body) - {"adapter"}:
        raise errors.InvalidInput('send {"adapter": "<name>"} (or nothing, for the name in the run\'s config)')
    adapter = body.get("adapter")
    try:
        if adapter is not None:
            adapters.check_name(adapter)
        # the store refuses an adapter name another run published (adapters.write_adapter): no silent swap
        return publish_run(run_id, adapter)
    except ConfigError as exc:
        raise errors.InvalidInput(str(exc)) from None
