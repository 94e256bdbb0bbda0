"""The queue-worker: runs accepted async calls through the gateway and POSTs results to X-Callback-Url.

As OpenFaaS's queue-worker: a call that the function answers with 429/502/503/504
(or that cannot reach it, or times out) is retried with backoff, up to
`async_max_attempts` attempts in all; then the last attempt's status is final and
goes to the callback as `X-Function-Status`. Callbacks are delivered by their own
tasks (at most `MAX_CALLBACKS` at once), so a receiver that is slow or down
delays no other call; each attempt has a timeout and there are at most
`callback_attempts` attempts. The call's outcome is stored before its callback
is sent (tried again while the disk is full, so a call that finished then is
delivered once space returns); the callback's own fate is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from typing import TYPE_CHECKING

import aiohttp

from .asyncq import Call
from .pool import NoReplica

if TYPE_CHECKING:
    from .core import Gateway

log = logging.getLogger("aigc.gateway")
RETRY_STATUSES = {429, 502, 503, 504}
MAX_CALLBACKS = 64
CALLBACK_TIMEOUT = 10.0
STORE_RETRY_SECONDS = 300.0


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class QueueWorker:
    def __init__(self, gateway: "Gateway"):
        self.gw = gateway
        self.queue = gateway.queue
        self._callbacks: set[asyncio.Task] = set()
        self._room = asyncio.Semaphore(MAX_CALLBACKS)

    async def run(self) -> None:
        while True:
            try:
                call = await asyncio.to_thread(self.queue.claim)
            except sqlite3.Error as exc:  # a full disk or a lock: what is queued stays queued; try again
                log.warning("the queue cannot be read (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
                continue
            if call is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await self._run_call(call)
            except asyncio.CancelledError:
                raise
            except sqlite3.Error as exc:  # the outcome could not be stored in STORE_RETRY_SECONDS
                log.warning("async call %s: its outcome was not saved (%s); it runs again after a restart",
                            call.call_id, exc)
            except Exception as exc:  # a bug of ours: keep the worker alive, and the attempt counts
                log.exception("async call %s failed", call.call_id)
                await self._attempt_failed(call, 500, {}, _error_body(f"gateway error: {type(exc).__name__}"), 0.0,
                                           f"{type(exc).__name__}: {exc}")

    async def _run_call(self, call: Call) -> None:
        if call.function not in self.gw.pools:
            await self._store(self.queue.finish, call.call_id, "failed", 404, None,
                              f"function {call.function!r} is not deployed")
            self.gw.call_ended(call.call_id)
            await self._send(call, 404, {}, _error_body(f"function {call.function!r} not found"), 0.0)
            return
        try:
            status, headers, body, seconds = await self.gw.invoke(call)
        except NoReplica as exc:
            status, headers, body, seconds = exc.status, {}, _error_body(str(exc)), 0.0
        except aiohttp.ClientError as exc:
            status, headers, body, seconds = 502, {}, _error_body(f"replica failed: {exc}"), 0.0
        except asyncio.TimeoutError:  # not a ClientError: the function ran past the call's time limit
            status, headers, body, seconds = 504, {}, _error_body("the function did not answer in time"), 0.0
        self.gw.observe(call.function, status, seconds)
        if status in RETRY_STATUSES:
            await self._attempt_failed(call, status, headers, body, seconds, f"function answered {status}")
            return
        await self._store(self.queue.finish, call.call_id, "done" if status < 400 else "failed", status, seconds)
        self.gw.call_ended(call.call_id)
        await self._send(call, status, headers, body, seconds)

    async def _attempt_failed(self, call: Call, status: int, headers: dict, body: bytes, seconds: float,
                              why: str) -> None:
        if call.attempts < self.gw.options.async_max_attempts:
            await self._store(self.queue.retry, call.call_id, min(0.5 * 2 ** call.attempts, 30), why)
            return
        await self._store(self.queue.finish, call.call_id, "failed", status, seconds,
                          f"{why} (attempt {call.attempts}, the last)")
        self.gw.call_ended(call.call_id)
        await self._send(call, status, headers, body, seconds)

    async def _store(self, write, *args) -> None:
        """A call's outcome into the queue, tried again each second while the disk is full or the database
        locked: the work is done, and a callback goes out only after its outcome is stored. Past
        STORE_RETRY_SECONDS the error goes up (the call stays "running" and runs again after a restart)."""
        deadline = asyncio.get_running_loop().time() + STORE_RETRY_SECONDS
        while True:
            try:
                return await asyncio.to_thread(write, *args)
            except sqlite3.Error as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.warning("async call %s: its outcome cannot be stored yet (%s); trying again in 1 s", args[0], exc)
                await asyncio.sleep(1.0)

    async def _send(self, call: Call, status: int, headers: dict, body: bytes, seconds: float) -> None:
        if not call.callback_url:
            return
        await self._room.acquire()  # bounded: past MAX_CALLBACKS in flight, the worker waits here
        task = asyncio.get_running_loop().create_task(self._deliver(call, status, headers, body, seconds))
        self._callbacks.add(task)
        task.add_done_callback(self._callbacks.discard)
        task.add_done_callback(lambda _: self._room.release())

    async def _deliver(self, call: Call, status: int, headers: dict, body: bytes, seconds: float) -> None:
        out = {k: v for k, v in headers.items() if k.lower() == "content-type"}
        out.update({"X-Call-Id": call.call_id, "X-Function-Status": str(status), "X-Function-Name": call.function,
                    "X-Duration-Seconds": f"{seconds:.6f}"})
        for attempt in range(self.gw.options.callback_attempts):
            try:
                async with self.gw.session.post(call.callback_url, data=body, headers=out, allow_redirects=False,
                                                timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)) as resp:
                    if resp.status < 500:
                        return
                    why = f"answered {resp.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                why = type(exc).__name__
            await asyncio.sleep(min(0.5 * 2 ** attempt, 10))
        log.warning("callback for %s to %s not delivered after %d attempts (%s)", call.call_id, call.callback_url,
                    self.gw.options.callback_attempts, why)

    async def close(self) -> None:
        for task in list(self._callbacks):
            task.cancel()
        await asyncio.gather(*self._callbacks, return_exceptions=True)
