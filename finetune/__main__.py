"""python -m finetune data | proofs | train CONFIG | evaluate ... | tactics | sweep SWEEP | publish RUN_ID | cancel RUN_ID"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, default_data_dir, default_jobs_dir
from .data import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune", description="PEFT fine-tuning on Coq proofs")
    parser.add_argument("--data-dir", type=Path, default=None, help="corpus folder (default $AIGC_FINETUNE_DATA "
                        "or finetune/data)")
    parser.add_argument("--jobs-dir", type=Path, default=None, help="runs (default $AIGC_JOBS_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    dat = sub.add_parser("data", help="download the libcoq-* packages, de-duplicate, split by file")
    dat.add_argument("--card", type=Path, default=Path(__file__).resolve().parent / "DATA_CARD.md",
                     help="where to write the data card (default finetune/DATA_CARD.md)")
    sub.add_parser("proofs", help="build the proof-completion set from the test split (needs coqc)")
    train = sub.add_parser("train", help="train one run from its config file (resumes if interrupted)")
    train.add_argument("config", type=Path)
    train.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("evaluate", help="held-out perplexity and proof pass@1 of the base and of runs")
    ev.add_argument("runs", nargs="*", help="run ids (their adapters or models); the base is always evaluated")
    ev.add_argument("--base", default="smollm2-135m")
    ev.add_argument("--blocks", type=int, default=64, help="test blocks for perplexity (default 64; 0: skip)")
    ev.add_argument("--seq-len", type=int, default=512)
    ev.add_argument("--proofs", type=int, default=0, help="proof problems (default 0: all)")
    ev.add_argument("--max-new-tokens", type=int, default=96)
    ev.add_argument("--timeout", type=float, default=30.0, help="seconds per coqc check")
    ev.add_argument("--prompt", default="tail", help="tail: the last 384 tokens before the lemma; retrieval: "
                    "library and local premises + the tail (finetune/retrieval.py)")
    ev.add_argument("--samples", type=int, default=0, help="sampled proofs per problem for pass@k (0: greedy only)")
    ev.add_argument("--temperature", type=float, default=0.8)
    ev.add_argument("--no-base", action="store_true", help="evaluate only the runs named")
    ev.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    tac = sub.add_parser("tactics", help="the model-free baseline: proofs closed by a fixed list of Coq tactics")
    tac.add_argument("--timeout", type=float, default=30.0, help="seconds per coqc check")
    tac.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    sw = sub.add_parser("sweep", help="train and measure a seeded grid of runs around one config")
    sw.add_argument("sweep", type=Path, help="a sweep file (finetune/sweep.py), e.g. finetune/sweeps/methodology.yaml")
    sw.add_argument("--only", action="append", help="run only this row (repeatable); others keep their results")
    sw.add_argument("--out", type=Path, default=None, help="results JSON, updated after every row")
    pub = sub.add_parser("publish", help="put a run's adapter in the model store (and the remote, if set)")
    pub.add_argument("run_id")
    pub.add_argument("--adapter", default=None, help="store name (default: the config's `adapter`)")
    pub.add_argument("--if-missing", action="store_true", help="do nothing if the store has that adapter already")
    cancel = sub.add_parser("cancel", help="ask a running run to stop at its next step (it checkpoints first)")
    cancel.add_argument("run_id")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    jobs_dir = args.jobs_dir or default_jobs_dir()

    try:
        if args.command == "data":
            from . import data
            summary = data.prepare(data_dir)
            print(json.dumps({k: v for k, v in summary.items() if k != "packages"}, indent=2))
            from . import datacard
            datacard.write(data_dir, args.card)
        elif args.command == "proofs":
            from . import proofs
            problems = proofs.build(data_dir)
            print(f"{len(problems)} problems from {len({p.file for p in problems})} files -> "
                  f"{data_dir / 'proofs.jsonl'}")
        elif args.command == "train":
            from .train import Cancelled, Run
            cfg = RunConfig.from_file(args.config)
            run = Run(cfg, jobs_dir, data_dir=data_dir, progress=not args.no_progress)
            run.dir.clear_cancel()  # a cancel was for the command it stopped; this one resumes
            try:
                metrics = run.train()
            except (Cancelled, KeyboardInterrupt) as exc:
                print(f"{cfg.run_id}: stopped ({exc or 'interrupted'}); run the same command to resume",
                      file=sys.stderr)
                return 130
            print(json.dumps(metrics, indent=2))
        elif args.command == "evaluate":
            from . import evaluate
            results = evaluate.evaluate(args.base, args.runs, jobs_dir, data_dir, blocks=args.blocks,
                                        seq_len=args.seq_len, proofs_limit=args.proofs,
                                        max_new_tokens=args.max_new_tokens, timeout=args.timeout,
                                        prompt=args.prompt, samples=args.samples, temperature=args.temperature,
                                        with_base=not args.no_base)
            print(evaluate.table(results))
            if args.out:
                args.out.write_text(json.dumps(results, indent=2) + "\n")
        elif args.command == "tactics":
            from . import evaluate, proofs
            result = evaluate.tactics_baseline(proofs.load(data_dir), data_dir, args.timeout)
            print(f"{len(result['solved'])}/{result['problems']} closed by {result['proof']}")
            if args.out:
                args.out.write_text(json.dumps(result, indent=2) + "\n")
        elif args.command == "sweep":
            from . import sweep
            results = sweep.run(sweep.load(args.sweep), jobs_dir, data_dir, out=args.out, only=args.only)
            print(sweep.table(results))
        elif args.command == "publish":
            from .publish import publish_run
            print(json.dumps(publish_run(args.run_id, args.adapter, jobs_dir, if_missing=args.if_missing), indent=2))
        elif args.command == "cancel":
            from .jobs import RunDir
            run = RunDir(jobs_dir / args.run_id)
            if not run.path.is_dir():
                raise ConfigError(f"no run {args.run_id!r} in {jobs_dir}")
            run.request_cancel()
            print(f"{args.run_id}: cancel requested")
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
