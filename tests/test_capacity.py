"""Capacity-aware scaling: a CPU-bound function is held at its replicas while the cores are full, says why,
and scales as before when holding is off or the function only waits."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from aigc.gateway import capacity
from aigc.gateway.core import gateway_limits
from aigc.gateway.policy import Load, Policy, decide
from gateway_helpers import GatewayProcess, gateway_events, write_stack

POLICY = Policy(min=1, max=4, target=1)


def test_a_full_machine_holds_scale_up_but_not_scale_from_zero_min_or_a_manual_scale():
    assert decide(POLICY, Load(replicas=1, demand=4, idle_seconds=0, low_seconds=0)) == 4
    assert decide(POLICY, Load(replicas=1, demand=4, idle_seconds=0, low_seconds=0, cpu_full=True)) == 1
    assert decide(POLICY, Load(replicas=2, demand=4, idle_seconds=0, low_seconds=0, cpu_full=True)) == 2
    zero = Policy(min=0, max=4, target=1, zero=True)
    assert decide(zero, Load(replicas=0, demand=3, idle_seconds=0, low_seconds=0, cpu_full=True)) == 3
    assert decide(Policy(min=3, max=4, target=1), Load(replicas=1, demand=4, idle_seconds=0, low_seconds=0,
                                                      cpu_full=True)) == 3
    assert decide(POLICY, Load(replicas=1, demand=1, idle_seconds=0, low_seconds=0, floor=3, immediate=True,
                               cpu_full=True)) == 3
    # holding never stops scale-down
    assert decide(POLICY, Load(replicas=3, demand=0, idle_seconds=0, low_seconds=60, cpu_full=True)) == 1


def test_only_cpu_bound_functions_are_held_and_only_when_the_cores_are_full():
    window = {"classify": (1.8, 1.0), "pipeline": (0.1, 2.0), "idle": (0.0, 0.0), "rare": (0.1, 0.1)}
    assert capacity.holds(1.5, 2.0, window) == {}  # 75% busy: not full
    assert capacity.holds(None, 2.0, window) == {}  # no reading yet
    held = capacity.holds(1.95, 2.0, window)
    assert set(held) == {"classify"}  # the pipeline waits, idle and rare say too little
    assert "98% busy" in held["classify"].reason() and "1.8 cores" in held["classify"].reason()


def test_busy_cores_come_from_the_cpus_we_may_use(tmp_path):
    stat = tmp_path / "stat"

    def write(cpu0, cpu1):  # user nice system idle iowait irq softirq steal guest guest_nice
        stat.write_text(f"cpu  {cpu0[0] + cpu1[0]} 0 0 {cpu0[1] + cpu1[1]} 0 0 0 0 0 0\n"
                        f"cpu0 {cpu0[0]} 0 0 {cpu0[1]} 0 0 0 0 0 0\ncpu1 {cpu1[0]} 0 0 {cpu1[1]} 0 0 0 0 0 0\n"
                        "intr 1 2 3\nctxt 4\n")

    write((100, 100), (100, 100))
    clock = capacity.CpuClock({0, 1}, str(stat))
    assert clock.busy_cores() is None
    write((200, 100), (150, 150))  # cpu0 fully busy, cpu1 half
    assert clock.busy_cores() == pytest.approx(1.5)
    only0 = capacity.CpuClock({0}, str(stat))
    only0.busy_cores()
    write((300, 100), (150, 250))
    assert only0.busy_cores() == pytest.approx(1.0)  # cpu1 idled: not ours


@pytest.mark.parametrize("env, fragment", [({"AIGC_CPU_BUDGET": "0"}, "0.1 to 1024"),
                                           ({"AIGC_CPU_BUDGET": "two"}, "e.g. 2, 1.5 or 1500m"),
                                           ({"AIGC_CPU_AWARE": "maybe"}, "on or off")])
def test_bad_capacity_settings_are_refused_with_the_variable_named(env, fragment):
    with pytest.raises(ValueError, match=fragment) as caught:
        gateway_limits(env)
    assert next(iter(env)) in str(caught.value)


def test_capacity_settings_parse():
    assert gateway_limits({"AIGC_CPU_BUDGET": "1500m", "AIGC_CPU_AWARE": "off"})["cpu_budget"] == 1.5
    assert gateway_limits({})["cpu_aware"] is True


SPINNER = {"spin": {"labels": {"com.openfaas.scale.min": "1", "com.openfaas.scale.max": "4",
                               "com.openfaas.scale.target": "1"}}}


def _load_and_watch(gw, seconds: float) -> int:
    """One CPU-bound call first (so a sample sees the full core), then three more beside it; the most
    replicas seen meanwhile."""
    errors: list[str] = []

    def call():
        resp = requests.post(gw.url + "/function/spin?spin=1.5", data=b"x", auth=gw.auth, timeout=60)
        if resp.status_code != 200:
            errors.append(f"{resp.status_code} {resp.text}")

    def caller(until):
        while time.monotonic() < until:
            call()

    until = time.monotonic() + seconds
    threads = [threading.Thread(target=caller, args=(until,))]
    threads[0].start()
    time.sleep(1.0)
    threads += [threading.Thread(target=caller, args=(until,)) for _ in range(3)]
    for t in threads[1:]:
        t.start()
    most = 0
    while any(t.is_alive() for t in threads):
        most = max(most, gw.status("spin")["replicas"])
        time.sleep(0.1)
    assert not errors, errors
    return most


@pytest.mark.slow
def test_a_cpu_bound_function_is_held_while_the_cores_are_full_and_says_why(tmp_path):
    # a budget of half a core: one spinning request fills it, however many cores this machine has
    env = {"AIGC_METER_INTERVAL": "200ms", "AIGC_CPU_BUDGET": "500m"}
    gw = GatewayProcess(write_stack(tmp_path / "stack.yml", SPINNER), tmp_path / "state", env=env)
    try:
        gw.wait_for("spin", lambda s: s["availableReplicas"] == 1, 60, "ready")
        assert _load_and_watch(gw, 6) == 1
        events = gateway_events(gw, "spin")
        assert any("holding at 1 replica (the load asks for 4)" in e and "cores are" in e for e in events), events
        report = requests.get(gw.url + "/system/metering/spin", auth=gw.auth, timeout=10).json()["capacity"]
        assert report["cpu_aware"] is True and report["budget_cores"] == 0.5
        metrics = requests.get(gw.url + "/metrics", auth=gw.auth, timeout=10).text
        assert "gateway_function_replicas_held{" in metrics and "gateway_cpu_busy_cores " in metrics
    finally:
        gw.stop()


@pytest.mark.slow
def test_with_holding_off_the_same_load_scales_out(tmp_path):
    env = {"AIGC_METER_INTERVAL": "200ms", "AIGC_CPU_BUDGET": "500m", "AIGC_CPU_AWARE": "off"}
    gw = GatewayProcess(write_stack(tmp_path / "stack.yml", SPINNER), tmp_path / "state", env=env)
    try:
        gw.wait_for("spin", lambda s: s["availableReplicas"] == 1, 60, "ready")
        assert _load_and_watch(gw, 4) > 1
        assert not any("holding" in e for e in gateway_events(gw, "spin"))
    finally:
        gw.stop()
