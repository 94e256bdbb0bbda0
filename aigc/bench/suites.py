"""`aigc bench coldstart|scaling FUNCTION`: run a locust suite against a gateway, then write the report.

Without `--gateway` a local gateway (`aigc up`) is started from the stack file
on a free port with a throwaway state dir, and stopped afterwards. Label or
environment overrides (`--target`, `--down-window`, `--label`, `--env`) are
applied by redeploying the function through the API (PUT /system/functions),
never by editing stack.yml; on a remote gateway the old deployment is put back
at the end.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from pathlib import Path

from . import locustrun, report
from .gateway import GatewayClient, LocalGateway

LABEL = "com.openfaas.scale."


def password(args) -> str:
    if args.password:
        return args.password
    if args.password_file:
        return Path(args.password_file).read_text().strip()
    return os.environ.get("AIGC_GATEWAY_PASSWORD", "")


def pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


@contextlib.contextmanager
def gateway(args, out: Path):
    """A client for the gateway under test; whether we started it ourselves."""
    if args.gateway:
        yield GatewayClient(args.gateway, args.user, password(args)), False
    else:
        with LocalGateway(Path(args.file), out / "gateway.log") as gw:
            print(f"started a local gateway at {gw.url} from {args.file} (log: {out / 'gateway.log'})", flush=True)
            yield gw.client, True


@contextlib.contextmanager
def overridden(client: GatewayClient, function: str, labels: dict[str, str], env: dict[str, str], local: bool):
    """Redeploy with the overrides for the run; put the old deployment back on a gateway we do not own."""
    if not labels and not env:
        yield
        return
    before = client.redeploy(function, labels, env)
    print(f"redeployed {function} through PUT /system/functions with labels {labels} env {env}", flush=True)
    try:
        yield
    finally:
        if not local:
            client.restore(before)
            print(f"restored {function}'s previous deployment", flush=True)


def _overrides(args, local: bool, default_down: str | None) -> dict[str, str]:
    labels = pairs(args.label, "--label")
    if args.target is not None:
        labels[LABEL + "target"] = f"{args.target:g}"
    down = args.down_window or (default_down if local else None)
    if down:
        labels[LABEL + "down.window"] = down
    return labels


def command(args) -> str:
    return "aigc " + " ".join(shlex.quote(a) for a in getattr(args, "argv", []))


def coldstart(args) -> int:
    fn = args.function
    out = Path(args.out or f"artifacts/bench/coldstart-{fn}")
    out.mkdir(parents=True, exist_ok=True)
    outputs = locustrun.Outputs(out)
    started = time.monotonic()
    with gateway(args, out) as (client, local):
        client.status(fn)  # fails early, with the gateway's answer, if the function is not deployed
        # the local gateway honours the down window even for a manual scale to zero; 2 s keeps cycles short
        labels = _overrides(args, local, default_down="2s")
        with overridden(client, fn, labels, pairs(args.env, "--env"), local):
            rc = locustrun.run([locustrun.locustfile_for(fn, args.locustfile)], client.url, outputs,
                               function=fn, user=client.user, password=client.password,
                               options=["-u", "1", "-r", "1", "--suite", "coldstart",
                                        "--cold-runs", str(args.runs), "--warm-per-cold", str(args.warm),
                                        "--zero-timeout", str(args.zero_timeout),
                                        "--settle", str(args.settle)],
                               timeout=args.timeout, extra=args.locust_args)
    samples = report.read_samples(outputs.samples)
    rows = report.summarise(samples, ["cold", "warm"])
    admin = report.summarise(samples, ["scale to zero"])
    markdown = (f"Cold start of `{fn}`: first response after the gateway reported 0 replicas, next to the warm calls "
                f"that followed ({args.runs} cycles, {args.warm} warm calls each).\n\n" + report.table(rows) +
                f"\n\nWaiting for 0 replicas took p50 {admin['scale to zero'].get('p50', 0) / 1000:.1f} s "
                f"(not part of the cold start).\n\nCommand: `{command(args)}`" +
                (f"\n\nRedeployed for the run with labels {labels}." if labels else ""))
    report.write_summary(out, {"suite": "coldstart", "function": fn, "gateway": "local" if local else args.gateway,
                               "labels": labels, "rows": rows, "scale_to_zero": admin["scale to zero"],
                               "locust_exit": rc, "seconds": round(time.monotonic() - started, 1),
                               "command": command(args)}, markdown)
    report.plot_coldstart(samples, out / "coldstart.png", f"{fn}: cold vs warm latency per cycle")
    print(markdown)
    print(f"\nreport: {out}/ (summary.md, coldstart.png, locust.html, locust_stats.csv)")
    return _status(rc, rows)


def scaling(args) -> int:
    fn = args.function
    out = Path(args.out or f"artifacts/bench/scaling-{fn}")
    out.mkdir(parents=True, exist_ok=True)
    outputs = locustrun.Outputs(out)
    started = time.monotonic()
    duration = (2 * args.steps - 1) * args.step_seconds
    with gateway(args, out) as (client, local):
        client.status(fn)
        labels = _overrides(args, local, default_down=None)
        with overridden(client, fn, labels, pairs(args.env, "--env"), local):
            if client.status(fn).get("availableReplicas", 0) == 0:
                # start warm: a scale-from-zero wait would hide the scaling we want to see
                client.scale(fn, 1)
                client.wait_for(fn, lambda s: s.get("availableReplicas", 0) >= 1, 180, "a ready replica")
            rc = locustrun.run([locustrun.locustfile_for(fn, args.locustfile), locustrun.LOADTESTS / "step_shape.py"],
                               client.url, outputs, function=fn, user=client.user, password=client.password,
                               options=["--step-users", str(args.step_users), "--step-seconds", str(args.step_seconds),
                                        "--steps", str(args.steps), "--poll-interval", str(args.poll_interval)],
                               timeout=duration + args.timeout, extra=args.locust_args)
    samples = report.read_samples(outputs.samples)
    replicas = report.read_replicas(outputs.replicas, fn)
    t0 = min([s["time"] for s in samples] + [t for t, _, _ in replicas] or [0.0])
    phases = report.phases(samples, replicas)
    series = report.timeseries(samples, replicas, t0)
    with open(out / "timeseries.csv", "w") as fh:
        fh.write("t,users,rps,p50_ms,p95_ms,replicas,available\n")
        for p in series:
            fh.write(",".join("" if p[k] is None else f"{p[k]:.3f}" if isinstance(p[k], float) else str(p[k])
                              for k in ("t", "users", "rps", "p50", "p95", "replicas", "available")) + "\n")
    total = report.summarise(report.calls(samples), sorted({s["name"] for s in report.calls(samples)}))
    peak = max((r for _, r, _ in replicas), default=0)
    markdown = (f"Scaling of `{fn}`: {args.step_users} users more every {args.step_seconds:g} s for {args.steps} steps, "
                f"then down (closed loop: users = requests in flight).\n\n" + report.phase_table(phases) +
                f"\n\nReplicas: started at {replicas[0][1] if replicas else '?'}, peaked at {peak}, "
                f"ended at {replicas[-1][1] if replicas else '?'}.\n\nCommand: `{command(args)}`" +
                (f"\n\nRedeployed for the run with labels {labels}." if labels else ""))
    report.write_summary(out, {"suite": "scaling", "function": fn, "gateway": "local" if local else args.gateway,
                               "labels": labels, "phases": phases, "totals": total, "replicas_peak": peak,
                               "locust_exit": rc, "seconds": round(time.monotonic() - started, 1),
                               "command": command(args)}, markdown)
    title = f"{fn}: step load ({args.step_users} users/step, {args.step_seconds:g} s), replicas overlaid"
    report.plot_scaling(series, replicas, t0, out / "scaling.png", title)
    print(markdown)
    print(f"\nreport: {out}/ (summary.md, scaling.png, timeseries.csv, locust.html, locust_stats.csv)")
    return _status(rc, total)


def _status(rc: int, rows: dict) -> int:
    if not any(s.get("n") for s in rows.values()):
        print("no successful requests", file=sys.stderr)
        return 1
    return 1 if rc else 0
