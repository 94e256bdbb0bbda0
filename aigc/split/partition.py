"""Choosing the cuts, and writing the stages as store entries (see aigc.split's docstring)."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx.utils

from .. import __version__
from ..runtime import errors, store
from .graph import DEFAULT_DIMS, Graph, SplitError

METRICS = ("params", "flops", "memory")


def stage_name(model: str, index: int, of: int) -> str:
    return f"{model}--stage-{index}-of-{of}"


@dataclass
class Stage:
    index: int
    start: int  # compute nodes [start, stop)
    stop: int
    inputs: list[str]
    outputs: list[str]
    params: int
    flops: int
    memory: int


@dataclass
class Plan:
    model: str
    stored: store.StoredModel
    onnx_file: str
    graph: Graph
    by: str
    stages: list[Stage] = field(default_factory=list)

    def lines(self) -> list[str]:
        g = self.graph
        n = len(self.stages)
        dims = " ".join(f"{k}={v}" for k, v in g.reference_dims.items()) or "none"
        lines = [f"{self.model}: {len(g.nodes)} compute nodes, {len(g.cuts)} cut points (at most {g.max_carried} "
                 f"activations carried); {n} stage(s) by {self.by} "
                 f"(reference dims: {dims})"]
        for s in self.stages:
            first, last = g.nodes[s.start], g.nodes[s.stop - 1]
            lines.append(f"stage {s.index}/{n} {stage_name(self.model, s.index, n)}: nodes {s.start}-{s.stop - 1} "
                         f"({first.op_type} {first.name!r} .. {last.op_type} {last.name!r}); params "
                         f"{s.params / 1e6:.2f} MB, {s.flops / 1e9:.3f} GFLOP, memory ~{s.memory / 1e6:.2f} MB")
            if s.index < n:
                lines.append("    carries: " + ", ".join(g.describe(t) for t in s.outputs))
        return lines


def _open_onnx(name: str, root: Path | None) -> tuple[store.StoredModel, str]:
    try:
        stored = store.open_model(name, root)
    except errors.AigcError as exc:  # unknown, damaged or an invalid name
        raise SplitError(str(exc)) from None
    files = [rel for rel in stored.manifest["files"] if rel.endswith(".onnx")]
    if "model.onnx" in files:  # what the functions load (stored.file("model.onnx"))
        return stored, "model.onnx"
    if len(files) == 1:
        return stored, files[0]
    kind = f"a {stored.manifest.get('format', 'non-ONNX')} entry" if not files else f"several ONNX files {files}"
    raise SplitError(f"{name!r} is {kind} with no model.onnx; only an entry with one ONNX graph can be split")


def _choose(costs, last: int, stages: int, metric: int, limit: float, carried_bytes: list[int]) -> list[int]:
    """Bound indices 0 = i0 < i1 < … < i_stages = last: the least maximum stage cost; among plans with that
    maximum, the most even (least sum of squared costs), then the fewest carried bytes; every stage's memory
    within `limit`."""
    inf = math.inf

    def fits(i: int, j: int) -> bool:
        return costs[i, j][2] <= limit
    best = [[inf] * (last + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for s in range(1, stages + 1):
        for j in range(s, last + 1):
            best[s][j] = min((max(best[s - 1][i], costs[i, j][metric]) for i in range(s - 1, j)
                              if best[s - 1][i] < inf and fits(i, j)), default=inf)
    bound = best[stages][last]
    # without this second pass every stage but the costliest could be anything up to the bound: one node, say
    unset = (inf, inf)
    even = [[unset] * (last + 1) for _ in range(stages + 1)]
    even[0][0] = (0, 0)
    parent: dict[tuple[int, int], int] = {}
    for s in range(1, stages + 1):
        for j in range(s, last + 1):
            for i in range(s - 1, j):
                cost = costs[i, j][metric]
                if even[s - 1][i] != unset and fits(i, j) and cost <= bound:
                    squares, carried = even[s - 1][i]
                    total = (squares + cost * cost, carried + (carried_bytes[j] if j < last else 0))
                    if total < even[s][j]:
                        even[s][j], parent[s, j] = total, i
    chosen = [last]
    for s in range(stages, 0, -1):
        chosen.append(parent[s, chosen[-1]])
    return chosen[::-1]


def _fewest_stages(g: Graph, bounds: list[int], costs, limit: int) -> int:
    i, count = 0, 0
    while i < len(bounds) - 1:
        j = max((j for j in range(i + 1, len(bounds)) if costs[i, j][2] <= limit), default=None)
        if j is None:
            return _too_big(g, bounds[i], bounds[i + 1], costs[i, i + 1][2], limit)
        i, count = j, count + 1
    return count


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _too_big(g: Graph, start: int, stop: int, memory: int, limit: int):
    for k in range(start, stop):
        weights = sum(g.weight_bytes[w] for w in g.node_weights[k])
        activation = max([g.node_activation[k], *(g.nbytes(i) for i in g.nodes[k].input if i in g.activations)])
        if weights + activation > limit:
            node = g.nodes[k]
            raise SplitError(f"node {k} ({node.op_type} {node.name!r}) alone needs ~{_size(weights + activation)} "
                             f"(weights {_size(weights)} + activation {_size(activation)}), more than --max-memory "
                             f"{_size(limit)}: raise the limit")
    raise SplitError(f"nodes {start}-{stop - 1} lie between adjacent cut points and need ~{_size(memory)} together, "
                     f"more than --max-memory {_size(limit)}: raise the limit, or --max-carried for more cut points")


def plan(name: str, stages: int | None = None, by: str = "params", max_memory: int | None = None,
         dims: dict[str, int] | None = None, max_carried: int = 2, root: Path | None = None) -> Plan:
    if by not in METRICS:
        raise SplitError(f"--by {by!r}: use one of {', '.join(METRICS)}")
    if (stages is None) == (max_memory is None):
        raise SplitError("give either a stage count (--stages N) or a memory limit per stage (--max-memory)")
    if stages is not None and stages < 1:
        raise SplitError(f"--stages {stages}: a model splits into at least 1 stage")
    stored, rel = _open_onnx(name, root)
    g = Graph(onnx.load(str(stored.file(rel))), dict(DEFAULT_DIMS if dims is None else dims), max_carried)
    bounds = [0, *g.cuts, len(g.nodes)]
    if stages is not None and stages - 1 > len(g.cuts):
        why = [f"{g.too_wide} carry more than {max_carried} activations (raise --max-carried)"] if g.too_wide else []
        if g.untyped:
            tensors = sorted({t for names in g.untyped.values() for t in names})
            why.append(f"{len(g.untyped)} carry tensors whose shape inference gives no rank: {', '.join(tensors[:5])}"
                       " (export the model with shapes for them)")
        raise SplitError(f"{name} has {len(g.cuts)} cut points, so at most {len(g.cuts) + 1} stage"
                         f"{'s' if g.cuts else ''}, not {stages}"
                         + (f"; of the other cuts, {'; '.join(why)}" if why else ""))
    costs = g.segment_costs(bounds)
    if max_memory is not None:
        stages = _fewest_stages(g, bounds, costs, max_memory)
    carried_bytes = [sum(g.nbytes(t) for t in g.carried[k]) for k in bounds]
    chosen = _choose(costs, len(bounds) - 1, stages, METRICS.index(by),
                     math.inf if max_memory is None else max_memory, carried_bytes)
    result = Plan(name, stored, rel, g, by)
    for index, (i, j) in enumerate(zip(chosen, chosen[1:]), 1):
        params, flops, memory = costs[i, j]
        result.stages.append(Stage(index, bounds[i], bounds[j], g.carried[bounds[i]], g.carried[bounds[j]],
                                   params, flops, memory))
    return result


def _io(g: Graph, names: list[str]) -> list[dict[str, Any]]:
    return [{"name": t, "dtype": g.dtype(t).name, "shape": g.symbolic_shape(t),
             "reference_shape": list(g.shapes[t]) if t in g.shapes else None} for t in names]


def write(p: Plan) -> list[store.StoredModel]:
    """Each stage as a store entry beside its parent; all are extracted and checked before any is published."""
    started = time.perf_counter()
    root = p.stored.path.parent
    g = p.graph
    n = len(p.stages)
    names = [stage_name(p.model, s.index, n) for s in p.stages]
    for name in names:
        try:
            store.check_entry(name)
        except errors.AigcError as exc:
            raise SplitError(str(exc)) from None
    extractor = onnx.utils.Extractor(g.model)
    models = []
    for s in p.stages:
        models.append(extractor.extract_model(s.inputs, s.outputs))
        try:
            onnx.checker.check_model(models[-1])
        except onnx.checker.ValidationError as exc:
            raise SplitError(f"stage {s.index} of {n} is not a valid ONNX model: {exc}") from None
    parent = p.stored.manifest
    # labels, tokenizer, preprocess.json: small, and the first or last stage needs them
    extra = [rel for rel in parent["files"] if not rel.endswith((".onnx", ".onnx.data"))]
    for s, name, model in zip(p.stages, names, models):
        work = Path(tempfile.mkdtemp(prefix=f".split-{name}-", dir=root))
        try:
            onnx.save(model, str(work / "model.onnx"))
            for rel in extra:
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p.stored.path / rel, work / rel)
            manifest = {
                "name": name, "task": parent.get("task"), "format": "onnx",
                "platform": parent.get("platform", "onnxruntime_onnx"), "sources": parent.get("sources", []),
                "builder": "aigc.split", "aigc_version": __version__,
                "parent": {"name": p.model, "file": p.onnx_file, "sha256": parent["files"][p.onnx_file]["sha256"]},
                "stage": {"index": s.index, "of": n, "nodes": [s.start, s.stop - 1], "inputs": _io(g, s.inputs),
                          "outputs": _io(g, s.outputs)},
                "cost": {"by": p.by, "params_bytes": s.params, "flops": s.flops, "memory_bytes": s.memory,
                         "reference_dims": g.reference_dims},
                "build_seconds": round(time.perf_counter() - started, 3),
            }
            store.write_manifest(work, manifest)
            store.publish(work, root / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return [store.open_model(name, root) for name in names]
