"""A short fixed-seed slice of bench/fuzz.py: schemathesis against the gateway (OpenFaaS's own spec) and the
runtime (docs/runtime-openapi.yaml) of three real functions; no 5xx and no request without an answer."""

import json

import pytest

from aigc.bench import fuzz

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error_anywhere(tmp_path, model_store):
    targets = (["gateway"] if fuzz.GATEWAY_SPEC.is_file() else []) + list(fuzz.FUNCTIONS)
    rc = fuzz.main(["--max-examples", "8", "--seed", "7", "--targets", ",".join(targets), "--out", str(tmp_path)])
    results = json.loads((tmp_path / "summary.json").read_text())
    cases = {t: sum(r.get("cases", 0) for r in res["operations"].values()) for t, res in results.items()}
    assert all(n > 50 for n in cases.values()), cases  # every target was really exercised
    # and valid cases reached the models: the spec given to schemathesis names what each instance serves
    for target, operation in (("embed", "POST /v1/embeddings"), ("text-generate", "POST /v1/completions")):
        assert results[target]["operations"][operation].get("2xx", 0) > 0, results[target]["operations"][operation]
    assert rc == 0, {t: {op: r for op, r in res["operations"].items() if r.get("5xx") or r.get("no answer")}
                     for t, res in results.items()}


def test_the_runtime_description_is_valid_openapi():
    import schemathesis

    schema = schemathesis.openapi.from_path(fuzz.RUNTIME_SPEC)
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert {"POST /v2/models/{name}/infer", "POST /v1/embeddings", "POST /v1/chat/completions", "POST /"} <= labels
