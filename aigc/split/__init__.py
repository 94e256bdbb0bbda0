"""Split an ONNX store entry into N chained stages (NetLess, issue #19): the partitioner.

`aigc split MODEL --stages N` writes `<model>--stage-K-of-N` entries; stage K's
outputs are stage K+1's inputs, by name, so the chain is strictly linear.

Nodes are taken in the file's order (ONNX requires graph nodes to be
topologically sorted; the checker enforces it). Nodes computed from constants
alone (Constant, and e.g. the Cast/Mul that dequantise int8 weights) are not
placed anywhere: onnx's Extractor copies them into every stage that needs them,
like the initializers they read. A cut before compute node k carries every
tensor made before k and read at or after k (or a graph output): each becomes
an output of the stage before and an input of the stage after. Nothing is
recomputed. A graph input read after the first stage is forwarded the same way
(an output of each stage in between, passed through unchanged), so the caller
sends the original inputs to stage 1 only; the last stage returns the original
outputs.

Cut points: cuts carrying at most `max_carried` activations. Tiny tensors (a
static shape of at most 16 elements: shapes, sizes) are carried too but do not
count: MiniLM's layer boundaries carry the hidden state, the attention-mask
bias and two shape vectors, i.e. two activations. Forwarded graph inputs count
too, so a decoder fed its KV cache (60 inputs for SmolLM2) has no cut point
below --max-carried 61. A cut carrying a tensor whose rank shape inference
cannot determine is not a cut point.

Costs per stage, at the reference sizes of the dynamic dimensions (`dims`; a
probe run of ONNX Runtime on ones gives every tensor's shape):
params = bytes of the weights its nodes read (a weight two stages read is
copied into both and counted in both); flops = 2*M*N*K for MatMul/Gemm/Conv,
one per output element for anything else; memory = params + the largest single
activation the stage takes or makes (rough: int8 weights dequantised at load
time and the runtime's arena are not counted).

Choice: the N-1 cut points minimising the largest stage cost (DP over cut
points), then, among plans with that maximum, the most even one (least sum of
squared stage costs), then the fewest bytes carried. With `max_memory`, N is the
fewest stages whose memory each fits (greedy, exact since a stage's memory only
grows with its extent), balanced by `by` within the limit.

Entries: `model.onnx` (checked by onnx.checker) plus copies of the parent's
other files (labels, tokenizer, preprocess.json: small, and the first or last
stage needs them), and a manifest naming the parent and its ONNX file's sha256,
the stage's inputs and outputs (names, dtypes, shapes) and its costs.

graph.py analyses the model; partition.py chooses the cuts and writes entries.
"""

from .graph import DEFAULT_DIMS, Graph, SplitError, parse_dims
from .partition import METRICS, Plan, Stage, plan, stage_name, write

__all__ = ["DEFAULT_DIMS", "METRICS", "Graph", "Plan", "SplitError", "Stage", "parse_dims", "plan", "stage_name",
           "write"]
