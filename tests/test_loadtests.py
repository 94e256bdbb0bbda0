"""The locust suites, run briefly against a real local gateway through `aigc bench`.

Each run starts `aigc up` on a free port and locust in its own process, then
checks the report files and what they say. The echo handler stands in where a
model is not needed; image-classify and embed run for real.
"""

from __future__ import annotations

import csv
import json
import textwrap

import pytest
import yaml

from aigc import cli

from conftest import REPO
from gateway_helpers import write_stack

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def check_reports(out, png: str) -> dict:
    """The files every run writes, with requests and no failures; the summary."""
    stats = {(r["Type"], r["Name"]): r for r in read_csv(out / "locust_stats.csv")}
    total = stats[("", "Aggregated")]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, total
    assert len(read_csv(out / "locust_stats_history.csv")) > 0
    assert "<html" in (out / "locust.html").read_text()[:2000].lower()
    assert (out / png).read_bytes()[:8] == PNG and (out / png).stat().st_size > 10_000
    assert "p50 ms" in (out / "summary.md").read_text()
    return json.loads((out / "summary.json").read_text())


def test_coldstart_suite(tmp_path):
    # loading takes 0.5 s in each new replica (none is forked from a loaded zygote), so a call that really
    # waited for a start cannot look warm
    stack = write_stack(tmp_path / "stack.yml", {"echo": {
        "labels": {"com.openfaas.scale.zero": "true"}, "environment": {"LOAD_SECONDS": "0.5", "NO_FORK": "1"}}})
    out = tmp_path / "cold"
    rc = cli.main(["bench", "coldstart", "echo", "-f", str(stack), "--out", str(out), "--runs", "3", "--warm", "4",
                   "--settle", "1"])
    assert rc == 0
    summary = check_reports(out, "coldstart.png")
    cold, warm = summary["rows"]["cold"], summary["rows"]["warm"]
    assert (cold["n"], warm["n"], cold["failures"], warm["failures"]) == (3, 12, 0, 0)
    samples = read_csv(out / "locust_samples.csv")
    colds = [float(s["ms"]) for s in samples if s["name"] == "cold"]
    warms = [float(s["ms"]) for s in samples if s["name"] == "warm"]
    assert min(colds) > 500 and max(warms) < min(colds)
    assert summary["labels"] == {"com.openfaas.scale.down.window": "2s"}  # the redeploy the report declares
    assert "| cold | 3 | 0 |" in (out / "summary.md").read_text()


def test_scaling_suite_adds_replicas_with_load(tmp_path):
    stack = write_stack(tmp_path / "stack.yml", {"echo": {
        "labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "3", "com.openfaas.scale.target": "1"}}})
    out = tmp_path / "scaling"
    rc = cli.main(["bench", "scaling", "echo", "-f", str(stack), "--out", str(out), "--step-users", "1",
                   "--step-seconds", "4", "--steps", "3", "--down-window", "1s", "--",
                   "--request-path", "/?sleep=0.2"])
    assert rc == 0
    summary = check_reports(out, "scaling.png")
    phases = summary["phases"]
    assert [p["users"] for p in phases] == [1, 2, 3, 2, 1]  # the step shape, up then down
    assert phases[0]["replicas_max"] == 1 and phases[2]["replicas_max"] >= 2, phases
    assert all(p["failures"] == 0 and p["requests"] > 0 for p in phases)
    # 0.2 s calls in a closed loop: each user adds ~5 req/s while replicas keep up
    assert phases[2]["rps"] > 2 * phases[0]["rps"]
    replicas = read_csv(out / "locust_replicas.csv")
    assert {r["function"] for r in replicas} == {"echo"} and max(int(r["replicas"]) for r in replicas) >= 2
    series = read_csv(out / "timeseries.csv")
    assert series and {"rps", "p95_ms", "replicas"} <= set(series[0])


FAKE_LLM = textwrap.dedent('''
    """An OpenAI chat-completions stream with a known pace: one token every 20 ms."""
    import json
    import time

    from flask import Response


    def handle(event, context):
        body = event.json()
        assert body["stream"] is True
        n = int(body.get("max_tokens", 8))

        def events():
            for i in range(n):
                time.sleep(0.02)
                chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
                yield "data: " + json.dumps(chunk) + "\\n\\n"
            yield "data: " + json.dumps({"choices": [], "usage": {"completion_tokens": n}}) + "\\n\\n"
            yield "data: [DONE]\\n\\n"

        return Response(events(), mimetype="text/event-stream")
''')


def test_text_generate_locustfile_reads_the_stream(tmp_path):
    handler = tmp_path / "fake-llm"
    handler.mkdir()
    (handler / "handler.py").write_text(FAKE_LLM)
    stack = write_stack(tmp_path / "stack.yml", {"fake-llm": {"handler": str(handler),
                                                              "labels": {"com.openfaas.scale.min": "1"}}})
    out = tmp_path / "tg"
    rc = cli.main(["bench", "scaling", "fake-llm", "-f", str(stack), "--out", str(out), "--step-users", "2",
                   "--step-seconds", "4", "--steps", "1", "--locustfile", str(REPO / "loadtests" / "text_generate.py"),
                   "--", "--max-tokens", "10"])
    assert rc == 0
    check_reports(out, "scaling.png")
    samples = read_csv(out / "locust_samples.csv")
    by = {}
    for s in samples:
        by.setdefault((s["type"], s["name"]), []).append(float(s["ms"]))
    ttft, rate, calls = by[("SSE", "time to first token")], by[("RATE", "tokens/s per user")], by[("POST", "fake-llm")]
    assert len(ttft) == len(rate) == len(calls) > 5
    rate.sort()
    assert 25 < rate[len(rate) // 2] < 55  # 9 tokens after the first, 20 ms apart: ~50 tokens/s
    assert min(ttft) >= 20
    assert min(calls) >= 200  # a call is timed to data: [DONE], ten 20 ms tokens, not to the headers
    assert all(s["ok"] == "1" for s in samples)


@pytest.mark.skipif("text-generate" not in yaml.safe_load((REPO / "stack.yml").read_text())["functions"],
                    reason="text-generate is not in stack.yml")
def test_text_generate_streams_for_real(tmp_path, model_store):
    out = tmp_path / "tg"
    rc = cli.main(["bench", "scaling", "text-generate", "-f", str(_repo_function(tmp_path, "text-generate")),
                   "--out", str(out), "--step-users", "1", "--step-seconds", "6", "--steps", "1", "--",
                   "--max-tokens", "8"])
    assert rc == 0
    check_reports(out, "scaling.png")
    stats = {(r["Type"], r["Name"]): r for r in read_csv(out / "locust_stats.csv")}
    assert int(stats[("SSE", "time to first token")]["Request Count"]) > 0
    assert float(stats[("RATE", "tokens/s per user")]["Median Response Time"]) > 0


def _repo_function(tmp_path, name: str):
    """The function exactly as stack.yml has it, alone in a stack (the others need not start)."""
    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    spec = doc["functions"][name]
    spec["handler"] = str((REPO / spec["handler"]).resolve())
    doc["functions"] = {name: spec}
    path = tmp_path / "stack.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_image_classify_coldstart(tmp_path, model_store):
    out = tmp_path / "cold"
    rc = cli.main(["bench", "coldstart", "image-classify", "-f", str(_repo_function(tmp_path, "image-classify")),
                   "--out", str(out), "--runs", "2", "--warm", "3", "--settle", "1"])
    assert rc == 0
    summary = check_reports(out, "coldstart.png")
    assert summary["rows"]["cold"]["n"] == 2 and summary["rows"]["warm"]["n"] == 6
    assert summary["rows"]["warm"]["p50"] < summary["rows"]["cold"]["p50"]


def test_embed_under_load(tmp_path, model_store):
    out = tmp_path / "embed"
    rc = cli.main(["bench", "scaling", "embed", "-f", str(_repo_function(tmp_path, "embed")), "--out", str(out),
                   "--step-users", "2", "--step-seconds", "4", "--steps", "1", "--", "--batch", "2"])
    assert rc == 0
    summary = check_reports(out, "scaling.png")
    assert summary["totals"]["embed"]["n"] > 10 and summary["totals"]["embed"]["failures"] == 0


@pytest.mark.parametrize("function, custom", [("speech", "time to first audio"), ("image-generate", "images/s per user")])
def test_generative_functions_under_load(tmp_path, model_store, function, custom):
    out = tmp_path / function
    rc = cli.main(["bench", "scaling", function, "-f", str(_repo_function(tmp_path, function)), "--out", str(out),
                   "--step-users", "1", "--step-seconds", "4", "--steps", "1"])
    assert rc == 0
    summary = check_reports(out, "scaling.png")
    assert summary["totals"][function]["n"] >= 2 and summary["totals"][function]["failures"] == 0
    stats = {r["Name"]: r for r in read_csv(out / "locust_stats.csv")}
    assert int(stats[custom]["Request Count"]) >= 2 and float(stats[custom]["Median Response Time"]) > 0
