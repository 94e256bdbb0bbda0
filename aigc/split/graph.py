"""What a model's cuts carry and what its nodes cost: the analysis behind aigc.split (see its docstring)."""

from __future__ import annotations

import math

import numpy as np
import onnx

DEFAULT_DIMS = {"batch": 1, "sequence": 128, "height": 224, "width": 224}
TINY_ELEMENTS = 16
MATMULS = ("MatMul", "MatMulInteger", "MatMulNBits")  # input 0 is [..., M, K]


class SplitError(ValueError):
    pass


def parse_dims(items: list[str]) -> dict[str, int]:
    """`["batch=1", "sequence=64"]` over the defaults."""
    dims = dict(DEFAULT_DIMS)
    for item in items:
        name, sep, size = item.partition("=")
        if not sep or not name or not size.isdigit():
            raise SplitError(f"--dim {item!r}: use NAME=SIZE, e.g. sequence=128 (0 for an empty cache)")
        dims[name] = int(size)
    return dims


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    return math.prod(t.dims) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def _constant_bytes(node: onnx.NodeProto) -> int:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            return _tensor_bytes(attr.t)
    return 8  # value_float, value_ints…: a scalar or a short list


class Graph:
    """The compute nodes of a model, what each cut between them carries, and what each node costs."""

    def __init__(self, model: onnx.ModelProto, dims: dict[str, int], max_carried: int):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node
               for a in n.attribute):
            raise SplitError("the model has control flow (If/Loop/Scan), which reads tensors from the outer graph "
                             "implicitly; only graphs without subgraphs can be split")
        self.model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        g = self.model.graph
        self.types = {v.name: v.type for v in (*g.value_info, *g.input, *g.output)}
        self.weight_bytes = {t.name: _tensor_bytes(t) for t in g.initializer}
        weights_of = {name: frozenset([name]) for name in self.weight_bytes}  # constant tensor -> weights it is made of
        self.nodes: list[onnx.NodeProto] = []
        self.node_weights: list[frozenset[str]] = []
        for node in g.node:
            ins = [i for i in node.input if i]
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self.weight_bytes[node.output[0]] = _constant_bytes(node)
                weights_of[node.output[0]] = frozenset(node.output[:1])
            elif ins and all(i in weights_of for i in ins):
                for out in node.output:
                    weights_of[out] = frozenset().union(*(weights_of[i] for i in ins))
            else:
                self.nodes.append(node)
                self.node_weights.append(frozenset().union(*(weights_of.get(i, ()) for i in ins)))
        self.inputs = [i.name for i in g.input if i.name not in self.weight_bytes]
        self.outputs = [o.name for o in g.output]
        n = len(self.nodes)
        self.activations = set(self.inputs) | {o for node in self.nodes for o in node.output if o}

        born = {name: -1 for name in self.inputs}  # insertion order is production order: carried lists keep it
        for k, node in enumerate(self.nodes):
            born.update((o, k) for o in node.output if o)
        last: dict[str, int] = {}
        for k, node in enumerate(self.nodes):
            last.update((i, k) for i in node.input if i in born)
        last.update((o, n) for o in self.outputs if o in born)
        ending: dict[int, list[str]] = {}
        for name, k in last.items():
            ending.setdefault(k, []).append(name)
        live: dict[str, None] = {}
        self.carried: list[list[str]] = []  # [k]: what a cut before compute node k carries
        for k in range(n + 1):
            for name in self.inputs if k == 0 else self.nodes[k - 1].output:
                if last.get(name, -1) >= k:
                    live[name] = None
            for name in ending.get(k - 1, ()):
                live.pop(name, None)
            self.carried.append(list(live))
        self.carried[0], self.carried[n] = list(self.inputs), list(self.outputs)

        self.cuts: list[int] = []
        self.untyped: dict[int, list[str]] = {}  # ruled-out cut -> the tensors without an inferred rank
        self.too_wide = 0
        self.max_carried = max_carried
        for k in range(1, n):
            missing = [t for t in self.carried[k] if not self.has_rank(t)]
            if missing:
                self.untyped[k] = missing
            elif sum(not self.tiny(t) for t in self.carried[k]) > max_carried:
                self.too_wide += 1
            else:
                self.cuts.append(k)

        self.dims = dims
        self.reference_dims: dict[str, int] = {}  # the dims this model's inputs use, for the plan and manifests
        self.shapes = self._probe_shapes()
        self.node_flops = [self._flops(node) for node in self.nodes]
        self.node_activation = [max((self.nbytes(o) for o in node.output if o), default=0) for node in self.nodes]

    def has_rank(self, name: str) -> bool:
        t = self.types.get(name)
        return t is not None and t.HasField("tensor_type") and t.tensor_type.elem_type != 0 \
            and t.tensor_type.HasField("shape")

    def symbolic_shape(self, name: str) -> list[int | str | None]:
        """Static dims as ints, named dynamic ones as names; unknown (or named by shape inference) as None."""
        dims = self.types[name].tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param if d.dim_param and
                not d.dim_param.startswith("unk__") else None) for d in dims]

    def tiny(self, name: str) -> bool:
        shape = self.symbolic_shape(name)
        return all(isinstance(d, int) for d in shape) and math.prod(shape) <= TINY_ELEMENTS

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.types[name].tensor_type.elem_type))

    def nbytes(self, name: str) -> int:
        shape = self.shapes.get(name)
        return 0 if shape is None or name not in self.types else math.prod(shape) * self.dtype(name).itemsize

    def _input_shape(self, vi: onnx.ValueInfoProto) -> list[int]:
        shape = []
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            key = d.dim_param or f"{vi.name}[{axis}]"
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            elif key in self.dims:
                shape.append(self.dims[key])
                self.reference_dims[key] = self.dims[key]
            else:
                raise SplitError(f"input {vi.name!r} has a dynamic dimension {key!r} with no reference size; "
                                 f"give one with --dim {key}=SIZE")
        return shape

    def _probe_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape at the reference dims, from one run on ones (static inference stops at the
        first shape computed at run time, which both EfficientNet's padding and MiniLM's masks are; ones, not
        zeros, because a mask of zeros is out of range for some attention kernels)."""
        import onnxruntime as ort

        g = self.model.graph
        inputs = {vi.name: vi for vi in g.input if vi.name in self.inputs}
        feeds = {name: np.ones(self._input_shape(vi), self.dtype(name)) for name, vi in inputs.items()}
        shapes = {t.name: tuple(t.dims) for t in g.initializer}
        shapes.update((name, a.shape) for name, a in feeds.items())
        probe = onnx.ModelProto()
        probe.CopyFrom(self.model)
        known = {o.name for o in g.output} | set(inputs)
        probe.graph.output.extend(v for v in g.value_info if v.name not in known and self.has_rank(v.name))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
        options.log_severity_level = 4  # a failed probe falls back below: no error lines on the console
        try:
            session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            shapes.update(zip(names, (a.shape for a in session.run(names, feeds))))
        except Exception:  # an op this runtime lacks: static shapes where they are fully known
            for name in self.types:
                shape = [self.dims.get(d, d) if isinstance(d, str) else d for d in self.symbolic_shape(name)]
                if name not in shapes and all(isinstance(d, int) for d in shape):
                    shapes[name] = tuple(shape)
        return shapes

    def _flops(self, node: onnx.NodeProto) -> int:
        out = self.shapes.get(node.output[0]) if node.output else None
        if out is None:
            return 0
        elements = math.prod(out)
        a = self.shapes.get(node.input[0]) if node.input else None
        if node.op_type in MATMULS and a:
            return 2 * elements * a[-1]
        if node.op_type == "Gemm" and a and len(a) == 2:
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            return 2 * elements * a[0 if trans_a else 1]
        w = self.shapes.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and w:
            return 2 * elements * math.prod(w[1:])  # w: [out channels, in channels / group, *kernel]
        if node.op_type == "ConvTranspose" and w and a:
            return 2 * math.prod(a) * math.prod(w[1:])  # w: [in channels, out channels / group, *kernel]
        return elements

    def segment_costs(self, bounds: list[int]) -> dict[tuple[int, int], tuple[int, int, int]]:
        """(i, j) -> (params, flops, memory) of a stage from bounds[i] to bounds[j], for all i < j."""
        costs = {}
        for i, start in enumerate(bounds[:-1]):
            weights: set[str] = set()
            params = flops = 0
            activation = max((self.nbytes(t) for t in self.carried[start]), default=0)
            j = i + 1
            for k in range(start, bounds[-1]):
                new = self.node_weights[k] - weights
                weights |= new
                params += sum(self.weight_bytes[w] for w in new)
                flops += self.node_flops[k]
                activation = max(activation, self.node_activation[k])
                if k + 1 == bounds[j]:
                    costs[i, j] = (params, flops, params + activation)
                    j += 1
        return costs

    def describe(self, name: str) -> str:
        t = self.types[name].tensor_type
        dtype = self.dtype(name).name if t.elem_type else "?"
        shape = self.shapes.get(name)
        return f"{name} {dtype}[{','.join(map(str, shape)) if shape is not None else '?'}]"

