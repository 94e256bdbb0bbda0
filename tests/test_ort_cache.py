"""The cache of ONNX Runtime's optimized graphs: reused, keyed by the model file, never fatal."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aigc.runtime import ort as aort


def write_conv_model(path, seed: int) -> None:
    """A small conv net (conv -> relu -> pool), the shape ORT's layout optimizations rewrite."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])], [weights, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def run(sess) -> np.ndarray:
    x = np.linspace(-1, 1, 3 * 16 * 16, dtype=np.float32).reshape(1, 3, 16, 16)
    return sess.run(None, {"x": x})[0]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "ort-cache"
    monkeypatch.setenv(aort.CACHE_ENV, str(folder))
    return folder


def test_second_session_starts_from_the_cached_graph(tmp_path, cache):
    model = tmp_path / "tiny" / "model.onnx"
    model.parent.mkdir()
    write_conv_model(model, seed=1)
    first = aort.session(model)
    files = list(cache.iterdir())
    assert [f.name.startswith("tiny-model-") and f.suffix == ".onnx" for f in files] == [True]
    second = aort.session(model)
    assert second._model_path == str(files[0])
    np.testing.assert_allclose(run(second), run(first), rtol=1e-6, atol=1e-6)


def test_a_changed_model_file_is_not_served_from_the_old_graph(tmp_path, cache):
    model = tmp_path / "model.onnx"
    write_conv_model(model, seed=1)
    old = run(aort.session(model))
    write_conv_model(model, seed=2)
    fresh = run(aort.session(model))
    assert not np.allclose(old, fresh)
    np.testing.assert_allclose(run(aort.session(model)), fresh, rtol=1e-6, atol=1e-6)
    assert len(list(cache.iterdir())) == 2


def test_a_damaged_cache_file_is_replaced(tmp_path, cache):
    model = tmp_path / "model.onnx"
    write_conv_model(model, seed=3)
    expected = run(aort.session(model))
    [cached] = cache.iterdir()
    cached.write_bytes(b"not an onnx graph")
    np.testing.assert_allclose(run(aort.session(model)), expected, rtol=1e-6, atol=1e-6)
    assert cached.stat().st_size > 1000
    assert aort.session(model)._model_path == str(cached)


def test_cache_off_and_unwritable_cache_still_give_sessions(tmp_path, monkeypatch):
    model = tmp_path / "model.onnx"
    write_conv_model(model, seed=4)
    monkeypatch.setenv(aort.CACHE_ENV, "off")
    assert aort.session(model)._model_path == str(model)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(aort.CACHE_ENV, str(blocker / "cache"))  # mkdir fails: a file is in the way
    assert aort.session(model)._model_path == str(model)


def test_a_broken_model_still_reports_its_own_error(tmp_path, cache):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"this is not a protobuf")
    with pytest.raises(Exception, match="(?i)protobuf|load model"):
        aort.session(model)
    assert not cache.exists() or list(cache.iterdir()) == []  # no partial file left behind
