"""Scheduled invocations with the cron-connector's annotations: parsing, once per tick, once after downtime."""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from aigc import stack
from aigc.gateway import cron, deploy
from aigc.gateway.core import Gateway, Options
from aigc.gateway.cron import Schedule, ScheduleError
from aigc.gateway.pool import FunctionPool

from conftest import REPO
from gateway_helpers import GatewayProcess, write_stack

UTC = timezone.utc


def brute_next(schedule: Schedule, after: datetime) -> datetime:
    """Minute by minute, the way cron itself checks (5-field schedules only)."""
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while True:
        day_ok = (t.day in schedule.days, (t.isoweekday() % 7) in schedule.weekdays)
        day = all(day_ok) if schedule.any_day or schedule.any_weekday else any(day_ok)
        if t.month in schedule.months and day and t.hour in schedule.hours and t.minute in schedule.minutes:
            return t
        t += timedelta(minutes=1)


@pytest.mark.parametrize("text", ["*/5 * * * *", "0 9 * * mon-fri", "30 2 * jan,jul *", "0 12 13 * fri",
                                  "15,45 */6 1-7 * *", "@hourly", "0 0 * * 7", "5/20 3-5 * * *"])
def test_next_tick_matches_checking_every_minute(text):
    schedule = Schedule.parse(text)
    rng = random.Random(text)
    for _ in range(20):
        after = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(400 * 86400))
        assert schedule.next_after(after) == brute_next(schedule, after), after


def test_seconds_field_and_descriptors():
    t = datetime(2026, 11, 29, 15, 43, 7, tzinfo=UTC)
    assert Schedule.parse("*/2 * * * * *").next_after(t) == t.replace(second=8)
    assert Schedule.parse("@daily").next_after(t) == datetime(2026, 11, 30, tzinfo=UTC)
    assert Schedule.parse("0 0 29 2 *").next_after(t) == datetime(2028, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize("text,fragment", [("", "empty"), ("* * *", "5 fields"), ("61 * * * *", "outside 0-59"),
                                           ("0 0 30 2 *", "never fires"), ("*/0 * * * *", "step"),
                                           ("x * * * *", "minute 'x'"), ("0 25 * * *", "hour")])
def test_bad_schedules_say_what_is_wrong(text, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        Schedule.parse(text)


def test_only_the_cron_function_topic_schedules():
    assert cron.schedule_of({"schedule": "* * * * *"}) is None
    assert cron.schedule_of({"topic": "cron-function", "schedule": "* * * * *"}).text == "* * * * *"
    with pytest.raises(ScheduleError, match="needs a 'schedule'"):
        cron.schedule_of({"topic": "cron-function"})


def _gateway(state_dir, schedule: str) -> Gateway:
    """A gateway whose one function is scheduled; no replica ever starts, only the queue is watched."""
    fn = stack.StackFunction(name="tick", lang="aigc-onnx", handler=REPO / "tests" / "handlers" / "echo",
                             image="localhost/tick:test", annotations={"topic": "cron-function", "schedule": schedule})
    gw = Gateway(stack.Stack(REPO / "stack.yml", "", {"tick": fn}), Options(state_dir=state_dir, root=REPO))
    gw.pools["tick"] = FunctionPool(deploy.from_stack(fn), start=None, log_dir=state_dir, session=None,
                                    ready_timeout=1)
    return gw


def _queued(state_dir) -> list[str]:
    with sqlite3.connect(state_dir / "queue.sqlite") as db:
        return [r[0] for r in db.execute("SELECT call_id FROM calls ORDER BY call_id")]


def test_each_tick_once_and_a_tick_missed_while_down_runs_once_after_restart(tmp_path):
    t0 = datetime(2026, 11, 29, 12, 0, 30, tzinfo=UTC).timestamp()
    gw = _gateway(tmp_path, "* * * * *")
    assert gw.run_schedules(t0) == []  # a new schedule starts now: no tick from before it existed
    assert gw.next_run("tick") == "2026-11-29T12:01:00Z"
    assert gw.run_schedules(t0 + 29) == []
    first = gw.run_schedules(t0 + 31)  # 12:01:01
    assert first == [cron.call_id("tick", datetime(2026, 11, 29, 12, 1, tzinfo=UTC))]
    assert gw.run_schedules(t0 + 35) == [] and gw.run_schedules(t0 + 80) == []  # 12:01:50: same minute
    gw.queue.close()

    # down from 12:01:50 to 12:05:10: the ticks at 12:02 … 12:05 fell while it was down
    gw = _gateway(tmp_path, "* * * * *")
    late = gw.run_schedules(t0 + 280)
    assert late == [cron.call_id("tick", datetime(2026, 11, 29, 12, 2, tzinfo=UTC))]  # one run, not four
    assert gw.run_schedules(t0 + 281) == []
    gw.queue.close()
    gw = _gateway(tmp_path, "* * * * *")  # and a second restart in the same minute runs nothing again
    assert gw.run_schedules(t0 + 285) == []
    assert gw.next_run("tick") == "2026-11-29T12:06:00Z"
    gw.queue.close()
    assert _queued(tmp_path) == sorted(first + late)


def test_the_status_shows_the_next_run_and_the_last_ticks_outcome(tmp_path):
    t0 = datetime(2026, 11, 29, 12, 0, 30, tzinfo=UTC).timestamp()
    gw = _gateway(tmp_path, "* * * * *")
    gw.run_schedules(t0)
    assert gw.schedule_annotations("tick") == {deploy.NEXT_RUN: "2026-11-29T12:01:00Z"}  # nothing ran yet
    (call_id,) = gw.run_schedules(t0 + 31)
    shown = gw.schedule_annotations("tick")
    assert shown[deploy.LAST_STATUS] == "queued" and shown[deploy.NEXT_RUN] == "2026-11-29T12:02:00Z"
    gw.queue.finish(call_id, "done", 200, 0.1)
    assert gw.schedule_annotations("tick")[deploy.LAST_STATUS] == "200"
    gw.queue.close()


def test_a_changed_schedule_starts_afresh(tmp_path):
    t0 = datetime(2026, 11, 29, 12, 0, 30, tzinfo=UTC).timestamp()
    gw = _gateway(tmp_path, "* * * * *")
    gw.run_schedules(t0)
    gw.queue.close()
    gw = _gateway(tmp_path, "0 * * * *")  # redeployed hourly; the minutes missed under the old one do not run
    assert gw.run_schedules(t0 + 600) == []
    assert gw.next_run("tick") == "2026-11-29T13:00:00Z"
    gw.queue.close()


def _ticks(state_dir) -> list[int]:
    with sqlite3.connect(state_dir / "queue.sqlite") as db:
        rows = db.execute("SELECT call_id, state FROM calls WHERE call_id LIKE 'cron-tick-%'").fetchall()
    return sorted(int(call_id.rsplit("-", 1)[1]) for call_id, state in rows)


@pytest.mark.slow
def test_a_real_gateway_runs_every_tick_once_and_a_missed_one_once_after_restart(tmp_path):
    stack_file = write_stack(tmp_path / "stack.yml", {"tick": {"labels": {"com.openfaas.scale.min": "1"}}})
    doc = stack_file.read_text().replace("labels:", "annotations:\n      topic: cron-function\n"
                                         "      schedule: '*/2 * * * * *'\n    labels:", 1)
    stack_file.write_text(doc)
    state = tmp_path / "state"
    gw = GatewayProcess(stack_file, state)
    try:
        status = gw.wait_for("tick", lambda s: s["availableReplicas"] >= 1, 60, "ready")
        assert status["annotations"]["com.aigc-functions.schedule.next-run"].endswith("Z")
        time.sleep(7)
        status = gw.status("tick")
        assert status["invocationCount"] >= 2
    finally:
        gw.stop()
    running = _ticks(state)
    assert running and all(b - a == 2 for a, b in zip(running, running[1:])), running  # every tick, once
    time.sleep(5)  # two or three ticks fall while it is down
    restarted = time.time()
    gw = GatewayProcess(stack_file, state, port=gw.port)
    try:
        gw.wait_for("tick", lambda s: s["invocationCount"] >= 1, 60, "the missed tick to run")
        time.sleep(3)
        log = requests.get(gw.url + "/system/logs", params={"name": "tick"}, auth=gw.auth, timeout=10)
        assert log.status_code == 200
    finally:
        gw.stop()
    ticks = _ticks(state)
    missed = [t for t in ticks if running[-1] < t <= restarted]
    assert len(missed) == 1, (running, ticks, restarted)  # once, not once per missed tick
    assert len(ticks) == len(set(ticks))
