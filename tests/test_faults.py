"""Fault injection (aigc/bench/faults.py), each scenario once: kill -9 of a replica and of the gateway, a full
disk, callback receivers that are down or redirect, a locked queue database, 32 slow uploads beside normal calls."""

import pytest

from aigc.bench import faults

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(faults.SCENARIOS))
def test_fault(name, tmp_path):
    row = faults.SCENARIOS[name](tmp_path)
    # the whole outcome as a message: pytest shortens a dict's repr, and the cut part says which check failed
    assert row["ok"], f"{row['scenario']}: {row['outcome']} | {row['figure']}"
