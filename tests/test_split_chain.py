"""aigc split --functions, end to end: the stages and pipelines it writes, served by `aigc up`, answer as the
unsplit functions do; a stage that is gone makes its pipeline answer 502 naming it, at once.

Everything lives under a tmp folder: a store linking the real efficientnet-lite0 and minilm-l6-int8 entries
(the stages are written beside the links, never into the user's store), a copy of stack.yml holding only
image-classify and embed, copies of their handlers, and the gateway's state. One gateway serves the module.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import requests

from aigc import cli, split, stack
from aigc.bench.gateway import copy_functions
from aigc.runtime import chain, oip_binary
from conftest import REPO, free_port
from gateway_helpers import GatewayProcess
from test_split import link_real

pytestmark = pytest.mark.slow
MODELS = {"image-classify": "efficientnet-lite0", "embed": "minilm-l6-int8"}
STAGES = 3
COFFEE = (REPO / "functions" / "image-classify" / "testdata" / "coffee.jpg").read_bytes()
TEXTS = ["A cat sits on the mat.", "Serverless functions can serve one model in stages, each under its own "
         "memory limit.", "Espresso"]  # of different lengths: the batch is padded, the mask carried
MAX_DIFF = 1e-5


def pipeline(fn: str) -> str:
    return f"{fn}-split-{STAGES}"


def stage(model: str, k: int) -> str:
    return split.stage_name(model, k, STAGES)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split-chain")
    root = tmp / "store"
    root.mkdir()
    for model in MODELS.values():
        link_real(root, model)
    work = tmp / "work"
    copy_functions(MODELS, work)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_MODEL_STORE", str(root))
        mp.delenv("AIGC_MODEL_REMOTE", raising=False)
        for model in MODELS.values():
            assert cli.main(["split", model, "--stages", str(STAGES), "--functions", "--functions-dir",
                             str(work / "functions"), "--stack", str(work / "stack.yml")]) == 0
    port = free_port()
    env = {"AIGC_MODEL_STORE": str(root), "AIGC_MODEL_REMOTE": "", "AIGC_ORT_CACHE": str(tmp / "ort"),
           "AIGC_GATEWAY_URL": f"http://127.0.0.1:{port}"}
    gateway = GatewayProcess(work / "stack.yml", tmp / "state", port=port, env=env)
    try:
        for name in stack.load(work / "stack.yml").functions:
            gateway.wait_for(name, lambda s: s.get("availableReplicas", 0) >= 1, 300, "a ready replica")
        yield gateway
    finally:
        gateway.stop()


def classify(gw, fn: str) -> tuple[dict[int, float], str]:
    resp = requests.post(f"{gw.url}/function/{fn}", params={"top_k": 1000}, data=COFFEE, timeout=60)
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    return {p["index"]: p["score"] for p in predictions}, predictions[0]["label"]


def median_ms(call, runs: int = 10) -> float:
    call()  # warm: connections, first runs
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def test_coffee_is_espresso_through_the_stages_as_unsplit(gw):
    whole, top = classify(gw, "image-classify")
    chained, chained_top = classify(gw, pipeline("image-classify"))
    assert top == chained_top == "espresso"
    diff = max(abs(whole[i] - chained[i]) for i in whole)
    assert set(whole) == set(chained) and diff <= MAX_DIFF
    unsplit = median_ms(lambda: classify(gw, "image-classify"))
    split = median_ms(lambda: classify(gw, pipeline("image-classify")))
    print(f"\nefficientnet-lite0: max |diff| {diff:.2e}; one request (median of 10): unsplit {unsplit:.1f} ms, "
          f"{STAGES} stages {split:.1f} ms")


def test_oip_binary_through_the_pipeline(gw):
    from PIL import Image
    import io

    pixels = np.asarray(Image.open(io.BytesIO(COFFEE)).convert("RGB"))[None]
    body, head = chain.encode_request({"image": pixels})
    got = {}
    for fn in ("image-classify", pipeline("image-classify")):
        resp = requests.post(f"{gw.url}/function/{fn}/v2/models/efficientnet-lite0/infer", data=body, timeout=60,
                             headers={oip_binary.HEADER: str(head), "Content-Type": "application/octet-stream"})
        assert resp.status_code == 200, resp.text
        got[fn] = chain.decode_response(resp.content, resp.headers.get(oip_binary.HEADER))
    whole, chained = got.values()
    assert chained["top_labels"][0, 0] == b"espresso"
    assert float(np.abs(whole["probabilities"] - chained["probabilities"]).max()) <= MAX_DIFF


def test_a_stage_describes_its_tensors_through_the_gateway(gw):
    name = stage("efficientnet-lite0", 2)
    meta = requests.get(f"{gw.url}/function/{name}/v2/models/{name}", timeout=30).json()
    assert [t["datatype"] for t in meta["inputs"]] == ["INT64", "FP32"] and meta["inputs"][1]["shape"][1] == 192


def embed(gw, fn: str) -> np.ndarray:
    resp = requests.post(f"{gw.url}/function/{fn}/v1/embeddings", json={"model": "minilm-l6-int8", "input": TEXTS},
                         timeout=60)
    assert resp.status_code == 200, resp.text
    return np.array([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)


def test_minilm_embeddings_through_the_stages_as_unsplit(gw):
    whole, chained = embed(gw, "embed"), embed(gw, pipeline("embed"))
    assert whole.shape == chained.shape == (3, 384)
    diff = float(np.abs(whole - chained).max())
    assert diff <= MAX_DIFF
    unsplit = median_ms(lambda: embed(gw, "embed"))
    split = median_ms(lambda: embed(gw, pipeline("embed")))
    print(f"\nminilm-l6-int8: max |diff| {diff:.2e}; one request (median of 10): unsplit {unsplit:.1f} ms, "
          f"{STAGES} stages {split:.1f} ms")


@pytest.mark.parametrize("fn, k", [("image-classify", 2), ("embed", 3)])
def test_a_stage_that_is_gone_makes_the_pipeline_answer_502_at_once(gw, fn, k):
    name = stage(MODELS[fn], k)
    requests.delete(f"{gw.url}/system/functions", json={"functionName": name}, auth=gw.auth,
                    timeout=60).raise_for_status()
    started = time.monotonic()
    if fn == "embed":
        resp = requests.post(f"{gw.url}/function/{pipeline(fn)}/v1/embeddings", timeout=30,
                             json={"model": MODELS[fn], "input": TEXTS})
    else:
        resp = requests.post(f"{gw.url}/function/{pipeline(fn)}", data=COFFEE, timeout=30)
    assert time.monotonic() - started < 5
    assert resp.status_code == 502
    assert resp.json()["error"] == f"stage {k} of {STAGES} ({name}): HTTP 404: function {name!r} not found"
    # the unsplit function is untouched
    assert (classify(gw, fn)[1] == "espresso") if fn == "image-classify" else embed(gw, fn).shape == (3, 384)
