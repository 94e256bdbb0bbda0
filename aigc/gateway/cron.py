"""Scheduled invocations, with OpenFaaS cron-connector's annotations: `topic: cron-function`, `schedule: CRON`.

Schedules are standard 5-field cron expressions (minute hour day-of-month
month day-of-week, in UTC as the cron-connector's container runs them), with
`*`, lists, ranges, steps, month/day names and the @hourly-style
descriptors; a 6th leading field of seconds is accepted too (as robfig/cron's
seconds option) for schedules below a minute.

Each tick becomes an async call in the durable queue, so it is retried and
kept like any other. The queue's database also records, per function, up to
which instant its ticks are handled; the call and that record are written in
one transaction, with a call id made from the tick's time. So a tick that fell
while the gateway was down runs once after the restart (however many were
missed: they collapse into one run), and never twice.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

TOPIC = "cron-function"
MAX_YEARS = 5  # a schedule with no tick within this (e.g. 30 February) is refused
_NAMES = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10,
          "nov": 11, "dec": 12, "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_ITEM = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(\d+))?$")


class ScheduleError(ValueError):
    pass


def _field(text: str, low: int, high: int, what: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.lower().split(","):
        found = _ITEM.fullmatch(item)
        if not found:
            raise ScheduleError(f"{what} {item!r} is not a number, range, list or step")
        span, step = found.group(1), int(found.group(2) or 1)
        if step < 1:
            raise ScheduleError(f"{what} step must be at least 1")
        if span == "*":
            start, end = low, high
        else:
            bounds = [_NAMES.get(v, v) for v in span.split("-")]
            try:
                start, end = int(bounds[0]), int(bounds[-1])
            except ValueError:
                raise ScheduleError(f"{what} {span!r} is not a number or name") from None
            if len(bounds) == 1 and found.group(2):
                end = high  # "5/15": from 5 on, every 15
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise ScheduleError(f"{what} {item!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        if not isinstance(text, str) or not text.strip():
            raise ScheduleError("schedule is empty; use a cron expression such as '*/5 * * * *'")
        fields = _DESCRIPTORS.get(text.strip().lower(), text).split()
        if len(fields) == 5:
            fields = ["0"] + fields
        if len(fields) != 6:
            raise ScheduleError(f"schedule {text!r} needs 5 fields (minute hour day month weekday), "
                                "or 6 with seconds first")
        seconds, minutes = _field(fields[0], 0, 59, "second"), _field(fields[1], 0, 59, "minute")
        hours, days = _field(fields[2], 0, 23, "hour"), _field(fields[3], 1, 31, "day of month")
        months, weekdays = _field(fields[4], 1, 12, "month"), _field(fields[5], 0, 7, "weekday")
        schedule = cls(text=text, seconds=seconds, minutes=minutes, hours=hours, days=days, months=months,
                       weekdays=frozenset(d % 7 for d in weekdays),  # 7 is Sunday too
                       any_day=fields[3] == "*", any_weekday=fields[5] == "*")
        schedule.next_after(datetime(2000, 1, 1, tzinfo=timezone.utc))  # refuses one that never fires
        return schedule

    def _day_matches(self, t: datetime) -> bool:
        in_month = t.day in self.days
        in_week = (t.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron's rule: both restricted means either may match
            return in_month and in_week
        return in_month or in_week

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after `after` (UTC), found field by field, not second by second."""
        t = after.astimezone(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + MAX_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ScheduleError(f"schedule {self.text!r} never fires (no tick within {MAX_YEARS} years)")


def schedule_of(annotations: dict[str, str]) -> Schedule | None:
    """The function's schedule if its annotations ask the cron-connector for one; ScheduleError if malformed."""
    if annotations.get("topic") != TOPIC:
        return None
    if "schedule" not in annotations:
        raise ScheduleError(f"annotation topic={TOPIC} needs a 'schedule' annotation, e.g. '*/5 * * * *'")
    return Schedule.parse(annotations["schedule"])


def call_id(function: str, tick: datetime) -> str:
    return f"cron-{function}-{calendar.timegm(tick.utctimetuple())}"


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
