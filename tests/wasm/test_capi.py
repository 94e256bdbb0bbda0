"""aigc.wasm.capi, the small ctypes binding to wasmtime's C API: layouts, error
and trap paths, limits, ownership; and the stat-keyed verification index that
keeps large files from being hashed on every cold start."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime  # the wheel's own bindings: only as a reference and for wat2wasm

from aigc.wasm import Tokenizer, WasmError, WasmLimitError, capi, engine
from aigc.wasm.instance import Runtime

REPO = Path(__file__).resolve().parents[2]

WAT = """
(module
  (memory (export "memory") 1)
  (func (export "boom") unreachable)
  (func (export "spin") (loop br 0))
  (func $deep (export "deep") call $deep)
  (func (export "id") (param i32) (result i32) local.get 0)
  (func (export "add64") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "pair") (result i32 i64) i32.const -7 i64.const 9)
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
  (func (export "f32id") (param f32) (result f32) local.get 0)
  (func (export "nop"))
  (func (export "load") (param i32) (result i32) local.get 0 i32.load))
"""


@pytest.fixture(scope="module")
def wasm() -> bytes:
    return bytes(wasmtime.wat2wasm(WAT))


@pytest.fixture(scope="module")
def metered():
    return capi.Engine(consume_fuel=True)


def _instance(eng, wasm, memory_limit=-1, fuel=10_000_000):
    store = capi.Store(eng, memory_limit=memory_limit)
    if eng.consume_fuel:
        store.set_fuel(fuel)
    return store, store.instantiate(capi.Module.compile(eng, wasm))


# -- layouts ----------------------------------------------------------------------------

def _shape(t):
    fields = [(name, getattr(t, name).offset, getattr(t, name).size) for name, *_ in t._fields_]
    return ctypes.sizeof(t), ctypes.alignment(t), [(off, size) for _, off, size in fields]


@pytest.mark.parametrize("name", sorted(capi.LAYOUTS))
def test_layout_matches_the_wheels_generated_bindings(name):
    from wasmtime import _bindings

    assert _shape(capi.LAYOUTS[name]) == _shape(getattr(_bindings, name))


def test_library_is_the_wheels_and_version_is_checked():
    from wasmtime import _ffi

    assert os.path.samefile(capi.LIBRARY, _ffi.filename)
    assert all(v.startswith(f"{capi.SUPPORTED_MAJOR}.") for v in capi.VERSIONS)


# -- calls, traps, errors ---------------------------------------------------------------

def test_values_round_trip(metered, wasm):
    store, inst = _instance(metered, wasm)
    ident = inst.func("id")
    assert ident(5) == 5
    assert ident(0xFFFFFFFF) == -1  # unsigned input, same bits; i32 results are signed
    assert ident(-(1 << 31)) == -(1 << 31)
    with pytest.raises(OverflowError):
        ident(1 << 32)
    with pytest.raises(TypeError, match="takes 1 arguments"):
        ident(1, 2)
    assert inst.func("add64")((1 << 63) - 1, 1) == -(1 << 63)  # wraps like wasm
    assert inst.func("pair")() == (-7, 9)
    assert inst.func("nop")() is None
    with pytest.raises(capi.Error, match="f32"):
        inst.func("f32id")  # only i32/i64 signatures are supported
    with pytest.raises(capi.Error, match="no export named 'nope'"):
        inst.func("nope")
    with pytest.raises(capi.Error, match="not a function"):
        inst.func("memory")
    with pytest.raises(capi.Error, match="not a memory"):
        inst.memory("id")


def test_traps_carry_their_code_and_message(metered, wasm):
    store, inst = _instance(metered, wasm)
    with pytest.raises(capi.Trap) as e:
        inst.func("boom")()
    assert e.value.code == capi.UNREACHABLE_CODE_REACHED
    assert e.value.reason == "wasm trap: wasm `unreachable` instruction executed"
    assert isinstance(e.value, WasmError)
    with pytest.raises(capi.Trap) as e:
        inst.func("load")(70_000)  # past the single 64 KiB page
    assert e.value.code == capi.MEMORY_OUT_OF_BOUNDS
    with pytest.raises(capi.Trap) as e:
        inst.func("deep")()
    assert e.value.code == capi.STACK_OVERFLOW
    store.set_fuel(1000)
    with pytest.raises(capi.Trap) as e:
        inst.func("spin")()
    assert e.value.code == capi.OUT_OF_FUEL
    store.set_fuel(1000)
    assert inst.func("id")(3) == 3  # a store stays usable after a trap


def test_fuel_accounting_and_unmetered_engine(metered, wasm):
    store, inst = _instance(metered, wasm, fuel=12345)
    assert store.get_fuel() == 12345
    inst.func("id")(1)
    assert store.get_fuel() < 12345
    free = capi.Engine(consume_fuel=False)
    store2, inst2 = _instance(free, wasm)
    with pytest.raises(capi.Error, match="cannot set fuel"):
        store2.set_fuel(10)
    assert inst2.func("id")(9) == 9


def test_memory_cap(metered, wasm):
    store, inst = _instance(metered, wasm, memory_limit=3 * 65536)
    memory = inst.memory()
    assert memory.size() == 1 and memory.data_len() == 65536 and memory.data_ptr()
    assert inst.func("grow")(1) == 1  # wasm's memory.grow: previous size in pages
    assert inst.func("grow")(5) == -1  # over the cap: refused, no trap
    with pytest.raises(capi.Error, match="cannot grow memory"):
        memory.grow(5)  # the host sees the same cap as an error
    assert memory.grow(1) == 2 and memory.size() == 3
    with pytest.raises(capi.Error, match="cannot instantiate"):
        _instance(metered, bytes(wasmtime.wat2wasm("(module (memory 8))")),
                  memory_limit=2 * 65536)


def test_invalid_modules_and_closed_objects(metered, wasm):
    with pytest.raises(capi.Error, match="invalid module"):
        capi.Module.compile(metered, b"\0asm\1\0\0\0garbage")
    with pytest.raises(capi.Error, match="cannot deserialize"):
        capi.Module.deserialize(metered, b"not a serialized module")
    with pytest.raises(capi.Error, match="cannot deserialize"):  # other engine settings
        capi.Module.deserialize(metered, capi.Module.compile(capi.Engine(False), wasm).serialize())
    module = capi.Module.compile(metered, bytearray(wasm))  # writable buffers are not copied
    assert capi.Module.deserialize(metered, module.serialize())
    store, inst = _instance(metered, wasm)
    ident = inst.func("id")
    store.close()
    store.close()  # idempotent
    with pytest.raises(capi.Error, match="Store is closed"):
        ident(1)
    with pytest.raises(capi.Error, match="Store is closed"):
        inst.memory().size()
    module.close()
    with pytest.raises(capi.Error, match="Module is closed"):
        capi.Store(metered).instantiate(module)


def test_runtime_turns_traps_into_wasm_errors(tmp_path, monkeypatch, wasm):
    """Through Runtime, as the tokenizer and image code use it: each trap is a
    WasmError or WasmLimitError with the limit in the message, and the next
    call gets a fresh instance."""
    (tmp_path / "t.wasm").write_bytes(wasm)
    monkeypatch.setenv("AIGC_WASM_DIR", str(tmp_path))
    rt = Runtime("t", fuel_base=100_000, fuel_per_byte=1, memory_limit=2 * 65536)
    assert rt.run(lambda r: r.call("id", 4)) == 4
    with pytest.raises(WasmLimitError, match=r"ran out of fuel \(budget 100000 \+ 1/input byte\)"):
        rt.run(lambda r: r.call("spin"))
    with pytest.raises(WasmLimitError, match="overflowed its stack"):
        rt.run(lambda r: r.call("deep"))
    with pytest.raises(WasmError, match="^t.wasm trapped: wasm trap: wasm `unreachable`") as e:
        rt.run(lambda r: r.call("boom"))
    assert not isinstance(e.value, WasmLimitError)
    with pytest.raises(WasmLimitError, match="does not fit the memory cap of 0 MiB"):
        rt.run(lambda r: r.restore_memory(bytes(3 * 65536)))
    with pytest.raises(WasmError, match="call failed: .*no export named"):
        rt.run(lambda r: r.call("missing"))
    assert rt.run(lambda r: r.call("id", 5)) == 5
    assert rt.instances_created == 6  # every failure discarded its instance
    engine.forget_modules()


# -- the verification index -------------------------------------------------------------

@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_WASM_CACHE", str(tmp_path / "cache"))
    engine.forget_modules()
    engine.forget_index()
    yield tmp_path / "cache"
    engine.forget_modules()
    engine.forget_index()


def _settle(monkeypatch):
    """Treat every file as older than the racy window (instead of sleeping)."""
    monkeypatch.setattr(engine, "RACY_NS", -(1 << 62))


def test_fresh_files_are_not_trusted(fresh_cache, gpt2_json):
    Tokenizer.from_file(gpt2_json)
    Tokenizer.from_file(gpt2_json)
    index = engine._index_read()
    assert not any(k[0] == "verified" for k in index)  # written less than a second ago


def test_settled_snapshot_is_read_into_wasm_memory_unhashed(fresh_cache, gpt2_json, monkeypatch):
    _settle(monkeypatch)
    expected = Tokenizer.from_file(gpt2_json, snapshot=False).encode("cold start")
    Tokenizer.from_file(gpt2_json)  # writes the snapshot
    Tokenizer.from_file(gpt2_json)  # verifies it in full and records it
    index = engine._index_read()
    assert {k[0] for k in index} == {"verified", "sha256"}
    engine.forget_index()
    hashed = []
    real = engine.sha256
    monkeypatch.setattr(engine, "sha256", lambda data: hashed.append(len(data)) or real(data))
    tok = Tokenizer.from_file(gpt2_json)
    assert tok._snap is not None and tok._image is None  # straight from the file
    assert tok.encode("cold start") == expected
    assert max(hashed) < 1000  # only keys, no file contents
    # a trap re-instantiates from the same open file
    tok.runtime.fuel_base, tok.runtime.fuel_per_byte = 1000, 0
    with pytest.raises(WasmLimitError, match="ran out of fuel"):
        tok.encode("x" * 10_000)
    tok.runtime.fuel_base, tok.runtime.fuel_per_byte = 200_000_000, 50_000
    assert tok.encode("cold start") == expected and tok.runtime.instances_created == 2


def test_changed_file_is_verified_again(fresh_cache, gpt2_json, monkeypatch):
    _settle(monkeypatch)
    Tokenizer.from_file(gpt2_json)
    Tokenizer.from_file(gpt2_json)  # now recorded as verified
    snap = next(fresh_cache.glob("*.snap"))
    time.sleep(0.05)  # a new ctime, beyond any timestamp granularity
    data = bytearray(snap.read_bytes())
    data[-1000] ^= 0x01  # in place: same inode, same size
    snap.write_bytes(bytes(data))
    engine.forget_index()
    before = dict(engine.stats)
    tok = Tokenizer.from_file(gpt2_json)
    assert engine.stats["snapshot_rejected"] - before["snapshot_rejected"] == 1
    assert tok.encode("cold start") == Tokenizer.from_file(gpt2_json, snapshot=False).encode(
        "cold start")


def test_snapshot_changed_while_in_use_is_an_error(fresh_cache, gpt2_json, monkeypatch):
    _settle(monkeypatch)
    Tokenizer.from_file(gpt2_json)
    Tokenizer.from_file(gpt2_json)
    tok = Tokenizer.from_file(gpt2_json)
    assert tok._snap is not None
    snap = next(fresh_cache.glob("*.snap"))
    time.sleep(0.05)
    with open(snap, "r+b") as f:  # damage the very file the tokenizer holds open
        f.seek(-1000, os.SEEK_END)
        f.write(b"\xff" * 8)
    tok.runtime._discard()  # as after a trap
    with pytest.raises(WasmError, match="changed on disk while in use"):
        tok.encode("x")


def test_source_digest_is_remembered_by_signature(fresh_cache, tmp_path, monkeypatch):
    _settle(monkeypatch)
    src = tmp_path / "f.bin"
    src.write_bytes(b"one")
    import hashlib

    assert engine.file_sha256(str(src)) == hashlib.sha256(b"one").digest()
    engine.forget_index()
    assert engine._index_read()[("sha256", str(src))][1] == hashlib.sha256(b"one").digest()
    time.sleep(0.05)
    src.write_bytes(b"two")  # same size, new ctime
    assert engine.file_sha256(str(src)) == hashlib.sha256(b"two").digest()


def test_cold_start_imports(fresh_cache, gpt2_json, monkeypatch):
    """A ready tokenizer from warm, settled caches needs neither wasmtime's Python
    bindings nor json, pathlib, hashlib, typing or threading."""
    _settle(monkeypatch)
    for _ in range(3):  # compile + parse, then verify the module and snapshot files in full
        engine.forget_modules()
        Tokenizer.from_file(gpt2_json)
    code = ("import sys, aigc.wasm\n"
            f"tok = aigc.wasm.Tokenizer.from_file({str(gpt2_json)!r})\n"
            "assert tok.encode('hi') == [5303], tok.encode('hi')\n"
            "assert tok._snap is not None\n"
            "print(','.join(m for m in ('wasmtime', 'json', 'pathlib', 'hashlib', 'typing', "
            "'threading', 'numpy') if m in sys.modules))")
    env = dict(os.environ, AIGC_WASM_CACHE=str(fresh_cache))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _encode_in_child(tok, queue):
    try:
        queue.put((tok.encode("forked"), tok.runtime.instances_created))
    except BaseException as e:  # report instead of dying silently
        queue.put(repr(e))


def test_snapshot_file_is_shared_safely_across_fork(fresh_cache, gpt2_json, monkeypatch):
    import multiprocessing

    _settle(monkeypatch)
    for _ in range(2):
        Tokenizer.from_file(gpt2_json)
    tok = Tokenizer.from_file(gpt2_json)
    assert tok._snap is not None
    expected = tok.encode("forked")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_encode_in_child, args=(tok, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results == [(expected, 1)] * 2  # each child read the image from the inherited file
    assert tok.encode("forked") == expected and tok.runtime.instances_created == 1
