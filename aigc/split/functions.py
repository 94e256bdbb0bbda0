"""Stage functions and their pipeline for a split model (`aigc split MODEL --stages N --functions`).

Per stage, a handler folder on the aigc-onnx template whose handler only names the stage's store entry
(aigc.runtime.onnx_stage serves any of them) and a stack.yml entry baking that entry; plus the pipeline:
the function that served the whole model (image-classify, embed), again, under `<function>-split-<N>`,
with AIGC_ENGINE=chain and AIGC_CHAIN naming the stages (aigc.runtime.chain), so it keeps that function's
API while the model runs in the stages. stack.yml is edited through ruamel's round trip (comments and
layout kept) and the new functions' Knative Services are rendered by aigc.knative, as
`aigc knative generate` would. Nothing is written when any of it would replace something different
(without --force).
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path

import yaml

from .. import knative, stack
from ..bench import stackedit
from ..runtime.chain import GATEWAY_ENV
from ..runtime.config import parse_size
from .partition import Plan, stage_name

TEMPLATE = "aigc-onnx"
BUILD_ARG = "AIGC_MODELS"
# a replica's own RSS before any weights (gunicorn, Flask, numpy, ONNX Runtime), then ORT's copies of the
# weights, its arena and the activations: measured stage replicas stay well under this (docs/split.md)
BASE_MIB = 192
HEADROOM = 4
STEP_MIB = 32
MAX_BODY = "64Mi"  # carried activations are bigger than a request to the whole model (MiniLM: batch x seq x 384)
DEFAULT_LABELS = {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "4", "com.openfaas.scale.target": "4",
                  "com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "10m"}
GATEWAY_VALUE = f"${{{GATEWAY_ENV}:-http://127.0.0.1:8080}}"  # faas-cli and `aigc up` expand it at deploy
HANDLER = '''"""Stage {index} of {of} of {parent}, written by `aigc split` (docs/split.md)."""

from aigc.runtime.onnx_stage import StageModel

model = StageModel("{entry}")
'''
# run at image build (TEST_ENABLED=true) with the baked entry; load() checks the graph against the manifest
HANDLER_TEST = '''"""Stage {index} of {of} of {parent}: the baked entry loads, with the tensors its manifest lists."""

from aigc.runtime import testing
from function import handler


@testing.needs_model(handler.model.name)
def test_the_stage_loads():
    model = testing.loaded(handler.model)
    assert model.inputs and model.outputs
'''


def memory_limit(memory_bytes: int) -> str:
    mib = BASE_MIB + HEADROOM * memory_bytes / 2**20
    return f"{math.ceil(mib / STEP_MIB) * STEP_MIB}Mi"


def function_name(entry: str) -> str:
    """The entry's name when it is a DNS label (a function's name must be), else a label made from it."""
    if stack._DNS_LABEL.fullmatch(entry):
        return entry
    base, _, suffix = entry.lower().rpartition("--")
    cleaned = re.sub(r"[^a-z0-9-]+", "-", base).strip("-") or "model"
    return f"{cleaned[:62 - len(suffix)].rstrip('-')}-{suffix}"


def _source(functions: dict, model: str, wanted: str | None) -> tuple[str, dict] | None:
    """The function whose API the pipeline keeps: `wanted`, or the one aigc-onnx function baking `model`
    that is not itself a pipeline."""
    if wanted:
        if wanted not in functions:
            raise ValueError(f"--pipeline-of {wanted!r}: no such function in the stack")
        return wanted, functions[wanted]
    found = [(name, spec) for name, spec in functions.items() if isinstance(spec, dict)
             and spec.get("lang") == TEMPLATE
             and model in str((spec.get("build_args") or {}).get(BUILD_ARG, "")).replace(",", " ").split()
             and (spec.get("environment") or {}).get("AIGC_ENGINE", "onnx") != "chain"]
    if len(found) > 1:
        raise ValueError(f"several functions serve {model}: {', '.join(n for n, _ in found)}; choose the one "
                         "whose API the pipeline keeps with --pipeline-of")
    return found[0] if found else None


def _stage_spec(entry: str, handler: str, memory_bytes: int, source: dict | None) -> dict:
    source = source or {}
    env = source.get("environment") or {}
    limit = memory_limit(memory_bytes)
    spec = {"lang": TEMPLATE, "handler": handler, "image": f"${{REGISTRY:-localhost}}/{function_name(entry)}:0.1.0",
            "build_args": {BUILD_ARG: entry},
            "environment": {"exec_timeout": str(env.get("exec_timeout", "30s")),
                            "max_inflight": str(env.get("max_inflight", "8")), "AIGC_MAX_BODY_SIZE": MAX_BODY},
            "labels": {**DEFAULT_LABELS, **{k: str(v) for k, v in (source.get("labels") or {}).items()}}}
    requests = {k: str(v) for k, v in (source.get("requests") or {}).items()}
    if "memory" in requests and parse_size(requests["memory"]) > parse_size(limit):
        requests["memory"] = limit
    if requests:
        spec["requests"] = requests
    cpu = (source.get("limits") or {}).get("cpu")
    spec["limits"] = {"memory": limit, **({"cpu": str(cpu)} if cpu else {})}
    spec["annotations"] = {"com.openfaas.health.http.path": "/_/ready"}
    return spec


def write(plan: Plan, args) -> list[str]:
    """Handler folders, stack.yml entries and Knative Services for `plan`'s stages and its pipeline; the
    lines to print."""
    stack_path = Path(args.stack)
    stack_dir = stack_path.resolve().parent
    raw = yaml.safe_load(stack_path.read_text()) or {}
    functions = raw.get("functions") if isinstance(raw, dict) else None
    if not isinstance(functions, dict):
        raise ValueError(f"{stack_path}: not a stack.yml (no 'functions:' mapping)")
    n = len(plan.stages)
    source = _source(functions, plan.model, args.pipeline_of)
    specs, handlers, chain = {}, {}, []
    for s in plan.stages:
        entry = stage_name(plan.model, s.index, n)
        name = function_name(entry)
        folder = Path(args.functions_dir) / name
        for file, text in (("handler.py", HANDLER), ("handler_test.py", HANDLER_TEST)):
            handlers[folder / file] = text.format(index=s.index, of=n, parent=plan.model, entry=entry)
        rel = os.path.relpath(folder.resolve(), stack_dir)
        specs[name] = _stage_spec(entry, rel if rel.startswith(".") else f"./{rel}", s.memory,
                                  source[1] if source else None)
        chain.append(name if name == entry else f"{name}={entry}")
    lines = []
    pipeline = f"{source[0]}-split-{n}" if source else None
    if source:
        spec = copy.deepcopy(source[1])
        spec["environment"] = {**(spec.get("environment") or {}), "AIGC_ENGINE": "chain",
                               "AIGC_CHAIN": ",".join(chain), GATEWAY_ENV: GATEWAY_VALUE}
        specs[pipeline] = spec
    else:
        lines.append(f"no {TEMPLATE} function in {stack_path} bakes {plan.model}: stages only, no pipeline "
                     "(--pipeline-of names one)")
    comment = f"{plan.model} in {n} stages and its pipeline: `aigc split {plan.model} --stages {n} --functions`"
    stackedit.set_functions(stack_path.read_text(), specs, args.force, comment)  # refuses before anything is written
    clash = [str(p) for p, text in handlers.items() if p.exists() and p.read_text() != text]
    if clash and not args.force:
        raise ValueError(f"{', '.join(clash)} already exist(s) with other content; --force replaces them")
    for path, text in handlers.items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            lines.append(f"wrote {path}")
    changed = stackedit.write_functions(stack_path, specs, args.force, comment)
    lines.append(f"{stack_path}: {'added' if changed else 'already has'} {', '.join(specs)}")
    kdir = Path(args.knative_dir) if args.knative_dir else stack_dir / "knative"
    st = stack.load(stack_path)
    written = 0
    for name in specs:
        fn = st.functions[name]
        for delivery in knative.DELIVERIES:
            path, text = knative.path_of(kdir, fn, delivery), knative.render(fn, delivery)
            if not path.is_file() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                written += 1
    lines.append(f"wrote {written} Knative Service file(s) under {kdir}/")
    if source:
        lines.append(f"serve them with `aigc up -f {stack_path}`; the pipeline {pipeline} answers as {source[0]} does")
    return lines
