"""aigc split --functions, fast: the generic stage model, the chain client against real stage apps, and the
handler folders, stack.yml entries and Knative Services the CLI writes.

The stage apps are the runtime's own Flask app (aigc.runtime.app) serving StageModel, behind an in-process
stand-in for the gateway (/function/<name>/... dispatched by werkzeug) on a real socket, so the chain speaks
HTTP as in a deployment. Entries come from the small model of test_split.py in a store under tmp_path.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
import types

import numpy as np
import onnxruntime as ort
import pytest
import requests
import yaml
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

from aigc import buildctx, cli, knative, split, stack
from aigc.bench import stackedit
from aigc.runtime import chain, errors, oip_binary, store
from aigc.runtime.app import create_app
from aigc.runtime.config import Settings
from aigc.runtime.onnx_stage import StageModel
from conftest import REPO
from test_split import SMALL_FEEDS, add_entry, small_model

STAGES = [f"small--stage-{k}-of-3" for k in (1, 2, 3)]
# a stack with one function serving the whole model, as image-classify serves efficientnet-lite0
STACK = """version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080

functions:
  # the whole model
  small-fn:
    lang: aigc-onnx
    handler: ./functions/small-fn
    image: ${REGISTRY:-localhost}/small-fn:0.1.0
    build_args:
      AIGC_MODELS: small
    environment:
      MODEL_NAME: small
      exec_timeout: 20s
      max_inflight: "4"
    labels:
      com.openfaas.scale.min: "1"
      com.openfaas.scale.zero: "true"
    requests:
      memory: 256Mi
    limits:
      memory: 512Mi
      cpu: "1"
"""


def stage_app(entry: str):
    module = types.ModuleType(f"stage_{entry}")
    module.model = StageModel(entry)
    return create_app(module, Settings(exec_timeout=10), load=True)


def not_found(environ, start_response):
    name = environ.get("PATH_INFO", "").split("/")[2:3]
    start_response("404 Not Found", [("Content-Type", "application/json")])
    return [f'{{"error": "function {name[0] if name else ""!r} not found"}}'.encode()]


@pytest.fixture
def gateway():
    """/function/<name>/… to the app mounted under that name, as the gateway routes it; 404 otherwise."""
    dispatcher = DispatcherMiddleware(not_found)
    server = make_server("127.0.0.1", 0, dispatcher, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gw = types.SimpleNamespace(url=f"http://127.0.0.1:{server.port}",
                               mount=lambda name, app: dispatcher.mounts.__setitem__(f"/function/{name}", app))
    yield gw
    server.shutdown()
    thread.join(5)


@pytest.fixture
def stages(tmp_store, gateway, monkeypatch):
    """The small model in 3 stages, each served by its own app under its entry's name."""
    monkeypatch.setenv("AIGC_ORT_CACHE", "off")  # the tmp store's graphs must not fill the user's cache
    parent = add_entry(tmp_store, "small", small_model())
    split.write(split.plan("small", stages=3))
    for entry in STAGES:
        gateway.mount(entry, stage_app(entry))
    return parent


def whole(parent, feeds):
    s = ort.InferenceSession(str(parent.file("model.onnx")), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def test_stage_model_describes_and_runs_its_entry(stages, gateway):
    meta = requests.get(f"{gateway.url}/function/{STAGES[1]}/v2/models/{STAGES[1]}", timeout=10).json()
    manifest = store.open_model(STAGES[1]).manifest["stage"]
    assert meta["name"] == STAGES[1] and meta["platform"] == "onnxruntime_onnx"
    assert [t["name"] for t in meta["inputs"]] == [t["name"] for t in manifest["inputs"]]
    assert [t["name"] for t in meta["outputs"]] == [t["name"] for t in manifest["outputs"]]
    assert "bias" in [t["name"] for t in meta["outputs"]]  # passed on to the stage that reads it
    assert {t["datatype"] for t in meta["inputs"]} == {"FP32"} and all(t["shape"][0] == -1 for t in meta["inputs"])
    # JSON in and out works too: the binary extension is what the chain asks for, not all a stage speaks
    body = {"inputs": [{"name": name, "datatype": "FP32", "shape": list(value.shape),
                        "data": value.reshape(-1).tolist()} for name, value in SMALL_FEEDS.items()]}
    out = requests.post(f"{gateway.url}/function/{STAGES[0]}/v2/models/{STAGES[0]}/infer", json=body, timeout=10)
    assert out.status_code == 200 and out.headers["Content-Type"] == "application/json"
    assert [o["name"] for o in out.json()["outputs"]] == [t["name"] for t in meta["inputs"]]


def test_chain_gives_the_whole_models_outputs_as_binary_tensors(stages, gateway):
    c = chain.Chain(chain.parse(",".join(STAGES), gateway.url), exec_timeout=10)
    (y,) = c.run(None, SMALL_FEEDS)
    assert float(np.abs(y - whole(stages, SMALL_FEEDS)[0]).max()) <= 1e-5
    assert c.run(["y"], SMALL_FEEDS)[0].shape == (2, 4)
    # what travels between stages: the binary extension both ways
    body, head = chain.encode_request(SMALL_FEEDS)
    resp = requests.post(f"{gateway.url}/function/{STAGES[0]}/v2/models/{STAGES[0]}/infer", data=body, timeout=10,
                         headers={oip_binary.HEADER: str(head), "Content-Type": "application/octet-stream"})
    assert resp.headers["Content-Type"] == "application/octet-stream"
    outputs = chain.decode_response(resp.content, resp.headers[oip_binary.HEADER])
    assert list(outputs) == [t["name"] for t in store.open_model(STAGES[0]).manifest["stage"]["outputs"]]
    assert np.array_equal(outputs["bias"], SMALL_FEEDS["bias"])


def test_a_written_handler_serves_its_stage(tmp_store, gateway, tmp_path, monkeypatch):
    """The three-line handler the CLI writes, imported as the template imports it."""
    monkeypatch.setenv("AIGC_ORT_CACHE", "off")
    parent = add_entry(tmp_store, "small", small_model())
    (tmp_path / "stack.yml").write_text(STACK)
    assert cli.main(["split", "small", "--stages", "3", "--functions", "--functions-dir", str(tmp_path / "fns"),
                     "--stack", str(tmp_path / "stack.yml")]) == 0
    path = tmp_path / "fns" / STAGES[2] / "handler.py"
    assert len([line for line in path.read_text().splitlines() if line and not line.startswith('"""')]) == 2
    spec = importlib.util.spec_from_file_location("written_stage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gateway.mount(STAGES[0], stage_app(STAGES[0]))
    gateway.mount(STAGES[1], stage_app(STAGES[1]))
    gateway.mount("renamed", create_app(module, Settings(exec_timeout=10), load=True))
    c = chain.Chain(chain.parse(f"{STAGES[0]},{STAGES[1]},renamed={STAGES[2]}", gateway.url), exec_timeout=10)
    assert float(np.abs(c.run(None, SMALL_FEEDS)[0] - whole(parent, SMALL_FEEDS)[0]).max()) <= 1e-5
    # the handler_test.py beside it, as the image's test stage runs it: in the build context
    context = buildctx.assemble(stack.load(tmp_path / "stack.yml").functions[STAGES[1]], REPO, tmp_path / "build")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "function"], cwd=context,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def failing(stages, gateway, spec: str, **kwargs) -> errors.AigcError:
    c = chain.Chain(chain.parse(spec, gateway.url), **{"exec_timeout": 10, **kwargs})
    with pytest.raises(errors.AigcError) as caught:
        c.run(None, SMALL_FEEDS)
    return caught.value


def test_a_stage_that_is_gone_is_502_naming_it(stages, gateway):
    exc = failing(stages, gateway, f"{STAGES[0]},gone={STAGES[1]},{STAGES[2]}")
    assert exc.status == 502
    assert exc.message == "stage 2 of 3 (gone): HTTP 404: function 'gone' not found"


def test_a_gateway_that_is_down_is_502_at_once(stages):
    down = types.SimpleNamespace(url="http://127.0.0.1:9")  # discard: nothing listens
    started = time.monotonic()
    exc = failing(stages, down, ",".join(STAGES))
    assert exc.status == 502 and exc.message.startswith(f"stage 1 of 3 ({STAGES[0]}): cannot reach "
                                                        f"http://127.0.0.1:9/function/{STAGES[0]}/v2/models/")
    assert time.monotonic() - started < 2


def test_a_stage_that_cannot_load_is_503(stages, gateway):
    gateway.mount("broken", stage_app("small--stage-9-of-9"))
    exc = failing(stages, gateway, f"{STAGES[0]},broken=small--stage-9-of-9")
    assert exc.status == 503
    assert exc.message.startswith("stage 2 of 2 (broken): HTTP 503: model 'small--stage-9-of-9' failed to load")


def test_a_slow_stage_is_504_within_the_pipelines_timeout(stages, gateway):
    def slow(environ, start_response):
        time.sleep(3)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    gateway.mount("slow", slow)
    started = time.monotonic()
    exc = failing(stages, gateway, f"{STAGES[0]},slow", exec_timeout=1.0)
    assert exc.status == 504 and exc.message.startswith("stage 2 of 2 (slow): no answer within")
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("answer, fragment", [
    (b"hello", "its answer is not OIP tensors: malformed JSON"),
    (b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1]}]}',
     "its answer is not OIP tensors: input 'y': shape [2] needs 2 values, got 1"),
    (b'{"outputs": [{"name": "y", "datatype": "FP99", "shape": [1], "data": [1]}]}',
     "its answer is not OIP tensors: an output is malformed: unknown OIP datatype 'FP99'"),
])
def test_a_stage_answering_garbage_is_502(stages, gateway, answer, fragment):
    def odd(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [answer]

    gateway.mount("odd", odd)
    exc = failing(stages, gateway, "odd")
    assert exc.status == 502 and exc.message.startswith(f"stage 1 of 1 (odd): {fragment}")


def test_an_answer_past_the_bound_is_not_read(stages, gateway):
    exc = failing(stages, gateway, ",".join(STAGES), max_bytes=100)
    assert exc.status == 502 and "answered" in exc.message and "more than the 100 bytes" in exc.message
    assert exc.message.startswith(f"stage 1 of 3 ({STAGES[0]}): ")


def test_chain_settings_are_checked():
    stages = chain.parse("a,b=model-b", "https://gw.example:8443/base/")
    assert [(s.function, s.model, s.host, s.port, s.path) for s in stages] == [
        ("a", "a", "gw.example", 8443, "/base/function/a/v2/models/a/infer"),
        ("b", "model-b", "gw.example", 8443, "/base/function/b/v2/models/model-b/infer")]
    knative_style = chain.parse("s1", "http://{name}.default.svc.cluster.local")
    assert (knative_style[0].host, knative_style[0].port, knative_style[0].path) == \
        ("s1.default.svc.cluster.local", 80, "/v2/models/s1/infer")
    for spec, gw, fragment in ((" , ", chain.DEFAULT_GATEWAY, "is empty"), ("a/b", chain.DEFAULT_GATEWAY, "'a/b'"),
                               ("a=..", chain.DEFAULT_GATEWAY, "model '..'"), ("a", "ftp://x", "use http")):
        with pytest.raises(ValueError, match=fragment):
            chain.parse(spec, gw)
    with pytest.raises(ValueError, match="AIGC_ENGINE=chain needs AIGC_CHAIN"):
        chain.from_env({})
    made = chain.from_env({"AIGC_CHAIN": "a,b", "exec_timeout": "7s", "AIGC_CHAIN_MAX_BYTES": "1Mi"})
    assert (made.exec_timeout, made.max_bytes, made.stages[0].port) == (7.0, 1 << 20, 8080)


# --- the CLI: handler folders, stack.yml entries, Knative Services ----------------------------------------------

def split_functions(tmp_path, *extra) -> int:
    # functions are the default: `aigc split MODEL --stages N` then `aigc up` serves the chain
    return cli.main(["split", "small", "--stages", "2", "--functions-dir", str(tmp_path / "functions"),
                     "--stack", str(tmp_path / "stack.yml"), *extra])


def test_cli_writes_stage_functions_and_the_pipeline(tmp_store, tmp_path, capsys):
    add_entry(tmp_store, "small", small_model())
    (tmp_path / "stack.yml").write_text(STACK)
    assert split_functions(tmp_path) == 0
    out = capsys.readouterr().out
    names = ["small--stage-1-of-2", "small--stage-2-of-2", "small-fn-split-2"]
    assert f"added {', '.join(names)}" in out
    text = (tmp_path / "stack.yml").read_text()
    assert text.startswith(STACK) and "# small in 2 stages and its pipeline" in text  # the file's own text kept
    st = stack.load(tmp_path / "stack.yml")
    for k, name in enumerate(names[:2], 1):
        fn = st.functions[name]
        assert fn.handler == (tmp_path / "functions" / name).resolve() and fn.lang == "aigc-onnx"
        assert f'StageModel("{name}")' in (fn.handler / "handler.py").read_text()
        assert fn.build_args == {"AIGC_MODELS": name}
        assert fn.environment == {"exec_timeout": "20s", "max_inflight": "4", "AIGC_MAX_BODY_SIZE": "64Mi"}
        assert fn.labels["com.openfaas.scale.min"] == "1" and fn.labels["com.openfaas.scale.zero"] == "true"
        assert fn.limits == {"memory": "224Mi", "cpu": "1"} and fn.requests == {"memory": "224Mi"}
    pipeline = st.functions["small-fn-split-2"]
    assert pipeline.handler == st.functions["small-fn"].handler and pipeline.limits == st.functions["small-fn"].limits
    assert pipeline.environment["AIGC_ENGINE"] == "chain" and pipeline.environment["MODEL_NAME"] == "small"
    assert pipeline.environment["AIGC_CHAIN"] == "small--stage-1-of-2,small--stage-2-of-2"
    assert pipeline.environment["AIGC_GATEWAY_URL"] == "http://127.0.0.1:8080"  # ${AIGC_GATEWAY_URL:-…} expanded
    for name in names:
        for delivery in knative.DELIVERIES:
            manifest = yaml.safe_load(knative.path_of(tmp_path / "knative", st.functions[name], delivery).read_text())
            assert knative.check(manifest) == [] and manifest["metadata"]["name"] == name
    assert not (tmp_path / "knative" / "small-fn.yaml").exists()  # only the new functions' Services

    assert split_functions(tmp_path) == 0  # again: nothing to change
    assert f"already has {', '.join(names)}" in capsys.readouterr().out
    assert (tmp_path / "stack.yml").read_text() == text


def test_cli_refuses_to_replace_what_differs(tmp_store, tmp_path, capsys):
    add_entry(tmp_store, "small", small_model())
    (tmp_path / "stack.yml").write_text(STACK)
    assert split_functions(tmp_path) == 0
    stackedit.write_label(tmp_path / "stack.yml", "small--stage-2-of-2", "com.openfaas.scale.max", "9")
    edited = (tmp_path / "stack.yml").read_text()
    assert split_functions(tmp_path) == 2
    assert "already has different function(s) small--stage-2-of-2; --force replaces them" in capsys.readouterr().err
    assert (tmp_path / "stack.yml").read_text() == edited
    handler = tmp_path / "functions" / "small--stage-1-of-2" / "handler.py"
    handler.write_text("# mine\n")
    assert split_functions(tmp_path, "--force") == 0
    assert "StageModel" in handler.read_text()
    assert stack.load(tmp_path / "stack.yml").functions["small--stage-2-of-2"].labels["com.openfaas.scale.max"] == "4"
    handler.write_text("# mine\n")
    assert split_functions(tmp_path) == 2
    assert "handler.py already exist(s) with other content" in capsys.readouterr().err


def test_cli_without_a_function_for_the_model_writes_stages_only(tmp_store, tmp_path, capsys):
    add_entry(tmp_store, "small", small_model())
    (tmp_path / "stack.yml").write_text(STACK.replace("AIGC_MODELS: small", "AIGC_MODELS: other"))
    assert split_functions(tmp_path) == 0
    assert "stages only, no pipeline" in capsys.readouterr().out
    assert set(stack.load(tmp_path / "stack.yml").functions) == {"small-fn", "small--stage-1-of-2",
                                                                "small--stage-2-of-2"}
    assert split_functions(tmp_path, "--pipeline-of", "nope") == 2
    assert "--pipeline-of 'nope': no such function" in capsys.readouterr().err
