"""Durable async invocations (POST /async-function/NAME), as OpenFaaS's queue-worker does them.

Every accepted call is committed to SQLite before the 202 is sent, so it
survives a gateway crash. Delivery is at least once: a call that was running
when the gateway died runs again after restart, with the same X-Call-Id, so a
callback receiver can de-duplicate on it.

Bounds: each function may have at most `max_calls` calls and `max_bytes` of
bodies waiting (then 429); finished calls are deleted after `retention`
seconds. The database is 0600 (SQLite gives its WAL the same mode) and never
holds credential headers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id      TEXT PRIMARY KEY,
    function     TEXT NOT NULL,
    path         TEXT NOT NULL,
    query        TEXT NOT NULL,
    headers      TEXT NOT NULL,
    body         BLOB NOT NULL,
    callback_url TEXT,
    state        TEXT NOT NULL,      -- queued | running | done | failed | cancelled
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    created      REAL NOT NULL,
    status       INTEGER,
    duration     REAL,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS calls_due ON calls (state, next_at);
CREATE TABLE IF NOT EXISTS schedules (  -- cron.py: per function, ticks up to `handled` are queued
    function     TEXT PRIMARY KEY,
    schedule     TEXT NOT NULL,
    handled      REAL NOT NULL
);
"""


@dataclass
class Call:
    call_id: str
    function: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    callback_url: str | None
    attempts: int


class QueueFull(Exception):
    """The function's share of the queue is used up; the message says by what."""


class DuplicateCall(Exception):
    pass


class QueueUnavailable(Exception):
    """The database cannot take the call now; `status` is 507 (no space left) or 503 (locked, or failing)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def unavailable(exc: sqlite3.Error) -> QueueUnavailable:
    text = str(exc).lower()
    if "full" in text or "no space" in text:
        return QueueUnavailable(507, "the gateway's disk is full: the call was not accepted; free space under "
                                     "$AIGC_STATE_DIR and retry")
    if "locked" in text or "busy" in text:
        return QueueUnavailable(503, "the queue's database is locked by another process; retry shortly")
    return QueueUnavailable(503, f"the queue's database failed ({exc}); the call was not accepted")


class Queue:
    def __init__(self, path: Path, max_calls: int = 1000, max_bytes: int = 256 << 20,
                 retention: float = 24 * 3600.0):
        self.max_calls, self.max_bytes, self.retention = max_calls, max_bytes, retention
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)  # also a file an older version left 0644
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")  # another process holding a lock: wait, then 503
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a 202 means the call is on disk
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        # calls that were running when the gateway stopped run again (at least once)
        self._db.execute("UPDATE calls SET state='queued' WHERE state='running'")

    def put(self, call_id: str, function: str, path: str, query: str, headers: dict[str, str], body: bytes,
            callback_url: str | None) -> None:
        now = time.time()
        with self._lock:
            count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM calls "
                                           "WHERE function=? AND state IN ('queued', 'running')",
                                           (function,)).fetchone()
            if count + 1 > self.max_calls or size + len(body) > self.max_bytes:
                raise QueueFull(f"the queue for {function!r} is full ({count} calls, {size} bytes waiting; at most "
                                f"{self.max_calls} calls and {self.max_bytes} bytes): retry later")
            try:
                self._db.execute("INSERT INTO calls (call_id, function, path, query, headers, body, callback_url, "
                                 "state, next_at, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                                 (call_id, function, path, query, json.dumps(headers), body, callback_url, now, now))
            except sqlite3.IntegrityError:
                raise DuplicateCall(f"a call with X-Call-Id {call_id!r} was accepted already") from None
            except sqlite3.OperationalError as exc:
                raise unavailable(exc) from None

    def purge(self, now: float | None = None) -> int:
        """Delete finished calls older than the retention; returns how many."""
        cutoff = (now or time.time()) - self.retention
        with self._lock:
            cur = self._db.execute("DELETE FROM calls WHERE state IN ('done', 'failed', 'cancelled') AND created < ?",
                                   (cutoff,))
            if cur.rowcount:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # give the space back, not just mark it free
        return cur.rowcount

    def handled(self, function: str, schedule: str, now: float) -> float:
        """Up to when the function's ticks are queued. A new function, or a changed schedule, starts
        from `now`: ticks from before it was scheduled are not run."""
        with self._lock:
            row = self._db.execute("SELECT schedule, handled FROM schedules WHERE function=?",
                                   (function,)).fetchone()
            if row is not None and row[0] == schedule:
                return row[1]
            self._db.execute("INSERT OR REPLACE INTO schedules (function, schedule, handled) VALUES (?, ?, ?)",
                             (function, schedule, now))
            return now

    def put_tick(self, call_id: str, function: str, handled: float) -> bool:
        """Queue one scheduled call and move `handled` in one transaction (so never twice, never lost).
        False if that tick's call was queued before."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO calls (call_id, function, path, query, headers, body, callback_url, "
                    "state, next_at, created) VALUES (?, ?, '/', '', '{}', x'', NULL, 'queued', ?, ?)",
                    (call_id, function, now, now))
                self._db.execute("UPDATE schedules SET handled=? WHERE function=?", (handled, function))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def last_tick(self, function: str) -> tuple[float, str, int | None] | None:
        """The latest scheduled call of a function (created, state, status), while the queue keeps it."""
        with self._lock:
            row = self._db.execute("SELECT created, state, status FROM calls WHERE function=? AND call_id LIKE ? "
                                   "ORDER BY created DESC LIMIT 1", (function, f"cron-{function}-%")).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def forget_schedule(self, function: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM schedules WHERE function=?", (function,))

    def claim(self) -> Call | None:
        """The oldest due call, marked running, or None."""
        with self._lock:
            row = self._db.execute("SELECT call_id, function, path, query, headers, body, callback_url, attempts "
                                   "FROM calls WHERE state='queued' AND next_at <= ? ORDER BY created LIMIT 1",
                                   (time.time(),)).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE calls SET state='running', attempts=attempts+1 WHERE call_id=?", (row[0],))
        return Call(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7] + 1)

    def finish(self, call_id: str, state: str, status: int | None, duration: float | None, error: str = "") -> None:
        with self._lock:
            self._db.execute("UPDATE calls SET state=?, status=?, duration=?, error=? WHERE call_id=?",
                             (state, status, duration, error, call_id))

    def retry(self, call_id: str, delay: float, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE calls SET state='queued', next_at=?, error=? WHERE call_id=?",
                             (time.time() + delay, error, call_id))

    def cancel(self, call_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE calls SET state='cancelled' WHERE call_id=? AND state='queued'", (call_id,))
            return cur.rowcount == 1

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls WHERE state IN ('queued', 'running')").fetchone()[0]

    def state(self, call_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM calls WHERE call_id=?", (call_id,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._db.close()
