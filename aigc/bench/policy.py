"""`aigc bench policy`: keep-alive policies replayed on an invocation trace, in simulation.

A trace is, per function, the start times of its calls. The simulated pool keeps at most one
replica per function (the paper's model): a call that finds it loaded is warm, else it is a cold
start; a loaded replica that waits for a call holds the function's memory (idle GB-seconds). Each
policy decides, after every call, when the replica goes and (adaptive) when it is loaded again:
fixed keep-alive of 1, 5, 10, 20 minutes, and the adaptive hybrid histogram (aigc/gateway/keepalive.py,
the same code the gateway runs, falling back to 10 minutes while it has not learned).

Synthetic traces have the shape of the Azure Functions 2019 traces (Shahrad et al., ATC '20):
- `periodic`: timer triggers every 5, 15, 30 or 60 minutes, a few seconds of jitter;
- `steady`: Poisson arrivals, a mean gap of 20 s to 5 min;
- `rare`: Poisson arrivals, a mean gap of 1 to 8 hours;
- `bursty`: bursts of 5-50 calls within a minute, bursts apart by an exponential gap of mean 20 min to 3 h.
`--mix` sets the shares (default periodic 0.3, steady 0.2, rare 0.3, bursty 0.2), each function gets a
memory of 128-1024 MB and a duration of 0.1-2 s, all drawn from `--seed`. `--trace FILE` reads the
public trace's per-minute counts instead (invocations_per_function_md.anon.dNN.csv: HashOwner,
HashApp, HashFunction, Trigger, then one count per minute), spreading each minute's calls evenly.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..gateway.keepalive import IdleHistogram, Windows

FIXED_MINUTES = (1, 5, 10, 20)
FALLBACK = 600.0
DEFAULT_MIX = {"periodic": 0.3, "steady": 0.2, "rare": 0.3, "bursty": 0.2}
MAX_FUNCTIONS = 100_000
MAX_CALLS = 20_000_000


class TraceError(ValueError):
    pass


@dataclass
class Function:
    name: str
    kind: str
    starts: list[float]
    memory_gb: float = 0.25
    duration: float = 0.5


@dataclass
class Result:
    policy: str
    calls: int = 0
    cold: int = 0
    idle_gb_seconds: float = 0.0
    per_kind: dict[str, list[float]] = field(default_factory=dict)  # kind -> [calls, cold, idle GB-s]

    @property
    def cold_percent(self) -> float:
        return 100.0 * self.cold / self.calls if self.calls else 0.0


def synthetic(functions: int, hours: float, seed: int, mix: dict[str, float] | None = None) -> list[Function]:
    mix = mix or DEFAULT_MIX
    if not 1 <= functions <= MAX_FUNCTIONS or not 0 < hours <= 24 * 14:
        raise TraceError(f"use 1 to {MAX_FUNCTIONS} functions over at most 14 days")
    if set(mix) - set(DEFAULT_MIX) or any(v < 0 for v in mix.values()) or not sum(mix.values()) > 0:
        raise TraceError(f"--mix takes kinds {sorted(DEFAULT_MIX)} with shares >= 0, not all 0")
    rng = random.Random(seed)
    end = hours * 3600.0
    kinds = rng.choices(list(mix), weights=list(mix.values()), k=functions)
    out = []
    for i, kind in enumerate(kinds):
        starts: list[float] = []
        if kind == "periodic":
            period = rng.choice((5, 15, 30, 60)) * 60.0
            t = rng.uniform(0, period)
            while t < end:
                starts.append(max(0.0, t + rng.uniform(-3, 3)))
                t += period
        elif kind in ("steady", "rare"):
            gap = rng.uniform(20, 300) if kind == "steady" else rng.uniform(3600, 8 * 3600)
            t = rng.expovariate(1 / gap)
            while t < end:
                starts.append(t)
                t += rng.expovariate(1 / gap)
        else:
            gap = rng.uniform(1200, 3 * 3600)
            t = rng.expovariate(1 / gap)
            while t < end:
                starts += sorted(t + rng.uniform(0, 60) for _ in range(rng.randint(5, 50)))
                t += 60 + rng.expovariate(1 / gap)
        out.append(Function(f"f{i}", kind, sorted(s for s in starts if s < end), rng.choice((0.125, 0.25, 0.5, 1.0)),
                            rng.uniform(0.1, 2.0)))
    return out


def load_azure(path: Path, seed: int = 0, limit: int = MAX_FUNCTIONS) -> list[Function]:
    """Functions from the public trace's per-minute CSV; a bad row is a TraceError naming its line."""
    rng = random.Random(seed)
    out, calls = [], 0
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or header[:4] != ["HashOwner", "HashApp", "HashFunction", "Trigger"] or len(header) < 5:
                raise TraceError(f"{path}: the header must be HashOwner,HashApp,HashFunction,Trigger,1,2,… "
                                 "(invocations_per_function_md.anon.dNN.csv)")
            minutes = len(header) - 4
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise TraceError(f"{path}:{line}: {len(row)} columns, the header has {len(header)}")
                try:
                    counts = [int(c) for c in row[4:]]
                except ValueError:
                    raise TraceError(f"{path}:{line}: the per-minute counts must be whole numbers") from None
                if any(c < 0 for c in counts):
                    raise TraceError(f"{path}:{line}: a negative count")
                calls += sum(counts)
                if calls > MAX_CALLS or len(out) >= limit:
                    raise TraceError(f"{path}: more than {MAX_CALLS} calls or {limit} functions; cut the file")
                starts = [m * 60.0 + (k + 0.5) * 60.0 / c for m, c in enumerate(counts) for k in range(c)]
                out.append(Function(row[2][:12], row[3] or "unknown", starts, rng.choice((0.125, 0.25, 0.5, 1.0)),
                                    rng.uniform(0.1, 2.0)))
            if minutes <= 0:
                raise TraceError(f"{path}: no minute columns")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text CSV file") from None
    return out


def simulate(fn: Function, windows_of) -> tuple[int, float]:
    """(cold starts, idle GB-seconds) of one function under a policy: `windows_of(histogram)` -> Windows."""
    histogram = IdleHistogram()
    cold, idle = 0, 0.0
    loaded_from, loaded_until = math.inf, -math.inf  # the replica's next loaded interval
    busy_until = -math.inf
    for t in fn.starts:
        if t < busy_until:  # still running the previous call: the replica is there
            busy_until = max(busy_until, t + fn.duration)
            continue
        if busy_until > -math.inf:
            histogram.add(t - busy_until)
        if loaded_from <= t <= loaded_until:
            idle += (t - loaded_from) * fn.memory_gb
        else:
            cold += 1
            if t > loaded_until:
                idle += max(0.0, loaded_until - loaded_from) * fn.memory_gb
        busy_until = t + fn.duration
        w: Windows = windows_of(histogram)
        loaded_from, loaded_until = busy_until + w.prewarm, busy_until + w.prewarm + w.keepalive
    if fn.starts:
        idle += max(0.0, loaded_until - loaded_from) * fn.memory_gb  # the last wait, to its end
    return cold, idle


def replay(functions: list[Function]) -> list[Result]:
    policies = {f"fixed {m} min": (lambda h, s=m * 60.0: Windows(0.0, s, False)) for m in FIXED_MINUTES}
    policies["adaptive"] = lambda h: h.windows(FALLBACK)
    results = []
    for name, windows_of in policies.items():
        r = Result(name)
        for fn in functions:
            cold, idle = simulate(fn, windows_of)
            calls = len(fn.starts)
            r.calls, r.cold, r.idle_gb_seconds = r.calls + calls, r.cold + cold, r.idle_gb_seconds + idle
            k = r.per_kind.setdefault(fn.kind, [0, 0, 0.0])
            k[0], k[1], k[2] = k[0] + calls, k[1] + cold, k[2] + idle
        results.append(r)
    return results


def table(results: list[Result]) -> str:
    lines = ["| policy | calls | cold starts | cold % | idle GB-s | idle GB-h |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.policy} | {r.calls} | {r.cold} | {r.cold_percent:.2f} | {r.idle_gb_seconds:.0f} | "
                     f"{r.idle_gb_seconds / 3600:.1f} |")
    kinds = sorted({k for r in results for k in r.per_kind})
    lines += ["", "| policy | " + " | ".join(f"{k} cold %, idle GB-h" for k in kinds) + " |",
              "|---|" + "---:|" * len(kinds)]
    for r in results:
        cells = []
        for k in kinds:
            calls, cold, idle = r.per_kind.get(k, [0, 0, 0.0])
            cells.append(f"{100 * cold / calls if calls else 0:.1f}, {idle / 3600:.1f}")
        lines.append(f"| {r.policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[Result], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.scatter(r.idle_gb_seconds / 3600, r.cold_percent, s=40, color="tab:red" if r.policy == "adaptive" else "tab:blue")
        ax.annotate(r.policy, (r.idle_gb_seconds / 3600, r.cold_percent), textcoords="offset points", xytext=(5, 5))
    fixed = [r for r in results if r.policy.startswith("fixed")]
    ax.plot([r.idle_gb_seconds / 3600 for r in fixed], [r.cold_percent for r in fixed], color="tab:blue", alpha=0.4)
    ax.set_xlabel("idle memory held (GB-hours)")
    ax.set_ylabel("cold starts (% of calls)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    try:
        mix = json.loads(args.mix) if args.mix else None
        if mix is not None and not isinstance(mix, dict):
            raise TraceError("--mix is a JSON object, e.g. '{\"periodic\": 0.5, \"rare\": 0.5}'")
        functions = (load_azure(Path(args.trace), args.seed) if args.trace
                     else synthetic(args.functions, args.hours, args.seed, mix))
    except (TraceError, ValueError) as exc:
        print(f"aigc bench policy: {exc}")
        return 2
    source = args.trace or f"synthetic: {args.functions} functions, {args.hours:g} h, seed {args.seed}"
    if args.live:
        return _run_live(functions, args, source)
    results = replay(functions)
    print(f"keep-alive policies on {source} ({sum(len(f.starts) for f in functions)} calls)\n")
    print(table(results))
    out = Path(args.out)
    plot(results, out / "policy-pareto.png", f"keep-alive policies ({source})")
    (out / "policy.md").write_text(f"{source}\n\n{table(results)}\n")
    print(f"\nreport: {out}/policy.md, {out}/policy-pareto.png")
    return 0


LIVE_MAX_FUNCTIONS = 50
LIVE_MAX_SECONDS = 3600.0


def _run_live(functions: list[Function], args, source: str) -> int:
    from .policy_live import run_live

    span = max((s for f in functions for s in f.starts), default=0.0) / args.speedup
    if len(functions) > LIVE_MAX_FUNCTIONS or span > LIVE_MAX_SECONDS or not 1 <= args.speedup <= 3600:
        print(f"aigc bench policy --live: at most {LIVE_MAX_FUNCTIONS} functions and an hour of real time "
              f"(the trace spans {span:.0f} s at --speedup {args.speedup:g}; speedup 1 to 3600)")
        return 2
    calls = sum(len(f.starts) for f in functions)
    print(f"replaying {source} ({calls} calls) on a local gateway, {args.speedup:g}x faster: {span:.0f} s")
    text, errors = run_live(functions, args.speedup, Path(args.out))
    header = f"{source}, replayed on the gateway at {args.speedup:g}x ({calls} calls per policy)"
    print(f"\n{header}\n\n{text}")
    (Path(args.out) / "policy-live.md").write_text(f"{header}\n\n{text}\n")
    for e in errors[:10]:
        print("call failed:", e)
    return 1 if errors else 0
