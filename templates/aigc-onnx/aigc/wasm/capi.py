"""A minimal ctypes binding to the wasmtime C API: only what aigc.wasm uses.

`import wasmtime` (the wasmtime-py package) builds ctypes prototypes for the
whole C API, about 20 ms on a 2-core machine, which is as much as the rest of a
tokenizer's cold start.  This module loads the same shared library that the
installed wasmtime wheel ships (`site-packages/wasmtime/<os>-<arch>/`) and
declares the ~30 functions below, nothing else; the wheel's Python code is
never imported.

Struct layouts are those of wasmtime 50's C headers (`wasmtime/extern.h`,
`wasmtime/val.h`, `wasm.h`); the loader refuses any other major version, and
tests/wasm/test_capi.py compares every layout with the wheel's own generated
bindings.

Ownership, as the headers define it, is kept explicit: every object this module
creates (engine, module, store) is deleted exactly once, by `close()` or when
it is garbage collected, and never in a forked child (the native state belongs
to the parent).  Every `wasmtime_error_t`, `wasm_trap_t` and `wasm_byte_vec_t`
the library hands back is deleted before the function that received it
returns.  Failures become `Error` and traps `Trap`, both `WasmError`s.
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (POINTER, Structure, Union, byref, c_bool, c_char_p, c_double, c_float,
                    c_int32, c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p)

from .errors import WasmError

SUPPORTED_MAJOR = 50

# wasmtime/trap.h: wasmtime_trap_code_t values used by the host.
STACK_OVERFLOW = 0
MEMORY_OUT_OF_BOUNDS = 1
UNREACHABLE_CODE_REACHED = 9
OUT_OF_FUEL = 11

# wasmtime/val.h wasmtime_valkind_t, wasm.h wasm_valkind_t (same numbers for these two)
I32, I64 = 0, 1
_KIND_NAMES = {0: "i32", 1: "i64", 2: "f32", 3: "f64", 4: "v128"}

# wasmtime/extern.h wasmtime_extern_kind_t
EXTERN_FUNC, EXTERN_MEMORY = 0, 3

# wasmtime/config.h wasmtime_opt_level_t
OPT_LEVELS = {"none": 0, "speed": 1, "speed_and_size": 2}


class Error(WasmError):
    """wasmtime reported an error (invalid module, incompatible cache, limit...)."""


class Trap(WasmError):
    """Wasm code trapped; `code` is a wasmtime_trap_code_t value or None, `reason`
    the message's cause line ("wasm trap: call stack exhausted") without the
    backtrace that precedes it."""

    def __init__(self, message: str, code: int | None):
        super().__init__(message)
        self.message = message
        self.code = code
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        self.reason = lines[-1] if lines else "wasm trap"


# -- layouts (wasmtime 50) ------------------------------------------------------------

class ByteVec(Structure):  # wasm_byte_vec_t, also wasm_name_t / wasm_message_t
    _fields_ = [("size", c_size_t), ("data", c_void_p)]


class ValtypeVec(Structure):  # wasm_valtype_vec_t
    _fields_ = [("size", c_size_t), ("data", POINTER(c_void_p))]


class _StoreIndex(Structure):  # the anonymous struct at the head of memory/table/tag
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32)]


class Func(Structure):  # wasmtime_func_t
    _fields_ = [("store_id", c_uint64), ("private", c_void_p)]


class MemoryRef(Structure):  # wasmtime_memory_t (wasmtime_table_t, wasmtime_tag_t alike)
    _fields_ = [("index", _StoreIndex), ("private2", c_uint32)]


class _Global(Structure):  # wasmtime_global_t
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32), ("private2", c_uint32),
                ("private3", c_uint32)]


class ExternUnion(Union):  # wasmtime_extern_union_t
    _fields_ = [("func", Func), ("global_", _Global), ("table", MemoryRef),
                ("memory", MemoryRef), ("sharedmemory", c_void_p), ("tag", MemoryRef)]


class Extern(Structure):  # wasmtime_extern_t
    _fields_ = [("kind", c_uint8), ("of", ExternUnion)]


class _Ref(Structure):  # wasmtime_anyref_t / externref_t / exnref_t
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32), ("private2", c_uint32),
                ("private3", c_void_p)]


class ValUnion(Union):  # wasmtime_valunion_t
    _fields_ = [("i32", c_int32), ("i64", c_int64), ("f32", c_float), ("f64", c_double),
                ("anyref", _Ref), ("externref", _Ref), ("exnref", _Ref), ("funcref", Func),
                ("v128", c_uint8 * 16)]


class Val(Structure):  # wasmtime_val_t
    _fields_ = [("kind", c_uint8), ("of", ValUnion)]


class InstanceRef(Structure):  # wasmtime_instance_t
    _fields_ = [("store_id", c_uint64), ("private", c_size_t)]


LAYOUTS = {"wasm_byte_vec_t": ByteVec, "wasm_valtype_vec_t": ValtypeVec, "wasmtime_func_t": Func,
           "wasmtime_memory_t": MemoryRef, "wasmtime_global_t": _Global,
           "wasmtime_extern_union_t": ExternUnion, "wasmtime_extern_t": Extern,
           "wasmtime_anyref_t": _Ref, "wasmtime_valunion_t": ValUnion, "wasmtime_val_t": Val,
           "wasmtime_instance_t": InstanceRef}


# -- the library ------------------------------------------------------------------------

def _find_library() -> tuple[str, list[str]]:
    """(shared library, dist-info folder names) of the wasmtime wheel that
    `import wasmtime` would load, found without importing it."""
    if sys.platform.startswith("linux"):
        libname = "_libwasmtime.so"
    elif sys.platform == "darwin":
        libname = "_libwasmtime.dylib"
    elif sys.platform == "win32":
        libname = "_wasmtime.dll"
    else:
        raise ImportError(f"aigc.wasm: no wasmtime library for platform {sys.platform}")
    machine = os.uname().machine if hasattr(os, "uname") else os.environ.get(
        "PROCESSOR_ARCHITECTURE", "")
    machine = {"AMD64": "x86_64", "amd64": "x86_64", "arm64": "aarch64",
               "ARM64": "aarch64"}.get(machine, machine)
    platform = "linux" if sys.platform.startswith("linux") else sys.platform
    for entry in sys.path:
        package = os.path.join(entry or os.curdir, "wasmtime")
        if not os.path.isfile(os.path.join(package, "__init__.py")):
            continue
        lib = os.path.join(package, f"{platform}-{machine}", libname)
        if not os.path.isfile(lib):
            raise ImportError(f"aigc.wasm: the wasmtime package at {package} has no {lib}")
        infos = sorted(n for n in os.listdir(entry or os.curdir)
                       if n.startswith("wasmtime-") and n.endswith(".dist-info"))
        if not infos:
            raise ImportError(f"aigc.wasm: no wasmtime-*.dist-info next to {package}, so its "
                              f"version (and struct layouts) cannot be checked")
        return os.path.abspath(lib), infos
    raise ImportError("aigc.wasm needs the wasmtime wheel (pip install wasmtime==50.0.1); "
                      "it loads its shared library, not its Python bindings")


LIBRARY, DIST_INFOS = _find_library()
VERSIONS = [n[len("wasmtime-"):-len(".dist-info")] for n in DIST_INFOS]
if any(v.split(".")[0] != str(SUPPORTED_MAJOR) for v in VERSIONS):
    raise ImportError(f"aigc.wasm.capi is written for wasmtime {SUPPORTED_MAJOR}.x (its struct "
                      f"layouts); the installed wheel is {', '.join(VERSIONS)}")

_lib = ctypes.CDLL(LIBRARY)


def _fn(name: str, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = argtypes
    return f


_p = c_void_p  # every opaque pointer (config, engine, module, store, context, error, trap)
wasm_config_new = _fn("wasm_config_new", _p)
wasmtime_config_consume_fuel_set = _fn("wasmtime_config_consume_fuel_set", None, _p, c_bool)
wasmtime_config_cranelift_opt_level_set = _fn("wasmtime_config_cranelift_opt_level_set", None, _p,
                                              c_uint8)
wasm_engine_new_with_config = _fn("wasm_engine_new_with_config", _p, _p)
wasm_engine_delete = _fn("wasm_engine_delete", None, _p)
wasm_byte_vec_delete = _fn("wasm_byte_vec_delete", None, POINTER(ByteVec))
wasmtime_error_message = _fn("wasmtime_error_message", None, _p, POINTER(ByteVec))
wasmtime_error_delete = _fn("wasmtime_error_delete", None, _p)
wasm_trap_message = _fn("wasm_trap_message", None, _p, POINTER(ByteVec))
wasmtime_trap_code = _fn("wasmtime_trap_code", c_bool, _p, POINTER(c_uint8))
wasm_trap_delete = _fn("wasm_trap_delete", None, _p)
wasmtime_module_new = _fn("wasmtime_module_new", _p, _p, _p, c_size_t, POINTER(_p))
wasmtime_module_deserialize = _fn("wasmtime_module_deserialize", _p, _p, _p, c_size_t, POINTER(_p))
wasmtime_module_serialize = _fn("wasmtime_module_serialize", _p, _p, POINTER(ByteVec))
wasmtime_module_delete = _fn("wasmtime_module_delete", None, _p)
wasmtime_store_new = _fn("wasmtime_store_new", _p, _p, _p, _p)
wasmtime_store_context = _fn("wasmtime_store_context", _p, _p)
wasmtime_store_limiter = _fn("wasmtime_store_limiter", None, _p, c_int64, c_int64, c_int64,
                             c_int64, c_int64)
wasmtime_store_delete = _fn("wasmtime_store_delete", None, _p)
wasmtime_context_set_fuel = _fn("wasmtime_context_set_fuel", _p, _p, c_uint64)
wasmtime_context_get_fuel = _fn("wasmtime_context_get_fuel", _p, _p, POINTER(c_uint64))
wasmtime_instance_new = _fn("wasmtime_instance_new", _p, _p, _p, POINTER(Extern), c_size_t,
                            POINTER(InstanceRef), POINTER(_p))
wasmtime_instance_export_get = _fn("wasmtime_instance_export_get", c_bool, _p,
                                   POINTER(InstanceRef), c_char_p, c_size_t, POINTER(Extern))
wasmtime_extern_delete = _fn("wasmtime_extern_delete", None, POINTER(Extern))
wasmtime_func_type = _fn("wasmtime_func_type", _p, _p, POINTER(Func))
wasm_functype_params = _fn("wasm_functype_params", POINTER(ValtypeVec), _p)
wasm_functype_results = _fn("wasm_functype_results", POINTER(ValtypeVec), _p)
wasm_functype_delete = _fn("wasm_functype_delete", None, _p)
wasm_valtype_kind = _fn("wasm_valtype_kind", c_uint8, _p)
wasmtime_func_call = _fn("wasmtime_func_call", _p, _p, POINTER(Func), POINTER(Val), c_size_t,
                         POINTER(Val), c_size_t, POINTER(_p))
wasmtime_memory_data = _fn("wasmtime_memory_data", c_void_p, _p, POINTER(MemoryRef))
wasmtime_memory_data_size = _fn("wasmtime_memory_data_size", c_size_t, _p, POINTER(MemoryRef))
wasmtime_memory_size = _fn("wasmtime_memory_size", c_uint64, _p, POINTER(MemoryRef))
wasmtime_memory_grow = _fn("wasmtime_memory_grow", _p, _p, POINTER(MemoryRef), c_uint64,
                           POINTER(c_uint64))
del _p


# -- errors and traps (each consumed exactly once) ------------------------------------------

def _take_vec(vec: ByteVec) -> str:
    try:
        raw = ctypes.string_at(vec.data, vec.size) if vec.data and vec.size else b""
    finally:
        wasm_byte_vec_delete(byref(vec))
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def take_error(err: int, what: str) -> Error:
    """Error for an owned wasmtime_error_t, which is deleted here."""
    vec = ByteVec()
    try:
        wasmtime_error_message(err, byref(vec))
        message = _take_vec(vec)
    finally:
        wasmtime_error_delete(err)
    return Error(f"{what}: {message}" if what else message)


def take_trap(trap: int) -> Trap:
    """Trap for an owned wasm_trap_t, which is deleted here."""
    vec = ByteVec()
    code = c_uint8()
    try:
        wasm_trap_message(trap, byref(vec))
        message = _take_vec(vec)
        has_code = wasmtime_trap_code(trap, byref(code))
    finally:
        wasm_trap_delete(trap)
    return Trap(message or "wasm trap", code.value if has_code else None)


def _check(err: int | None, trap: c_void_p | None, what: str) -> None:
    """Raise for a call's error and/or trap out-parameter, deleting both."""
    if trap is not None and trap.value:
        pending = take_trap(trap.value)
        trap.value = None
        if err:
            wasmtime_error_delete(err)  # both set is not documented; never leak either
        raise pending
    if err:
        raise take_error(err, what)


def _pointer_to(data) -> tuple[object, int]:
    """(argument for a `const uint8_t *` parameter, length) without copying
    bytes or a writable buffer; read-only buffers other than bytes are copied."""
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data).cast("B")
    n = len(view)
    if view.readonly:
        return bytes(view), n
    return (ctypes.c_char * n).from_buffer(view) if n else b"", n


# -- owned objects ---------------------------------------------------------------------------

class _Owned:
    """A native pointer deleted once, by close() or the garbage collector, and
    only in the process that created it."""

    _ptr: int | None = None
    _delete = None

    def _own(self, ptr: int) -> None:
        self._pid = os.getpid()
        self._ptr = ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr and self._pid == os.getpid():
            type(self)._delete(ptr)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def ptr(self) -> int:
        if not self._ptr:
            raise Error(f"{type(self).__name__} is closed")
        if self._pid != os.getpid():
            raise Error(f"{type(self).__name__} was created in another process (fork)")
        return self._ptr


class Engine(_Owned):
    """wasm_engine_t with fuel metering on or off and a Cranelift opt level."""

    _delete = staticmethod(wasm_engine_delete)

    def __init__(self, consume_fuel: bool = True, cranelift_opt_level: str = "speed"):
        if cranelift_opt_level not in OPT_LEVELS:
            raise ValueError(f"unknown cranelift_opt_level {cranelift_opt_level!r}")
        config = wasm_config_new()
        if not config:
            raise Error("wasm_config_new failed")
        wasmtime_config_consume_fuel_set(config, bool(consume_fuel))
        wasmtime_config_cranelift_opt_level_set(config, OPT_LEVELS[cranelift_opt_level])
        engine = wasm_engine_new_with_config(config)  # takes ownership of config
        if not engine:
            raise Error("cannot create a wasmtime engine with this configuration")
        self._own(engine)
        self.consume_fuel = bool(consume_fuel)


class Module(_Owned):
    """A compiled module (wasmtime_module_t); keeps its engine alive."""

    _delete = staticmethod(wasmtime_module_delete)

    def __init__(self, engine: Engine, ptr: int):
        self.engine = engine
        self._own(ptr)

    @classmethod
    def compile(cls, engine: Engine, wasm) -> "Module":
        data, n = _pointer_to(wasm)
        out = c_void_p()
        _check(wasmtime_module_new(engine.ptr(), data, n, byref(out)), None, "invalid module")
        return cls(engine, out.value)

    @classmethod
    def deserialize(cls, engine: Engine, serialized) -> "Module":
        """From `serialize()` output.  wasmtime trusts these bytes as native code:
        the caller must have checked where they come from (engine.py checksums)."""
        data, n = _pointer_to(serialized)
        out = c_void_p()
        _check(wasmtime_module_deserialize(engine.ptr(), data, n, byref(out)), None,
               "cannot deserialize module")
        return cls(engine, out.value)

    def serialize(self) -> bytes:
        vec = ByteVec()
        _check(wasmtime_module_serialize(self.ptr(), byref(vec)), None, "cannot serialize module")
        try:
            return ctypes.string_at(vec.data, vec.size)
        finally:
            wasm_byte_vec_delete(byref(vec))


class Store(_Owned):
    """wasmtime_store_t with a linear-memory cap; owns its instances' state.
    Closing it invalidates every Func and Memory taken from it."""

    _delete = staticmethod(wasmtime_store_delete)

    def __init__(self, engine: Engine, memory_limit: int = -1):
        store = wasmtime_store_new(engine.ptr(), None, None)
        if not store:
            raise Error("wasmtime_store_new failed")
        self._own(store)
        self.engine = engine
        self._ctx = wasmtime_store_context(store)
        if memory_limit >= 0:
            wasmtime_store_limiter(store, int(memory_limit), -1, -1, -1, -1)

    def context(self) -> int:
        self.ptr()  # raises once closed or in a forked child
        return self._ctx

    def set_fuel(self, fuel: int) -> None:
        _check(wasmtime_context_set_fuel(self.context(), int(fuel)), None, "cannot set fuel")

    def get_fuel(self) -> int:
        out = c_uint64()
        _check(wasmtime_context_get_fuel(self.context(), byref(out)), None, "cannot read fuel")
        return out.value

    def instantiate(self, module: Module) -> "Instance":
        """Instantiate a module that has no imports (ours have none)."""
        inst = InstanceRef()
        trap = c_void_p()
        err = wasmtime_instance_new(self.context(), module.ptr(), None, 0, byref(inst), byref(trap))
        _check(err, trap, "cannot instantiate")
        return Instance(self, module, inst)


class Instance:
    """An instance inside a Store (no native state of its own to delete)."""

    def __init__(self, store: Store, module: Module, ref: InstanceRef):
        self.store, self.module, self._ref = store, module, ref

    def _export(self, name: str) -> Extern:
        raw = name.encode()
        item = Extern()
        if not wasmtime_instance_export_get(self.store.context(), byref(self._ref), raw, len(raw),
                                            byref(item)):
            raise Error(f"no export named {name!r}")
        return item

    def func(self, name: str) -> "Function":
        item = self._export(name)
        try:
            if item.kind != EXTERN_FUNC:
                raise Error(f"export {name!r} is not a function")
            func = Func(item.of.func.store_id, item.of.func.private)
        finally:
            wasmtime_extern_delete(byref(item))
        return Function(self.store, func, name)

    def memory(self, name: str = "memory") -> "Memory":
        item = self._export(name)
        try:
            if item.kind != EXTERN_MEMORY:
                raise Error(f"export {name!r} is not a memory")
            memory = MemoryRef()
            ctypes.memmove(byref(memory), byref(item.of.memory), ctypes.sizeof(MemoryRef))
        finally:
            wasmtime_extern_delete(byref(item))
        return Memory(self.store, memory)


def _signature(ctx: int, func: Func) -> tuple[list[int], list[int]]:
    functype = wasmtime_func_type(ctx, byref(func))
    if not functype:
        raise Error("wasmtime_func_type failed")
    try:
        kinds = []
        for vec in (wasm_functype_params(functype), wasm_functype_results(functype)):
            vec = vec.contents  # borrowed from the functype
            kinds.append([wasm_valtype_kind(vec.data[i]) for i in range(vec.size)])
        return kinds[0], kinds[1]
    finally:
        wasm_functype_delete(functype)


# kind: (lowest accepted, highest + 1, wrap, first value that wraps); unsigned input
# up to 2**32 / 2**64 is accepted and passed with the same bits
_RANGES = {I32: (-(1 << 31), 1 << 32, 1 << 32, 1 << 31),
           I64: (-(1 << 63), 1 << 64, 1 << 64, 1 << 63)}


class Function:
    """An exported function taking and returning i32/i64 only.  Calling it
    returns None, an int (signed, as wasm returns it) or a tuple of ints.

    Not reentrant: a Store is used by one thread at a time (instance.py holds
    a lock around every call), so the argument buffers are reused."""

    def __init__(self, store: Store, func: Func, name: str):
        self.store, self._func, self.name = store, func, name
        params, results = _signature(store.context(), func)
        for kind in (*params, *results):
            if kind not in (I32, I64):
                raise Error(f"export {name!r} uses {_KIND_NAMES.get(kind, kind)}; only i32 and "
                            f"i64 are supported")
        self.params, self.results = params, results
        self._args = (Val * max(1, len(params)))()
        for slot, kind in zip(self._args, params):
            slot.kind = kind
        self._out = (Val * max(1, len(results)))()

    def __call__(self, *args: int):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}() takes {len(self.params)} arguments, got {len(args)}")
        slots = self._args
        for i, (kind, value) in enumerate(zip(self.params, args)):
            low, high, wrap, sign = _RANGES[kind]
            value = int(value)
            if not low <= value < high:
                raise OverflowError(f"{self.name}() argument {i} = {value} does not fit "
                                    f"{_KIND_NAMES[kind]}")
            if value >= sign:
                value -= wrap  # unsigned input, same bits
            if kind == I32:
                slots[i].of.i32 = value
            else:
                slots[i].of.i64 = value
        trap = c_void_p()
        err = wasmtime_func_call(self.store.context(), byref(self._func), slots, len(args),
                                 self._out, len(self.results), byref(trap))
        _check(err, trap, f"call to {self.name} failed")
        out = [v.of.i32 if kind == I32 else v.of.i64 for kind, v in zip(self.results, self._out)]
        if not out:
            return None
        return out[0] if len(out) == 1 else tuple(out)


class Memory:
    """An exported linear memory.  Addresses from data_ptr() are valid until the
    memory grows or the store closes; callers bounds-check against data_len()."""

    def __init__(self, store: Store, memory: MemoryRef):
        self.store, self._memory = store, memory

    def data_ptr(self) -> int:
        return wasmtime_memory_data(self.store.context(), byref(self._memory)) or 0

    def data_len(self) -> int:
        return wasmtime_memory_data_size(self.store.context(), byref(self._memory))

    def size(self) -> int:
        """Size in 64 KiB pages."""
        return wasmtime_memory_size(self.store.context(), byref(self._memory))

    def grow(self, pages: int) -> int:
        """Grow by `pages`; returns the previous size in pages.  Raises Error when
        the store's memory cap (or the module's maximum) refuses it."""
        if pages < 0:
            raise ValueError("cannot shrink a memory")
        prev = c_uint64()
        _check(wasmtime_memory_grow(self.store.context(), byref(self._memory), int(pages),
                                    byref(prev)), None, "cannot grow memory")
        return prev.value
