"""The optional model lifecycle: load once per instance, then predict per request.

A function subclasses `Model`, declares its tensors for the Open Inference
Protocol, and implements `load()` and `predict()`. The runtime loads every
model on a background thread after the worker starts, so `/_/health` answers at
once while `/_/ready` stays 503 until the weights are in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import errors, store

log = logging.getLogger("aigc.runtime")
# Kubernetes shows this file's text as the container's last state in `kubectl describe pod`
TERMINATION_LOG = "/dev/termination-log"

DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as OIP metadata describes it; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    def __post_init__(self):
        if self.datatype not in DATATYPES:
            raise ValueError(f"unknown OIP datatype {self.datatype!r}")

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Model:
    """Base class; subclasses set the class attributes and override load/predict."""

    name: str = "model"
    version: str | None = None
    platform: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    # True when load() starts no threads of its own (numpy, WASM, ONNX Runtime sessions made through
    # aigc.runtime.ort): a zygote may load it once and fork replicas that serve it at once (zygote.py)
    fork_safe: bool = False

    def __init__(self, name: str | None = None):
        if name:
            self.name = name
        self.ready = False
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self._started = False

    # --- to override -----------------------------------------------------
    def load(self) -> None:
        """Read weights into memory. Import heavy engines here, not at module level."""

    def predict(self, inputs: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
        """OIP inference: named numpy arrays in, named numpy arrays out."""
        raise errors.InvalidInput(f"model {self.name!r} does not accept Open Inference Protocol requests")

    # --- lifecycle, driven by the runtime --------------------------------
    def start_loading(self) -> None:
        """Start `load()` on a daemon thread, once; safe to call from any thread."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load_now, name=f"load-{self.name}", daemon=True).start()

    def load_now(self) -> None:
        """Load on the calling thread, once (a zygote does, before it forks)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._load_now()

    def _load_now(self) -> None:
        started = time.perf_counter()
        try:
            self.load()
            self.ready = True
        except Exception as exc:  # the instance reports it instead of dying silently
            self.load_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.load_seconds = time.perf_counter() - started
            self._report()
            self._loaded.set()

    def _report(self) -> None:
        """The cold-start log line: once per load, with the pull from AIGC_MODEL_REMOTE when there was one."""
        pulled = store.pulls.get(self.name)
        via = (f" (pulled {pulled['bytes'] / 1e6:.1f} MB from {pulled['remote']} in {pulled['seconds']:.2f} s)"
               if pulled else "")
        if self.load_error is None:
            log.info("model %s ready in %.2f s%s", self.name, self.load_seconds, via)
            return
        log.error("model %s failed to load after %.2f s%s: %s", self.name, self.load_seconds, via, self.load_error)
        try:  # "r+": write only where the kubelet made the file, never create one elsewhere
            with open(TERMINATION_LOG, "r+") as fh:
                fh.truncate()
                fh.write(f"model {self.name} failed to load: {self.load_error}\n")
        except OSError:
            pass  # not on Kubernetes: the log line above is the report

    def wait_ready(self, timeout: float) -> None:
        """Block until loaded; raise ModelNotReady if loading failed or is too slow."""
        self.start_loading()
        if not self._loaded.wait(timeout):
            raise errors.ModelNotReady(f"model {self.name!r} is still loading after {timeout:.0f}s; retry shortly")
        if self.load_error:
            raise errors.ModelNotReady(f"model {self.name!r} failed to load: {self.load_error}")

    @property
    def failed(self) -> bool:
        return self.load_error is not None

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "versions": [self.version] if self.version else [],
                                "platform": self.platform,
                                "inputs": [t.metadata() for t in self.inputs],
                                "outputs": [t.metadata() for t in self.outputs]}
        return meta
