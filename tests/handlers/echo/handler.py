"""A small real handler for runtime tests: a model that doubles FP32 tensors.

`LOAD_SECONDS` delays loading (to observe readiness); `FAIL_LOAD` makes loading
fail; `?sleep=S` makes a request take S seconds (to observe limits), `?spin=S`
the same on a core (to fill the CPU);
`IMPORT_ORT` imports onnxruntime at module level, i.e. in gunicorn's
preloading master, the case that can hang worker exit; `/allocate?mb=N` holds
N MiB in the worker (to cross a memory limit); `NO_FORK` keeps replicas from
being forked from a zygote.
"""

import os
import time

import numpy as np

from aigc.runtime import Model, TensorSpec, errors

if os.environ.get("IMPORT_ORT"):
    import onnxruntime  # noqa: F401


class Doubler(Model):
    platform = "numpy"
    fork_safe = True  # numpy only: the gateway's zygote may load it and fork replicas (NO_FORK=1: it may not)
    inputs = (TensorSpec("x", "FP32", (-1, 2)),)
    outputs = (TensorSpec("y", "FP32", (-1, 2)), TensorSpec("label", "BYTES", (-1,)))

    def load(self):
        time.sleep(float(os.environ.get("LOAD_SECONDS", "0")))
        if os.environ.get("FAIL_LOAD"):
            raise RuntimeError("weights file is corrupt")

    def predict(self, inputs, parameters):
        x = inputs["x"]
        return {"y": x * 2, "label": np.array([b"big" if row.sum() > 10 else b"small" for row in x], dtype=object)}


model = Doubler("doubler")
model.fork_safe = not os.environ.get("NO_FORK")
HELD = []


def handle(event, context):
    if "sleep" in event.query:
        time.sleep(float(event.query["sleep"]))
    if "spin" in event.query:
        until = time.thread_time() + float(event.query["spin"])
        while time.thread_time() < until:
            pass
    if event.path == "/json":
        return {"statusCode": 201, "body": {"got": event.json()}, "headers": {"X-Echo": "1"}}
    if event.path == "/fail":
        raise ValueError("handler bug")
    if event.path == "/bad":
        raise errors.InvalidInput("you sent something wrong")
    if event.path == "/stream":  # server-sent events, one every 0.3 s
        from flask import Response

        def events():
            for i in range(int(event.query.get("n", "3"))):
                yield f"data: {i}\n\n"
                time.sleep(0.3)

        return Response(events(), mimetype="text/event-stream")
    if event.path == "/env":
        return {"value": os.environ.get(event.query["name"])}
    if event.path == "/secret":
        from aigc.runtime import secrets

        return {"value": secrets.read(event.query["name"])}
    if event.path == "/allocate":
        HELD.append(bytearray(os.urandom(1 << 20)) * int(event.query["mb"]))
        return {"held_mb": sum(len(b) for b in HELD) >> 20}
    if event.path == "/pid":
        return {"pid": os.getpid(), "pgid": os.getpgid(0)}
    return event.body
