"""Adaptive keep-alive: the windows learned from idle times, the decision they drive, and the replayed trace on
which the adaptive policy must beat the fixed 10-minute timeout."""

from __future__ import annotations

import json
import random

import pytest

from aigc import cli
from aigc.bench import policy as replay
from aigc.gateway.keepalive import MIN_SAMPLES, IdleHistogram, Windows
from aigc.gateway.policy import Load, Policy, PolicyError, decide


def histogram_of(idle_seconds) -> IdleHistogram:
    h = IdleHistogram()
    for s in idle_seconds:
        h.add(s)
    return h


def test_a_periodic_function_is_prewarmed_just_before_its_period():
    rng = random.Random(1)
    w = histogram_of(900 + rng.uniform(-5, 5) for _ in range(40)).windows(600)
    assert w.learned and 12 * 60 <= w.prewarm <= 15 * 60 and w.unload_after >= 16 * 60 and w.keepalive <= 10 * 60


def test_thin_spread_or_out_of_range_histograms_keep_the_fixed_timeout():
    assert histogram_of([900] * (MIN_SAMPLES - 1)).windows(600) == Windows(0.0, 600, False)
    rng = random.Random(2)
    poisson = histogram_of(rng.expovariate(1 / 1800) for _ in range(200))  # memoryless: nothing to predict
    assert not poisson.windows(600).learned
    assert not histogram_of([6 * 3600] * 20).windows(600).learned  # beyond the 4-hour range


def test_busy_functions_get_a_short_keepalive_and_no_prewarm():
    w = histogram_of([5] * 50).windows(600)
    assert w.learned and w.prewarm == 0 and 60 <= w.keepalive <= 90


def test_decide_unloads_during_prewarm_and_loads_for_the_window():
    p = Policy(min=1, zero=True, zero_duration=600, keepalive="adaptive")
    w = Windows(prewarm=780.0, keepalive=240.0, learned=True)
    load = lambda idle: Load(replicas=1, demand=0, idle_seconds=idle, low_seconds=idle, windows=w)  # noqa: E731
    assert decide(p, load(10)) == 0 and decide(p, load(800)) == 1 and decide(p, load(1100)) == 0
    assert decide(Policy(min=1, zero=True, zero_duration=600), Load(1, 0, 10, 10)) == 1  # fixed: kept 10 min


def test_an_unknown_keepalive_label_is_refused():
    assert Policy.from_labels({"com.aigc.keepalive": "adaptive"}).keepalive == "adaptive"
    with pytest.raises(PolicyError, match="com.aigc.keepalive='sometimes': use one of fixed, adaptive"):
        Policy.from_labels({"com.aigc.keepalive": "sometimes"})


def test_on_the_replayed_trace_adaptive_beats_the_fixed_ten_minutes(tmp_path):
    for seed in (1, 2):
        results = {r.policy: r for r in replay.replay(replay.synthetic(200, 24, seed))}
        adaptive, fixed = results["adaptive"], results["fixed 10 min"]
        assert adaptive.cold < fixed.cold and adaptive.idle_gb_seconds <= fixed.idle_gb_seconds, (seed, adaptive, fixed)


def test_the_simulated_pool_counts_colds_and_idle_memory():
    fn = replay.Function("f", "periodic", [0.0, 300.0, 900.0], memory_gb=1.0, duration=1.0)
    cold, idle = replay.simulate(fn, lambda h: Windows(0.0, 600.0, False))
    # call 0 cold; call at 300 warm (299 s idle); call at 900: 599 s after 301 -> warm (599 s idle); then 600 s
    assert cold == 1 and idle == pytest.approx(299 + 599 + 600)


def test_the_azure_csv_is_read_and_bad_rows_are_named(tmp_path):
    good = tmp_path / "invocations.csv"
    good.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2,3\no,a,f1,timer,1,0,2\no,a,f2,http,0,0,0\n")
    functions = replay.load_azure(good)
    assert [len(f.starts) for f in functions] == [3, 0] and functions[0].starts == [30.0, 135.0, 165.0]
    for text, fragment in (("a,b\n", "header"), ("HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,t,x\n", ":2:"),
                           ("HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,t,1,2\n", "columns"),
                           ("HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,t,-1\n", "negative")):
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(replay.TraceError, match=fragment):
            replay.load_azure(bad)


def test_aigc_bench_policy_writes_the_table_and_the_pareto_plot(tmp_path, capsys):
    assert cli.main(["bench", "policy", "--functions", "50", "--hours", "6", "--out", str(tmp_path)]) == 0
    assert "| adaptive |" in capsys.readouterr().out
    assert (tmp_path / "policy-pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fixed 10 min" in (tmp_path / "policy.md").read_text()
    assert cli.main(["bench", "policy", "--mix", json.dumps({"cron": 1}), "--out", str(tmp_path)]) == 2
    assert cli.main(["bench", "policy", "--trace", str(tmp_path / "none.csv"), "--out", str(tmp_path)]) == 2


def test_a_finer_bin_learns_the_same_windows_in_compressed_time():
    minute = histogram_of(900 + d for d in (-3, -1, 0, 2, 4) * 8).windows(600)
    second = IdleHistogram(bin_seconds=1.0)
    for d in (-3, -1, 0, 2, 4) * 8:
        second.add((900 + d) / 60)
    compressed = second.windows(10)
    assert compressed.learned and compressed.prewarm == pytest.approx(minute.prewarm / 60)
    assert compressed.keepalive == pytest.approx(minute.keepalive / 60)


def test_aigc_bench_policy_live_refuses_a_window_too_long_for_a_replay(tmp_path, capsys):
    assert cli.main(["bench", "policy", "--live", "--functions", "400", "--out", str(tmp_path)]) == 2
    assert "at most 50 functions" in capsys.readouterr().out


@pytest.mark.slow
def test_the_live_replay_meters_what_the_simulation_predicts(tmp_path):
    from aigc.bench.policy_live import run_live

    # a 16-minute period outlives the 10-minute timeout: every call is cold; calls 4 minutes apart stay warm.
    # At 60x the margins are seconds, more than a first replica takes to start on a busy machine.
    trace = [replay.Function("late", "periodic", [0.0, 960.0, 1920.0], 1.0, 1.0),
             replay.Function("near", "steady", [0.0, 240.0, 480.0], 1.0, 1.0)]
    text, errors = run_live(trace, speedup=60, log_dir=tmp_path)
    assert not errors, errors
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()[2:]}
    for policy in ("fixed 10 min", "adaptive"):
        calls, gateway_cold, simulated_cold = rows[policy][1:4]
        assert calls == "6" and gateway_cold.startswith("4 ") and simulated_cold.startswith("4 "), text
        gateway_idle, simulated_idle = float(rows[policy][4]), float(rows[policy][5].strip(" |"))
        assert abs(gateway_idle - simulated_idle) <= 0.25 * simulated_idle, text
