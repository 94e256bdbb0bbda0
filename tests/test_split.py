"""aigc split: stage entries run in order give what the unsplit model gives; plans, limits and errors.

Stages are written to a store under tmp_path (AIGC_MODEL_STORE); the real store's entries are only read,
through a link, so the user's store is never written.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from aigc import cli, split
from aigc.runtime import fastpath, images, store

REAL_STORE = store.store_root()  # read before any test points AIGC_MODEL_STORE elsewhere
MAX_DIFF = 1e-5


def link_real(root, name):
    if not (REAL_STORE / name / store.MANIFEST).is_file():
        pytest.skip(f"{name} is not in the model store at {REAL_STORE}; build it with `aigc models build {name}`")
    (root / name).symlink_to(REAL_STORE / name)
    return store.open_model(name, root)


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_chain(stages: list[store.StoredModel], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the later chain will do: each stage's outputs, by name, are the next one's inputs."""
    values = feeds
    for stage in stages:
        s = session(stage.file("model.onnx"))
        outputs = s.run(None, {i.name: values[i.name] for i in s.get_inputs()})
        values = dict(zip((o.name for o in s.get_outputs()), outputs))
    return values


def check_split(parent: store.StoredModel, p: split.Plan, feeds: dict[str, np.ndarray]) -> list[store.StoredModel]:
    stages = split.write(p)
    n = len(p.stages)
    assert [s.name for s in stages] == [f"{parent.name}--stage-{k}-of-{n}" for k in range(1, n + 1)]
    full = session(parent.file("model.onnx"))
    expected = dict(zip((o.name for o in full.get_outputs()), full.run(None, feeds)))
    got = run_chain(stages, feeds)
    assert set(got) == set(expected)
    for name, value in expected.items():
        diff = float(np.abs(value - got[name]).max())
        assert diff <= MAX_DIFF, f"{parent.name} in {n} stages by {p.by}: {name} differs by {diff:.2e}"
    for k, stage in enumerate(stages, 1):
        m = stage.manifest
        assert stage.verify() == []
        assert m["parent"] == {"name": parent.name, "file": "model.onnx",
                               "sha256": parent.manifest["files"]["model.onnx"]["sha256"]}
        assert (m["stage"]["index"], m["stage"]["of"], m["task"]) == (k, n, parent.manifest.get("task"))
        s = session(stage.file("model.onnx"))
        assert [i["name"] for i in m["stage"]["inputs"]] == [i.name for i in s.get_inputs()]
        assert [o["name"] for o in m["stage"]["outputs"]] == [o.name for o in s.get_outputs()]
        assert set(parent.manifest["files"]) - {"model.onnx"} <= set(m["files"])  # labels, tokenizer…
    assert [i["name"] for i in stages[0].manifest["stage"]["inputs"]] == list(feeds)
    assert [o["name"] for o in stages[-1].manifest["stage"]["outputs"]] == list(expected)
    return stages


# --- the real models ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cat_image():
    import skimage.data

    return skimage.data.chelsea()


@pytest.mark.parametrize("stages,by", [(2, "params"), (3, "flops"), (4, "memory")])
def test_efficientnet_stages_match_the_whole_model(tmp_store, cat_image, stages, by):
    parent = link_real(tmp_store, "efficientnet-lite0")
    spec = json.loads(parent.file("preprocess.json").read_text())
    # 224x337: the stages keep height and width dynamic, though the plan's shapes are at 224x224
    chw = images.classifier_input(cat_image, spec["resize_shorter"], spec["max_longer"], spec["mean"], spec["std"])
    p = split.plan("efficientnet-lite0", stages=stages, by=by)
    assert len(p.graph.cuts) >= 50
    check_split(parent, p, {"input": chw[None]})


@pytest.mark.parametrize("stages,by", [(2, "flops"), (3, "params"), (4, "memory")])
def test_minilm_stages_match_the_whole_model(tmp_store, stages, by):
    parent = link_real(tmp_store, "minilm-l6-int8")
    tokenizer = fastpath.TextTokenizer(parent.file("tokenizer.json"))
    ids = tokenizer.encode_batch(["A cat sits on the mat.", "Serverless functions can run one model in stages."])
    input_ids = np.zeros((len(ids), max(map(len, ids))), np.int64)
    mask = np.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
    p = split.plan("minilm-l6-int8", stages=stages, by=by)
    feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
    check_split(parent, p, feeds)


# --- a small model built here, so something real always runs --------------------------------------------------

def small_model(batch="batch") -> onnx.ModelProto:
    """Conv, Conv, MatMul, MatMul with int8 weights dequantised by constant nodes, a weight read by the first and
    the last node, and a graph input (`bias`) read only by the last node."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 8, 3, 3), weight("m1", 8, 16),
             numpy_helper.from_array(rng.integers(-127, 127, (16, 4)).astype(np.int8), "q2"),
             numpy_helper.from_array(np.array(1.5, np.float32), "alpha")]
    nodes = [
        helper.make_node("Constant", [], ["q2_scale"], value=numpy_helper.from_array(np.array(0.01, np.float32))),
        helper.make_node("Cast", ["q2"], ["q2_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["q2_float", "q2_scale"], ["m2"]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Mul", ["c1", "alpha"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "m1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "m2"], ["h2"]),
        helper.make_node("Mul", ["h2", "alpha"], ["s"]),
        helper.make_node("Add", ["s", "bias"], ["y"], name="add_bias"),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8]),
                         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def add_entry(root, name: str, model: onnx.ModelProto | None = None, files: dict[str, bytes] | None = None,
              fmt: str = "onnx") -> store.StoredModel:
    """A store entry as the builders write one."""
    folder = root / name
    folder.mkdir()
    if model is not None:
        onnx.save(model, str(folder / "model.onnx"))
    for rel, data in (files or {}).items():
        (folder / rel).write_bytes(data)
    store.write_manifest(folder, {"name": name, "task": "test", "format": fmt, "sources": []})
    return store.open_model(name, root)


SMALL_FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32),
               "bias": np.arange(8, dtype=np.float32).reshape(2, 4)}


@pytest.mark.parametrize("by", split.METRICS)
def test_small_model_stages_match_and_forward_inputs(tmp_store, by):
    parent = add_entry(tmp_store, "small", small_model(), {"labels.json": b"[]\n"})
    for n in (2, 3, 4):
        p = split.plan("small", stages=n, by=by)
        assert len(p.graph.nodes) == 12 and len(p.graph.cuts) == 11  # the dequantising nodes are not cut
        stages = check_split(parent, p, SMALL_FEEDS)
        # `bias` is read by the last node only: every stage before passes it on
        assert all("bias" in [o["name"] for o in s.manifest["stage"]["outputs"]] for s in stages[:-1])
        assert "bias" in [i["name"] for i in stages[-1].manifest["stage"]["inputs"]]
        # a weight is in every stage that reads it (alpha: compute nodes 1 and 10), and so are the constant nodes
        # that dequantise q2 for node 9
        for planned, stage in zip(p.stages, stages):
            model = onnx.load(str(stage.file("model.onnx")))
            weights = {t.name for t in model.graph.initializer}
            nodes = range(planned.start, planned.stop)
            assert ("alpha" in weights) == (1 in nodes or 10 in nodes)
            assert ("q2" in weights) == ("Constant" in {node.op_type for node in model.graph.node}) == (9 in nodes)
        assert sum(9 in range(s.start, s.stop) for s in p.stages) == 1


def test_plan_balances_and_reports(tmp_store):
    add_entry(tmp_store, "small", small_model())
    p = split.plan("small", stages=2, by="params")
    whole = split.plan("small", stages=1, by="params").stages[0]
    assert max(s.params for s in p.stages) < whole.params
    assert sum(s.flops for s in p.stages) == whole.flops  # each compute node is in exactly one stage
    assert p.graph.node_flops[0] == 2 * (1 * 8 * 8 * 8) * (3 * 3 * 3)  # 2 * outputs * in channels * kernel
    lines = p.lines()
    assert lines[0].startswith("small: 12 compute nodes, 11 cut points")
    assert "reference dims: batch=1" in lines[0]
    assert any(line.startswith("stage 2/2 small--stage-2-of-2: nodes ") for line in lines)
    assert any("carries: " in line and "bias float32[1,4]" in line for line in lines)


def test_max_memory_takes_the_fewest_stages_that_fit(tmp_store):
    add_entry(tmp_store, "small", small_model())
    limit = 5 << 10  # the whole model needs ~5.7 KiB (3.7 of weights), conv2 alone ~4.3
    p = split.plan("small", max_memory=limit, by="flops")
    assert len(p.stages) >= 2 and all(s.memory <= limit for s in p.stages)
    fewer = split.plan("small", stages=len(p.stages) - 1, by="memory")
    assert max(s.memory for s in fewer.stages) > limit
    with pytest.raises(split.SplitError, match=r"node 3 \(Conv 'conv2'\) alone needs ~4.2 KiB .* raise the limit"):
        split.plan("small", max_memory=4 << 10)


def test_errors_say_what_to_fix(tmp_store):
    add_entry(tmp_store, "small", small_model())
    with pytest.raises(split.SplitError, match=r"small has 11 cut points, so at most 12 stages, not 20"):
        split.plan("small", stages=20)
    # `bias` crosses every cut, beside the activation
    with pytest.raises(split.SplitError, match="0 cut points, so at most 1 stage, .* 11 carry more than 1 activations "
                                               r"\(raise --max-carried\)"):
        split.plan("small", stages=2, max_carried=1)
    add_entry(tmp_store, "weights-only", files={"model.gguf": b"GGUF"}, fmt="gguf")
    with pytest.raises(split.SplitError, match="'weights-only' is a gguf entry with no model.onnx"):
        split.plan("weights-only", stages=2)
    with pytest.raises(split.SplitError, match="'nope' is not in the store"):
        split.plan("nope", stages=2)
    with pytest.raises(split.SplitError, match="at least 1 stage"):
        split.plan("small", stages=0)
    add_entry(tmp_store, "frames", small_model(batch="frames"))
    with pytest.raises(split.SplitError, match="dynamic dimension 'frames' .* --dim frames=SIZE"):
        split.plan("frames", stages=2)
    assert split.plan("frames", stages=2, dims=split.parse_dims(["frames=3"])).graph.reference_dims == {"frames": 3}
    with pytest.raises(split.SplitError, match="NAME=SIZE"):
        split.parse_dims(["frames"])


def test_a_tensor_without_an_inferred_rank_is_named(tmp_store):
    """An op shape inference knows nothing of: the cut after it cannot be typed, so it is no cut point."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mystery", ["a"], ["b"], domain="test.split"),
         helper.make_node("Relu", ["b"], ["y"])],
        "mystery", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("test.split", 1)],
                              ir_version=8)
    add_entry(tmp_store, "mystery", model)
    assert split.plan("mystery", stages=2).stages[0].outputs == ["a"]
    with pytest.raises(split.SplitError, match="at most 2 stages.*no rank: b "):
        split.plan("mystery", stages=3)


def test_cli(tmp_store, capsys):
    add_entry(tmp_store, "small", small_model())
    assert cli.main(["split", "small", "--stages", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage 2/2 small--stage-2-of-2" in out and out.rstrip().endswith("dry run: no entries written")
    assert not (tmp_store / "small--stage-1-of-2").exists()
    assert cli.main(["split", "small", "--max-memory", "5Ki", "--by", "flops", "--entries-only"]) == 0
    out = capsys.readouterr().out
    written = [line.split()[1] for line in out.splitlines() if line.startswith("wrote ")]
    assert len(written) >= 2 and all((tmp_store / name / store.MANIFEST).is_file() for name in written)
    assert cli.main(["split", "small", "--stages", "99"]) == 2
    assert "aigc: small has 11 cut points, so at most 12 stages" in capsys.readouterr().err
    assert cli.main(["split", "small", "--max-memory", "lots"]) == 2
    assert "not a size: 'lots'" in capsys.readouterr().err
