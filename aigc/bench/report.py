"""Turn a run's CSVs into summaries (JSON + Markdown) and PNG plots.

The raw inputs are the locustfiles' side outputs: every sample
(`*_samples.csv`: time, type, name, ms, ok, users) and the replica count polled
from /system/functions (`*_replicas.csv`). Percentiles here are exact over the
samples (linear interpolation between ranks, as numpy's default); locust's own
CSV/HTML round response times to two significant digits.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

CUSTOM_TYPES = {"ADMIN", "SSE", "RATE"}  # samples that are not one HTTP call to the function


def read_samples(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{"time": float(r["time"]), "type": r["type"], "name": r["name"], "ms": float(r["ms"]),
                 "ok": r["ok"] == "1", "users": int(r["users"])} for r in csv.DictReader(fh)]


def read_replicas(path: Path, function: str) -> list[tuple[float, int, int]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [(float(r["time"]), int(r["replicas"]), int(r["available"]))
                for r in csv.DictReader(fh) if r["function"] == function]


def calls(samples: list[dict]) -> list[dict]:
    return [s for s in samples if s["type"] not in CUSTOM_TYPES]


def distribution(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "mean": float(a.mean())}


def summarise(samples: list[dict], names: list[str]) -> dict:
    out = {}
    for name in names:
        rows = [s for s in samples if s["name"] == name]
        stats = distribution([s["ms"] for s in rows if s["ok"]])
        stats["failures"] = sum(not s["ok"] for s in rows)
        out[name] = stats
    return out


def table(rows: dict[str, dict], unit: str = "ms") -> str:
    lines = [f"| | requests | failures | p50 {unit} | p95 {unit} | max {unit} |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in rows.items():
        if s.get("n"):
            lines.append(f"| {name} | {s['n']} | {s['failures']} | {s['p50']:.0f} | {s['p95']:.0f} | {s['max']:.0f} |")
        else:
            lines.append(f"| {name} | 0 | {s['failures']} | – | – | – |")
    return "\n".join(lines)


# --- scaling ---------------------------------------------------------------------
def phases(samples: list[dict], replicas: list[tuple[float, int, int]], min_seconds: float = 1.0) -> list[dict]:
    """Consecutive stretches at one user count: requests, RPS, p50/p95, replicas seen."""
    rows = sorted(calls(samples), key=lambda s: s["time"])
    groups: list[list[dict]] = []
    for s in rows:
        if groups and groups[-1][0]["users"] == s["users"]:
            groups[-1].append(s)
        else:
            groups.append([s])
    out = []
    for g in groups:
        start, end = g[0]["time"], g[-1]["time"]
        if end - start < min_seconds:
            continue  # the seconds while users are being added or stopped
        seen = [r for t, r, _ in replicas if start <= t <= end]
        d = distribution([s["ms"] for s in g if s["ok"]])
        out.append({"users": g[0]["users"], "seconds": round(end - start, 1), "requests": len(g),
                    "failures": sum(not s["ok"] for s in g), "rps": len(g) / (end - start),
                    "p50": d.get("p50"), "p95": d.get("p95"),
                    "replicas_max": max(seen) if seen else None,
                    "replicas_end": seen[-1] if seen else None})
    return out


def phase_table(rows: list[dict]) -> str:
    lines = ["| users | seconds | requests | failures | req/s | p50 ms | p95 ms | replicas (max) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in rows:
        lines.append(f"| {p['users']} | {p['seconds']:.0f} | {p['requests']} | {p['failures']} | {p['rps']:.1f} | "
                     f"{p['p50'] or 0:.0f} | {p['p95'] or 0:.0f} | {p['replicas_max'] if p['replicas_max'] is not None else '–'} |")
    return "\n".join(lines)


def timeseries(samples: list[dict], replicas: list[tuple[float, int, int]], t0: float, bin_s: float = 2.0) -> list[dict]:
    rows = calls(samples)
    if not rows:
        return []
    end = max(s["time"] for s in rows)
    out = []
    for i in range(int((end - t0) // bin_s) + 1):
        lo, hi = t0 + i * bin_s, t0 + (i + 1) * bin_s
        inside = [s for s in rows if lo <= s["time"] < hi]
        ok = [s["ms"] for s in inside if s["ok"]]
        seen = [(r, a) for t, r, a in replicas if t < hi]
        out.append({"t": i * bin_s + bin_s / 2, "rps": len(inside) / bin_s,
                    "users": max((s["users"] for s in inside), default=0),
                    "p50": float(np.percentile(ok, 50)) if ok else None,
                    "p95": float(np.percentile(ok, 95)) if ok else None,
                    "replicas": seen[-1][0] if seen else None, "available": seen[-1][1] if seen else None})
    return out


def plot_scaling(series: list[dict], replicas: list[tuple[float, int, int]], t0: float, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on CI or servers
    import matplotlib.pyplot as plt

    t = [p["t"] for p in series]
    fig, (lat, thr) = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True, dpi=100)
    lat.plot(t, [p["p50"] for p in series], color="tab:blue", label="p50")
    lat.plot(t, [p["p95"] for p in series], color="tab:red", label="p95")
    lat.set_ylabel("latency (ms)")
    lat.set_title(title, fontsize=10)
    thr.plot(t, [p["rps"] for p in series], color="tab:green", label="requests/s")
    thr.set_ylabel("requests/s")
    thr.set_xlabel("seconds since start")
    rt = [x - t0 for x, _, _ in replicas]
    top = max([r for _, r, _ in replicas] + [p["users"] for p in series] + [1]) + 1
    for ax in (lat, thr):
        twin = ax.twinx()
        twin.step(rt, [r for _, r, _ in replicas], where="post", color="black", linewidth=1.6, label="replicas")
        twin.step(rt, [a for _, _, a in replicas], where="post", color="tab:orange", linewidth=1, linestyle="--",
                  label="ready")
        if ax is thr:  # users and replicas are both small counts: one axis makes target = users/replica visible
            twin.step(t, [p["users"] for p in series], where="mid", color="tab:gray", linestyle=":", label="users")
        twin.set_ylabel("replicas" if ax is lat else "replicas, users")
        twin.set_ylim(0, top)
        twin.yaxis.get_major_locator().set_params(integer=True)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8, ncol=2)
        ax.grid(alpha=0.3)
    if t:
        thr.set_xlim(0, max(t[-1] + 1, rt[-1] if rt else 0))
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def plot_coldstart(samples: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    cycle, xs_cold, ys_cold, xs_warm, ys_warm = 0, [], [], [], []
    for s in sorted(samples, key=lambda s: s["time"]):
        if s["name"] == "cold" and s["ok"]:
            cycle += 1
            xs_cold.append(cycle)
            ys_cold.append(s["ms"])
        elif s["name"] == "warm" and s["ok"] and cycle:
            xs_warm.append(cycle)
            ys_warm.append(s["ms"])
    ax.scatter(xs_cold, ys_cold, color="tab:red", label="cold (first call after scale to zero)", zorder=3)
    ax.scatter(xs_warm, ys_warm, color="tab:blue", s=12, alpha=0.6, label="warm")
    ax.set_yscale("log")
    ax.set_xlabel("cycle")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def write_summary(out: Path, summary: dict, markdown: str) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown + "\n")
