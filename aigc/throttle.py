"""Backoff for wrong passwords, by client address: the gateway's basic auth and the UI's login use it.

After `MAX_FAILURES` wrong tries from one address within `WINDOW` seconds,
that address is refused until the window has passed, right password or not,
so a password cannot be guessed at request speed. The table of addresses is
bounded (oldest forgotten first). Thread-safe: the UI serves from threads.
"""

from __future__ import annotations

import collections
import threading

MAX_FAILURES = 10
WINDOW = 60.0
MAX_ADDRESSES = 4096


class Throttle:
    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW):
        self.max_failures, self.window = max_failures, window
        self._failures: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds `address` must still wait (0: it may try)."""
        with self._lock:
            recent = [t for t in self._failures.get(address, ()) if t > now - self.window]
        if len(recent) < self.max_failures:
            return 0.0
        return recent[0] + self.window - now

    def failed(self, address: str, now: float) -> None:
        with self._lock:
            recent = [t for t in self._failures.pop(address, ()) if t > now - self.window][-self.max_failures:]
            self._failures[address] = recent + [now]
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
