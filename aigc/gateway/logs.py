"""Replica logs for `GET /system/logs`: per function, timestamped, bounded, and followable.

Each replica's stdout and stderr come through a pipe that a reader thread
drains line by line into the replica's log file (as before) and into this
book, stamped with the time the gateway received the line. Each function
keeps its most recent lines up to a byte cap; followers get new lines through
bounded asyncio queues, and one that cannot keep up loses lines rather than
slowing the replica.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO

log = logging.getLogger("aigc.gateway")

MAX_BYTES = 1 << 20       # kept per function
MAX_FILE = 16 << 20       # each replica's log file, before it is rotated to FILE.1
MAX_LINE = 16 << 10       # a longer line is cut
FOLLOW_BUFFER = 1000      # lines waiting for a slow follower


@dataclass(frozen=True)
class Line:
    seconds: float
    instance: str
    text: str

    def entry(self, function: str, namespace: str) -> dict[str, str]:
        """OpenFaaS's LogEntry."""
        stamp = datetime.fromtimestamp(self.seconds, timezone.utc).isoformat(timespec="microseconds")
        return {"name": function, "namespace": namespace, "instance": self.instance,
                "timestamp": stamp.replace("+00:00", "Z"), "text": self.text}


class LogBook:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._lines: dict[str, collections.deque[Line]] = {}
        self._bytes: dict[str, int] = {}
        self._followers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}
        self._lock = threading.Lock()

    def add(self, function: str, instance: str, text: str) -> None:
        """Called from reader threads."""
        line = Line(time.time(), instance, text[:MAX_LINE])
        with self._lock:
            lines = self._lines.setdefault(function, collections.deque())
            lines.append(line)
            self._bytes[function] = self._bytes.get(function, 0) + len(line.text)
            while self._bytes[function] > self.max_bytes and len(lines) > 1:
                self._bytes[function] -= len(lines.popleft().text)
            followers = list(self._followers.get(function, ()))
        for loop, queue in followers:
            loop.call_soon_threadsafe(_offer, queue, line)

    def read(self, function: str, instance: str | None = None, since: float | None = None,
             tail: int = 0) -> list[Line]:
        with self._lock:
            lines = [l for l in self._lines.get(function, ())
                     if (instance is None or l.instance == instance) and (since is None or l.seconds >= since)]
        return lines[-tail:] if tail > 0 else lines

    def known(self, function: str) -> bool:
        with self._lock:
            return function in self._lines

    def follow(self, function: str, instance: str | None = None) -> "Follower":
        """New lines of `function` from now on (registered at once, so none falls between a read and this)."""
        return Follower(self, function, instance)

    def forget(self, function: str) -> None:
        with self._lock:
            self._lines.pop(function, None)
            self._bytes.pop(function, None)


class Follower:
    def __init__(self, book: LogBook, function: str, instance: str | None):
        self.book, self.function, self.instance = book, function, instance
        self.queue: asyncio.Queue = asyncio.Queue(FOLLOW_BUFFER)
        self._me = (asyncio.get_running_loop(), self.queue)
        with book._lock:
            book._followers.setdefault(function, []).append(self._me)

    async def next(self, timeout: float) -> Line | None:
        """The next line, or None when none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                return None
            if self.instance is None or line.instance == self.instance:
                return line
        return None

    def close(self) -> None:
        with self.book._lock:
            followers = self.book._followers.get(self.function, [])
            if self._me in followers:
                followers.remove(self._me)


def _offer(queue: asyncio.Queue, line: Line) -> None:
    if not queue.full():
        queue.put_nowait(line)


def drain(stream: IO[bytes], file_path, book: LogBook, function: str, instance: str) -> threading.Thread:
    """Copy a replica's output into its log file and the book, on a daemon thread, until EOF.

    The pipe is always read, whatever happens to the file: a replica whose output is not read blocks
    on its next write. The file keeps the last MAX_FILE bytes and one older file (`.1`); when it
    cannot be written (a full disk), lines still reach the book and a warning says so once."""
    def run():
        out, written = _open_log(file_path)
        with stream:
            for raw in iter(lambda: stream.readline(MAX_LINE), b""):  # bounded: a line without end is cut
                book.add(function, instance, raw.decode("utf-8", "replace").rstrip("\n"))
                if out is None:
                    continue
                try:
                    if written + len(raw) > MAX_FILE:
                        out.close()
                        os.replace(file_path, f"{file_path}.1")
                        out, written = open(file_path, "ab"), 0
                    out.write(raw)
                    out.flush()
                    written += len(raw)
                except OSError as exc:
                    log.warning("%s: its log file is not written any more (%s); `faas-cli logs` still has the "
                                "last %d KiB", instance, exc, MAX_BYTES >> 10)
                    out = _close(out)
        _close(out)

    thread = threading.Thread(target=run, name=f"logs-{instance}", daemon=True)
    thread.start()
    return thread


def _open_log(path) -> tuple[IO[bytes] | None, int]:
    try:
        out = open(path, "ab")
        return out, out.tell()
    except OSError as exc:
        log.warning("replica log %s cannot be opened (%s); lines go to `faas-cli logs` only", path, exc)
        return None, 0


def _close(out: IO[bytes] | None) -> None:
    if out is not None:
        try:
            out.close()
        except OSError:
            pass
    return None
