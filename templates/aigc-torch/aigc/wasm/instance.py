"""A lazily created, per-process wasm instance with limits.

Rules this enforces:

* nothing from wasmtime crosses a fork: the instance is created on first use
  in each process, and a forked child drops (without freeing) what it
  inherited;
* one call at a time per instance (a lock), so threads can share a Runtime;
* every call runs with a fuel budget and under a memory cap, and any trap
  becomes a `WasmError` (or `WasmLimitError`) and discards the instance, so
  the next call starts from a fresh, known-good one.
"""

from __future__ import annotations

import _thread
import _weakref
import ctypes
import os
import struct
import sys

from . import capi
from . import engine as _engine
from .errors import WasmError, WasmLimitError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

MiB = 1 << 20

# Buffers are exchanged as 32-bit words: packed with struct ('<' explicit), read
# back with memoryview.cast, which uses the host's order.  (No `array` module: it
# imports collections.abc, milliseconds of every cold start.)
if sys.byteorder != "little" or struct.calcsize("i") != 4:
    raise ImportError("aigc.wasm needs a little-endian host with 32-bit C int")

# Every Runtime, weakly (the weakref module itself is a cold-start import).
_runtimes: dict[int, _weakref.ref] = {}

# Exports that return an address rather than a status.
_POINTER_EXPORTS = frozenset({"mem_alloc", "result_ptr", "unicode_version_ptr", "mem_top"})

# Exported functions return 0 or one of these negative codes.
_ERRORS = {
    -1: "out of memory",
    -2: "invalid input",
    -3: "unknown token",
    -4: "tokenizer not loaded",
    -5: "input is not valid UTF-8",
}


class Runtime:
    def __init__(self, module: str, setup: Callable[["Runtime"], None] | None = None, *,
                 memory_limit: int = 256 * MiB, fuel_base: int = 200_000_000,
                 fuel_per_byte: int = 50_000, setup_fuel: int = 20_000_000_000,
                 fuel: bool = True):
        """fuel=False runs on the unmetered engine: no fuel budget, so a call's
        time is bounded only by max input sizes (for measurements and trusted jobs)."""
        self.module = module
        self.fuel = bool(fuel)
        self.memory_limit = int(memory_limit)
        self.fuel_base = int(fuel_base)
        self.fuel_per_byte = int(fuel_per_byte)
        self.setup_fuel = int(setup_fuel)
        self._setup = setup
        self._lock = _thread.allocate_lock()
        self._pid = os.getpid()
        self._store: capi.Store | None = None
        self._instance: capi.Instance | None = None
        self._funcs: dict[str, capi.Function] = {}
        self._memory: capi.Memory | None = None
        self.instances_created = 0
        key = id(self)
        _runtimes[key] = _weakref.ref(self, lambda _, key=key, live=_runtimes: live.pop(key, None))

    # -- lifecycle ---------------------------------------------------------------

    def _after_fork(self) -> None:
        # The inherited store belongs to the parent; capi never frees native
        # objects in a process other than their creator's, so dropping it is safe.
        self._store, self._instance, self._funcs, self._memory = None, None, {}, None
        self._lock = _thread.allocate_lock()
        self._pid = os.getpid()
        self.instances_created = 0  # counts instances built by this process

    def _discard(self) -> None:
        store = self._store
        self._store, self._instance, self._funcs, self._memory = None, None, {}, None
        if store is not None:
            store.close()  # frees the instance and its linear memory now

    def _ensure(self) -> None:
        if self._pid != os.getpid():  # fork without the at-fork hook (defensive)
            self._after_fork()
        if self._store is not None:
            return
        module = _engine.load_module(self.module, self.fuel)
        store = capi.Store(module.engine, memory_limit=self.memory_limit)
        try:
            if self.fuel:
                store.set_fuel(self.setup_fuel)
            instance = store.instantiate(module)
            memory = instance.memory("memory")
        except capi.Trap as e:
            store.close()
            raise self._trap_error(e) from None
        except WasmError as e:
            store.close()
            raise WasmError(f"cannot instantiate {self.module}.wasm: {e}") from None
        self._store, self._instance, self._memory = store, instance, memory
        self.instances_created += 1
        if self._setup is not None:
            try:
                self._setup(self)
            except BaseException:
                self._discard()
                raise

    # -- calls -------------------------------------------------------------------

    def run(self, body: Callable[["Runtime"], object], input_bytes: int = 0):
        """Run `body(self)` under the lock with a fuel budget for `input_bytes`."""
        with self._lock:
            try:
                self._ensure()
                assert self._store is not None
                if self.fuel:
                    self._store.set_fuel(self.fuel_base + self.fuel_per_byte * input_bytes)
                return body(self)
            except capi.Trap as e:
                self._discard()
                raise self._trap_error(e) from None
            except capi.Error as e:
                self._discard()
                raise WasmError(f"{self.module}.wasm call failed: {e}") from None
            except WasmError:
                self._discard()
                raise

    def _trap_error(self, e: capi.Trap) -> WasmError:
        if e.code == capi.OUT_OF_FUEL:
            return WasmLimitError(f"{self.module}.wasm ran out of fuel (budget "
                                  f"{self.fuel_base} + {self.fuel_per_byte}/input byte); "
                                  f"the input is too expensive to process")
        if e.code == capi.STACK_OVERFLOW:
            return WasmLimitError(f"{self.module}.wasm overflowed its stack")
        return WasmError(f"{self.module}.wasm trapped: {e.reason}")

    def func(self, name: str) -> capi.Function:
        """An export of the current instance (looked up once per instance)."""
        f = self._funcs.get(name)
        if f is None:
            assert self._instance is not None
            f = self._funcs[name] = self._instance.func(name)
        return f

    def call(self, name: str, *args: int) -> int:
        """Call an export; a negative status is turned into an exception."""
        result = self.func(name)(*args)
        if name in _POINTER_EXPORTS:
            return result & 0xFFFFFFFF  # wasm i32 comes back signed
        if isinstance(result, int) and result < 0:
            detail = _ERRORS.get(result, f"error {result}")
            if result == -1:
                raise WasmLimitError(f"{self.module}.wasm {name}: {detail} (memory cap "
                                     f"{self.memory_limit // MiB} MiB)")
            raise WasmError(f"{self.module}.wasm {name}: {detail}")
        return result

    # -- memory ------------------------------------------------------------------

    def alloc(self, n: int) -> int:
        ptr = self.call("mem_alloc", n)
        if ptr == 0 and n > 0:
            raise WasmLimitError(f"{self.module}.wasm: cannot allocate {n} bytes within the "
                                 f"memory cap of {self.memory_limit // MiB} MiB")
        return ptr

    def _base(self) -> int:
        assert self._memory is not None
        return self._memory.data_ptr()

    def _check_range(self, ptr: int, n: int) -> None:
        assert self._memory is not None
        if ptr < 0 or n < 0 or ptr + n > self._memory.data_len():
            raise WasmError(f"{self.module}.wasm returned an out-of-range buffer")

    def write(self, data) -> int:
        """Copy bytes or any contiguous buffer (array, numpy) into fresh wasm memory;
        returns its address."""
        if isinstance(data, bytes):
            src, n = data, len(data)
        else:
            view = memoryview(data).cast("B")  # raises for non-contiguous buffers
            n = len(view)
            src = bytes(view) if view.readonly else \
                ctypes.addressof(ctypes.c_char.from_buffer(view)) if n else b""
        ptr = self.alloc(n)
        if n:
            self._check_range(ptr, n)
            ctypes.memmove(self._base() + ptr, src, n)
        return ptr

    def _grow_to(self, n: int) -> None:
        assert self._memory is not None
        pages = -(-n // 65536)
        have = self._memory.size()
        if pages > have:
            try:
                self._memory.grow(pages - have)
            except capi.Error:
                raise WasmLimitError(f"{self.module}.wasm: a {n}-byte state does not fit "
                                     f"the memory cap of {self.memory_limit // MiB} MiB") from None
        self._check_range(0, n)

    def restore_memory(self, image) -> None:
        """Overwrite memory [0, len(image)) with a snapshot taken from the same module
        (bytes, or a writable buffer such as a view of a bytearray)."""
        self._grow_to(len(image))
        src = image if isinstance(image, bytes) else \
            ctypes.addressof(ctypes.c_char.from_buffer(image))
        ctypes.memmove(self._base(), src, len(image))

    def restore_into(self, n: int, fill: Callable[[int, int], None]) -> None:
        """Overwrite memory [0, n) in place: `fill(address, n)` writes the n bytes
        (e.g. reads a snapshot file straight into linear memory)."""
        self._grow_to(n)
        fill(self._base(), n)

    def read(self, ptr: int, n: int) -> bytes:
        self._check_range(ptr, n)
        return ctypes.string_at(self._base() + ptr, n) if n else b""

    def read_array(self, ptr: int, count: int, typecode: str) -> memoryview:
        """`count` little-endian 4-byte items ('i' int32, 'I' uint32, 'f' float32),
        as a read-only memoryview (tolist(), or a buffer for numpy)."""
        if typecode not in ("i", "I", "f"):
            raise ValueError(f"unsupported typecode {typecode!r}")
        return memoryview(self.read(ptr, count * 4)).cast(typecode)

    def read_u32s(self, ptr: int, count: int) -> list[int]:
        return self.read_array(ptr, count, "I").tolist()


def _after_fork_in_child() -> None:
    for ref in list(_runtimes.values()):
        rt = ref()
        if rt is not None:
            rt._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
