"""Fuzz the gateway and the function runtime with schemathesis, from their OpenAPI descriptions.

    python bench/fuzz.py                          # a short fixed-seed run of every target
    python bench/fuzz.py --max-examples 10000     # the long run (README's table)

Targets: the gateway (OpenFaaS's own spec, with basic auth, against `aigc up`
serving a small echo function) and real function instances started as
processes: image-classify (`probes`, `oip`, `image` operations of
docs/runtime-openapi.yaml), embed (`probes`, `oip`, `embeddings`) and
text-generate (`probes`, `oip`, `text`, with generation capped at 2 tokens so
valid requests stay cheap). Each instance's spec names the models it serves as
the valid model names, so valid cases reach the model (2xx) and invalid ones
still try other names. The check is schemathesis' `not_a_server_error`:
whatever it sends, no 5xx. A followed log stream (`follow=true`) is left out:
it lasts as long as its client, by design. Prints, per target and operation,
the cases sent, the 2xx and 5xx answers and the requests that got no answer.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .. import runner, stack
from .gateway import REPO, LocalGateway, free_port, write_echo_stack

GATEWAY_SPEC = REPO.parent / "shared" / "spec" / "openfaas-gateway-openapi.yml"
RUNTIME_SPEC = REPO / "docs" / "runtime-openapi.yaml"
PHASES = "examples,coverage,fuzzing,stateful"
FUNCTIONS = {"image-classify": ("probes", "oip", "image"), "embed": ("probes", "oip", "embeddings"),
             "text-generate": ("probes", "oip", "text")}


def schemathesis(spec: Path, url: str, report: Path, max_examples: int, seed: int, workers: int,
                 extra: list[str], phases: str = PHASES) -> float:
    """One `st run`; returns its seconds. Its findings are read from the NDJSON report."""
    args = [str(Path(sys.executable).parent / "st"), "run", str(spec), "--url", url, "--checks", "not_a_server_error",
            "--max-examples", str(max_examples), "--seed", str(seed), "--workers", str(workers),
            "--report", "ndjson", "--report-ndjson-path", str(report), "--warnings", "off",
            # past any function's exec_timeout (below): a slow answer is an answer, a 504 is one too
            "--request-timeout", "60", "--phases", phases,
            # no example database: a fixed seed then means the same cases on every machine, and hypothesis'
            # Pareto optimisation over stored examples (which ran for minutes per case on text-generate's OIP
            # bodies, sending nothing) stays off
            "--generation-database", "none", *extra]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="aigc.bench.fuzz_hooks")
    started = time.monotonic()
    # in the report's folder: schemathesis keeps a cache where it runs, which must not land in the checkout
    subprocess.run(args, env=env, cwd=report.parent, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=False)
    return time.monotonic() - started


def summarize(report: Path) -> dict[str, dict[str, int]]:
    """Per operation: cases sent, 2xx and 5xx answers, check failures, and requests without an answer."""
    rows: dict[str, dict[str, int]] = collections.defaultdict(lambda: collections.Counter())
    for line in report.read_text().splitlines():
        event = json.loads(line)
        if "ScenarioFinished" in event:
            recorder = event["ScenarioFinished"]["recorder"]
            row = rows[recorder["label"]]
            for interaction in (recorder.get("interactions") or {}).values():
                row["cases"] += 1
                status = (interaction.get("response") or {}).get("status_code")
                if status is None:
                    row["no answer"] += 1
                elif status >= 500:
                    row["5xx"] += 1
                elif status < 300:
                    row["2xx"] += 1  # the case got past validation to the model
            for checks in (recorder.get("checks") or {}).values():
                row["failed checks"] += sum(1 for c in checks if c.get("status") == "failure")
        elif "NonFatalError" in event:
            error = event["NonFatalError"]
            rows[error.get("label") or "(run)"][_error_kind(error.get("value", {}).get("type", ""))] += 1
    return {label: dict(row) for label, row in rows.items()}


def _error_kind(error_type: str) -> str:
    """An error schemathesis reported instead of a case's answer: the server's fault or the fuzzer's own."""
    if error_type == "FlakyFailure":
        return "flaky"  # hypothesis' replay of a case gave another result than its first run: nothing to show
    if any(word in error_type for word in ("Timeout", "Connection", "Disconnected", "Protocol", "Chunked")):
        return "no answer"
    # an exception inside the fuzzer while it built a case (e.g. CPython's "AST constructor recursion depth
    # mismatch" from a deeply nested generated value): no request was sent, so it says nothing of the server
    return "fuzzer errors"


def run_gateway(work: Path, args) -> dict:
    gw = LocalGateway(write_echo_stack(work / "stack.yml"), work / "gateway.log", state_dir=work / "state")
    try:
        gw.client.wait_for("echo", lambda s: s["availableReplicas"] >= 1, 60, "the echo replica")
        report = work / "gateway.ndjson"
        seconds = schemathesis(args.gateway_spec, gw.url, report, args.max_examples, args.seed, args.workers,
                               ["--auth", f"admin:{gw.client.password}"], args.phases)
        return {"seconds": seconds, "operations": summarize(report)}
    finally:
        gw.stop()


def served_names(url: str, fn: stack.Function) -> list[str]:
    """The names an instance serves: its OpenAI model list where it has one, else the stack's MODEL_NAME."""
    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=10) as answer:
            return [m["id"] for m in json.load(answer)["data"]]
    except urllib.error.HTTPError:
        return [fn.env()["MODEL_NAME"]]


def served_spec(names: list[str], out: Path) -> Path:
    """The runtime's spec with the instance's model names as the valid values of every model name (the path
    parameter and the OpenAI bodies' `model`). With a bare string, nearly every generated case named an
    unknown model and stopped at the 404, before any body was read; now positive cases reach the model's
    decoding and negative ones still send other names."""
    spec = yaml.safe_load(RUNTIME_SPEC.read_text())
    served = {"type": "string", "enum": names}
    spec["components"]["parameters"]["Model"]["schema"] = dict(served)

    def visit(node):
        if isinstance(node, dict):
            if node.get("properties", {}).get("model") == {"type": "string"}:
                node["properties"]["model"] = dict(served)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for item in spec["paths"].values():
        visit([operation.get("requestBody") for operation in item.values() if isinstance(operation, dict)])
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def run_function(name: str, work: Path, args) -> dict:
    fn = stack.load(REPO / "stack.yml").functions[name]
    env = {"AIGC_MAX_TOKENS": "2", "exec_timeout": "20s"} if name == "text-generate" else {}
    log = open(work / f"{name}.log", "wb")
    inst = runner.start(fn, REPO, free_port(), extra_env=env, build_dir=work / "build" / name, stdout=log,
                        stderr=subprocess.STDOUT)
    try:
        inst.wait_ready(180)
        report = work / f"{name}.ndjson"
        tags = [a for t in FUNCTIONS[name] for a in ("--include-tag", t)]
        spec = served_spec(served_names(inst.url, fn), work / f"{name}-openapi.yaml")
        seconds = schemathesis(spec, inst.url, report, args.max_examples, args.seed, args.workers, tags, args.phases)
        return {"seconds": seconds, "operations": summarize(report)}
    finally:
        inst.stop()
        log.close()


def table(results: dict[str, dict]) -> str:
    keys = ("cases", "2xx", "5xx", "no answer", "flaky", "fuzzer errors")
    lines = ["| target | operation | cases | 2xx | 5xx | no answer | flaky replays | fuzzer errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for target, result in results.items():
        ops = result["operations"]
        for label, row in sorted(ops.items()):
            lines.append(f"| {target} | `{label}` | " + " | ".join(str(row.get(k, 0)) for k in keys) + " |")
        lines.append(f"| {target} | all ({result['seconds']:.0f} s) | "
                     + " | ".join(str(sum(r.get(k, 0) for r in ops.values())) for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-examples", type=int, default=20, help="cases per operation and phase (schemathesis -n)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--targets", default="gateway," + ",".join(FUNCTIONS), help="comma-separated")
    p.add_argument("--phases", default=PHASES, help="schemathesis phases, comma-separated (stateful sequences "
                                                     "take longest: leave it out for per-operation figures)")
    p.add_argument("--out", type=Path, help="keep reports here (default: a temporary folder)")
    p.add_argument("--gateway-spec", type=Path, default=GATEWAY_SPEC,
                   help="OpenFaaS's gateway OpenAPI file (openfaas/faas api-docs/swagger.yml); default: beside "
                        "the repository in this project's CI")
    args = p.parse_args(argv)
    if "gateway" in args.targets.split(",") and not args.gateway_spec.is_file():
        p.error(f"{args.gateway_spec} not found: give --gateway-spec, or leave 'gateway' out of --targets")
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="aigc-fuzz-")
    work = args.out or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for target in args.targets.split(","):
        print(f"fuzzing {target} …", flush=True)
        results[target] = run_gateway(work, args) if target == "gateway" else run_function(target, work, args)
    print(table(results))
    (work / "summary.json").write_text(json.dumps(results, indent=1))
    bad = sum(r.get("5xx", 0) + r.get("no answer", 0) for res in results.values() for r in res["operations"].values())
    if tmp:
        tmp.cleanup()
    return 1 if bad else 0
