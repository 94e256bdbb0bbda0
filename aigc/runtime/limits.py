"""`max_inflight` and `exec_timeout` for one instance.

Work runs on a thread pool so a request can be answered with 504 when it
overruns; the overrunning work keeps its in-flight slot until it really ends,
so timeouts cannot pile up more concurrent work than `max_inflight` allows.
The work runs with its deadline in a context variable: engines call
`check_deadline()` between steps (batches, tokens), so work whose caller has
its 504 already stops there instead of computing for minutes.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import time
from typing import Any, Callable

from flask import Response

from . import errors, metrics


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("aigc_deadline", default=None)


def check_deadline() -> None:
    """Raise Timeout once the current request is past exec_timeout (no-op outside a request)."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise errors.Timeout("request passed exec_timeout; its work stopped")


def remaining() -> float | None:
    """Seconds left to the current request, or None outside one."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


class Slot:
    def __init__(self, gate: "Gate"):
        self._gate = gate
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._gate._release()


class Gate:
    def __init__(self, max_inflight: int, exec_timeout: float, pool_size: int):
        self.max_inflight = max_inflight
        self.exec_timeout = exec_timeout
        self._count = 0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="work")

    @property
    def inflight(self) -> int:
        return self._count

    def full(self) -> bool:
        return bool(self.max_inflight) and self._count >= self.max_inflight

    def acquire(self) -> Slot:
        with self._lock:
            if self.max_inflight and self._count >= self.max_inflight:
                raise errors.TooManyRequests(f"this instance is serving {self._count} requests (max_inflight="
                                             f"{self.max_inflight}); retry, or scale out")
            self._count += 1
        metrics.IN_FLIGHT.inc()
        return Slot(self)

    def _release(self) -> None:
        with self._lock:
            self._count -= 1
        metrics.IN_FLIGHT.dec()

    def run(self, work: Callable[[], Any], before: Callable[[float], None] | None = None) -> Any:
        """Run `work` within exec_timeout; `before(seconds_left)` may wait for readiness first."""
        deadline = time.monotonic() + self.exec_timeout
        slot = self.acquire()
        try:
            if before is not None:
                before(max(deadline - time.monotonic(), 0.0))
            context = contextvars.copy_context()
            context.run(_DEADLINE.set, deadline)
            future = self._pool.submit(context.run, work)
        except BaseException:
            slot.release()
            raise
        try:
            result = future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except concurrent.futures.TimeoutError:
            future.add_done_callback(lambda _f: slot.release())
            raise errors.Timeout(f"request took longer than exec_timeout={self.exec_timeout:g}s") from None
        except BaseException:
            slot.release()
            raise
        if isinstance(result, Response) and result.is_streamed:
            # a stream is still being served after `work` returns: hold the slot until it closes
            result.call_on_close(slot.release)
        else:
            slot.release()
        return result
