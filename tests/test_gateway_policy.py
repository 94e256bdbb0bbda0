"""The scaling decision, as a pure function of labels and load."""

import pytest

from aigc.gateway.policy import Load, Policy, PolicyError, decide


def test_labels_parse_with_openfaas_defaults():
    assert Policy.from_labels({}) == Policy(min=1, max=20, zero=False, zero_duration=900, target=50, down_window=30)
    p = Policy.from_labels({"com.openfaas.scale.min": "0", "com.openfaas.scale.max": "3",
                            "com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "2m",
                            "com.openfaas.scale.target": "2", "com.openfaas.scale.down.window": "5s"})
    assert (p.min, p.max, p.zero, p.zero_duration, p.target, p.down_window) == (0, 3, True, 120, 2, 5)


@pytest.mark.parametrize("labels", [{"com.openfaas.scale.min": "3", "com.openfaas.scale.max": "2"},
                                    {"com.openfaas.scale.target": "0"}, {"com.openfaas.scale.zero": "maybe"},
                                    {"com.openfaas.scale.zero-duration": "soon"}, {"com.openfaas.scale.max": "x"}])
def test_bad_labels_are_refused_with_the_label_named(labels):
    with pytest.raises(PolicyError, match="scale"):
        Policy.from_labels(labels)


ZERO = Policy(min=1, max=4, zero=True, zero_duration=10, target=2, down_window=5)


def test_scale_from_zero_on_first_request_and_stay_at_zero_otherwise():
    assert decide(ZERO, Load(replicas=0, demand=0, idle_seconds=1e9, low_seconds=0)) == 0
    assert decide(ZERO, Load(replicas=0, demand=1, idle_seconds=0, low_seconds=0)) == 1


def test_a_new_deployment_starts_its_min_replicas_even_with_scale_to_zero():
    """OpenFaaS deploys min replicas (so `faas-cli ready` works) and idles to zero later."""
    just_deployed = Load(replicas=0, demand=0, idle_seconds=0, low_seconds=0)
    assert decide(ZERO, just_deployed) == 1
    assert decide(Policy(min=2, max=4, zero=True, zero_duration=10), just_deployed) == 2
    just_deployed.idle_seconds = 10
    assert decide(ZERO, just_deployed) == 0


def test_scale_up_by_target_never_above_max():
    assert decide(ZERO, Load(replicas=1, demand=5, idle_seconds=0, low_seconds=0)) == 3
    assert decide(ZERO, Load(replicas=3, demand=50, idle_seconds=0, low_seconds=0)) == 4


def test_scale_down_only_after_the_window_and_not_below_min():
    busy_then_quiet = Load(replicas=3, demand=1, idle_seconds=0, low_seconds=2)
    assert decide(ZERO, busy_then_quiet) == 3
    busy_then_quiet.low_seconds = 6
    assert decide(ZERO, busy_then_quiet) == 1


def test_scale_to_zero_after_idle_duration_only_when_zero_is_true():
    idle = Load(replicas=1, demand=0, idle_seconds=11, low_seconds=11)
    assert decide(ZERO, idle) == 0
    assert decide(Policy(min=1, zero=False), idle) == 1
    idle.idle_seconds = 9
    assert decide(ZERO, idle) == 1


def test_manual_scale_holds_and_blocks_idling_to_zero():
    manual = Load(replicas=2, demand=0, idle_seconds=1e9, low_seconds=1e9, floor=2)
    assert decide(ZERO, manual) == 2
    manual.floor = 9
    assert decide(ZERO, manual) == 4
    manual.floor = 0
    assert decide(Policy(min=1, zero=False), manual) == 0


def test_a_manual_scale_down_applies_at_once():
    assert decide(ZERO, Load(replicas=3, demand=0, idle_seconds=0, low_seconds=0, floor=1, immediate=True)) == 1
    assert decide(ZERO, Load(replicas=3, demand=0, idle_seconds=0, low_seconds=0, floor=1)) == 3


def test_scale_down_sizes_for_the_windows_peak_not_the_current_dip():
    dip = Load(replicas=4, demand=1, idle_seconds=0, low_seconds=6, peak_demand=5)
    assert decide(ZERO, dip) == 3  # ceil(5 / target 2), not ceil(1 / 2)
    dip.peak_demand = 1
    assert decide(ZERO, dip) == 1


@pytest.mark.parametrize("labels, fragment", [
    ({"com.openfaas.scale.max": "1000000"}, "AIGC_MAX_REPLICAS"),   # finding 12: 200 processes on 2 cores
    ({"com.openfaas.scale.target": "0.000001"}, "1 to 10000"),
    ({"com.openfaas.scale.zero-duration": "0s"}, "at least 1s")])
def test_labels_cannot_ask_for_more_than_the_machine_was_given(labels, fragment):
    with pytest.raises(PolicyError, match=fragment):
        Policy.from_labels(labels, max_replicas=20)
    assert Policy.from_labels({}, max_replicas=6).max == 6  # the default max never exceeds the gateway's
