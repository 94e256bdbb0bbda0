"""`aigc tune FUNCTION --slo-p95 MS`: per-instance capacity under a latency objective → scaling target.

The function is held at one replica (redeployed with scale min = max = 1, no
scale to zero) and loaded by closed-loop locust users, so the user count is the
in-flight concurrency one instance serves. Levels 1, 2, 4, … are measured until
p95 exceeds the SLO (or a request fails), then the gap between the last level
that met it and the first that did not is bisected. The highest level that met
the SLO becomes `com.openfaas.scale.target` in stack.yml (a round-trip edit), and the
Knative manifests are regenerated from it (`autoscaling.knative.dev/target`).

The max_inflight rule: the target never exceeds the function's `max_inflight`
(when set, > 0), and levels above it are not tried. max_inflight is the hard cap:
an instance answers 429 past it (Knative: containerConcurrency, also a hard
limit), so a target above it describes load an instance is never given; the
autoscaler would add replicas only once requests are already queueing. The
tuner lowers the target to fit under max_inflight and never raises max_inflight,
which is a safety limit (memory, exec_timeout) that latency alone cannot justify.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import knative, stack
from . import locustrun, report
from .stackedit import write_label
from .suites import command, gateway, overridden, pairs

TARGET = "com.openfaas.scale.target"
PIN = {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1", "com.openfaas.scale.zero": "false"}


def choose_target(best: int, max_inflight: int) -> int:
    return min(best, max_inflight) if max_inflight > 0 else best


def search(measure, slo_ms: float, limit: int) -> tuple[int, list[dict]]:
    """Highest level in 1..limit whose measurement meets the SLO (0 if none), and every trial.

    `measure(level)` returns {"p95": ms, "failures": n, ...}. Doubling finds a
    bracket; bisection narrows it, assuming p95 rises with concurrency (a level
    that misses between two that meet it would be noise, and is not retried).
    """
    trials: list[dict] = []

    def ok(level: int) -> bool:
        result = dict(measure(level), level=level)
        result["ok"] = bool(result.get("n")) and result["failures"] == 0 and result["p95"] <= slo_ms
        trials.append(result)
        return result["ok"]

    good, bad, level = 0, None, 1
    while level <= limit:
        if ok(level):
            good = level
            level *= 2
        else:
            bad = level
            break
    if bad is None:
        if good < limit and ok(limit):  # the last doubling overshot the limit: try the limit itself
            return limit, trials
        bad = limit + 1 if good == limit else limit
    while good and bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good, trials


def _measure(client, fn: str, level: int, args, out: Path) -> dict:
    outputs = locustrun.Outputs(out / f"c{level}")
    rc = locustrun.run([locustrun.locustfile_for(fn, args.locustfile)], client.url, outputs, function=fn,
                       user=client.user, password=client.password,
                       options=["-u", str(level), "-r", str(level), "-t", f"{args.step_seconds:g}s",
                                "--stop-timeout", "30", "--poll-interval", "0.5"],
                       timeout=args.step_seconds + args.timeout, extra=args.locust_args)
    samples = report.calls(report.read_samples(outputs.samples))
    if samples:  # drop the first second: users starting, connections opening
        start = min(s["time"] for s in samples) + min(1.0, args.step_seconds / 5)
        samples = [s for s in samples if s["time"] >= start]
    d = report.distribution([s["ms"] for s in samples if s["ok"]])
    replicas = max((r for _, r, _ in report.read_replicas(outputs.replicas, fn)), default=None)
    result = {"n": d["n"], "p95": d.get("p95"), "p50": d.get("p50"), "failures": sum(not s["ok"] for s in samples),
              "rps": len(samples) / max(1e-9, args.step_seconds - 1), "replicas_max": replicas, "locust_exit": rc}
    if replicas is not None and replicas > 1:
        raise RuntimeError(f"{fn} ran on {replicas} replicas at concurrency {level}: the gateway did not hold it "
                           "at one, so this would not measure one instance")
    print(f"  concurrency {level:3}: p50 {result['p50'] or 0:7.1f} ms  p95 {result['p95'] or 0:7.1f} ms  "
          f"{result['rps']:6.1f} req/s  failures {result['failures']}", flush=True)
    return result


def write(stack_path: Path, knative_dir: Path, fn: str, target: int) -> list[Path]:
    """Set the target label in stack.yml, then regenerate knative/ from it; the files changed."""
    changed = [stack_path] if write_label(stack_path, fn, TARGET, str(target)) else []
    for path, manifest in knative.generate(stack.load(stack_path), knative_dir).items():
        if not path.is_file() or path.read_text() != manifest:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(manifest)
            changed.append(path)
    return changed


def main(args) -> int:
    fn = args.function
    stack_path = Path(args.file)
    fn_spec = stack.load(stack_path).find(fn)
    max_inflight = int(fn_spec.env().get("max_inflight", "0") or 0)
    limit = max_inflight if max_inflight > 0 else args.max_concurrency
    out = Path(args.out or f"artifacts/bench/tune-{fn}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"tuning {fn}: p95 <= {args.slo_p95:g} ms, concurrency 1..{limit}"
          f"{' (max_inflight)' if max_inflight > 0 else ''}, {args.step_seconds:g} s per level", flush=True)
    with gateway(args, out) as (client, local):
        client.status(fn)
        with overridden(client, fn, {**pairs(args.label, "--label"), **PIN}, pairs(args.env, "--env"), local):
            client.scale(fn, 1)
            client.wait_for(fn, lambda s: s.get("availableReplicas", 0) == 1 and s.get("replicas") == 1, 180,
                            "exactly one ready replica")
            best, trials = search(lambda level: _measure(client, fn, level, args, out), args.slo_p95, limit)
    result = {"function": fn, "slo_p95_ms": args.slo_p95, "max_inflight": max_inflight, "limit": limit,
              "best": best, "trials": trials, "seconds": round(time.monotonic() - started, 1),
              "command": command(args)}
    if best == 0:
        result["target"] = None
        (out / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{fn} misses p95 <= {args.slo_p95:g} ms even with one request in flight "
              f"(p95 {trials[0]['p95'] or 0:.0f} ms); nothing written")
        return 1
    target = choose_target(best, max_inflight)
    result["target"] = target
    (out / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{fn}: one instance meets p95 <= {args.slo_p95:g} ms up to {best} requests in flight"
          + (f"; capped at max_inflight {max_inflight}" if target < best else "") + f" -> target {target}")
    if args.dry_run:
        return 0
    kdir = Path(args.knative_dir) if args.knative_dir else stack_path.resolve().parent / "knative"
    for path in write(stack_path, kdir, fn, target):
        print(f"wrote {path}")
    return 0
