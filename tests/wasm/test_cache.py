"""The precompiled-module cache: used when valid, ignored and replaced when not."""

from __future__ import annotations

import pytest

from aigc.wasm import Tokenizer, capi, engine


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_WASM_CACHE", str(tmp_path))
    engine.forget_modules()
    yield tmp_path
    engine.forget_modules()


MODULE_STATS = ("compiled", "deserialized", "rejected", "write_failed")


def _load(path, **kwargs):
    engine.forget_modules()  # force the next load to go to disk
    before = dict(engine.stats)
    tok = Tokenizer.from_file(path, **kwargs)
    assert tok.encode("cache me") == [23870, 502]
    delta = {k: engine.stats[k] - before[k] for k in before}
    return {k: delta[k] for k in MODULE_STATS} if "snapshot" not in kwargs else delta


def _path():
    wasm = engine.wasm_path("tokenizer").read_bytes()
    return engine.cache_path("tokenizer", wasm)


@pytest.fixture()
def spec(gpt2_json):
    return gpt2_json


def test_second_load_deserializes(fresh_cache, spec):
    assert _load(spec) == {"compiled": 1, "deserialized": 0, "rejected": 0, "write_failed": 0}
    path = _path()
    assert path.parent == fresh_cache and path.is_file()
    mtime = path.stat().st_mtime_ns
    assert _load(spec) == {"compiled": 0, "deserialized": 1, "rejected": 0, "write_failed": 0}
    assert path.stat().st_mtime_ns == mtime  # read, not rewritten
    assert not list(fresh_cache.glob("*.tmp"))


def test_corrupted_cache_is_ignored_and_replaced(fresh_cache, spec):
    _load(spec)
    path = _path()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the machine code
    path.write_bytes(bytes(data))
    assert _load(spec) == {"compiled": 1, "deserialized": 0, "rejected": 1, "write_failed": 0}
    assert _load(spec)["deserialized"] == 1  # the replacement is valid
    path.write_bytes(data[:100])  # truncated
    assert _load(spec)["rejected"] == 1


def test_foreign_cache_file_is_ignored(fresh_cache, spec):
    from aigc.wasm import ImagePreprocessor
    import numpy as np

    ImagePreprocessor()(np.zeros((8, 8, 3), np.uint8))  # caches image.wasm
    image_cwasm = next(fresh_cache.glob("image-*.cwasm"))
    _path().write_bytes(image_cwasm.read_bytes())  # right name, wrong module
    assert _load(spec) == {"compiled": 1, "deserialized": 0, "rejected": 1, "write_failed": 0}


def test_cache_from_other_engine_config_is_ignored(fresh_cache, spec):
    """A module compiled without fuel metering, even under our key and with a
    valid checksum, is refused by wasmtime and recompiled."""
    wasm = engine.wasm_path("tokenizer").read_bytes()
    key = engine.cache_key(wasm)
    payload = capi.Module.compile(capi.Engine(consume_fuel=False), wasm).serialize()
    engine._write_cache(_path(), key, payload)
    assert _load(spec) == {"compiled": 1, "deserialized": 0, "rejected": 1, "write_failed": 0}


def test_cache_key_depends_on_module_and_config(monkeypatch):
    wasm = engine.wasm_path("tokenizer").read_bytes()
    key = engine.cache_key(wasm)
    assert engine.cache_key(wasm + b"\0") != key
    monkeypatch.setattr(engine, "ENGINE_SETTINGS", (("consume_fuel", False),))
    assert engine.cache_key(wasm) != key


def test_unwritable_cache_still_works(tmp_path, monkeypatch, spec):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("AIGC_WASM_CACHE", str(blocker / "sub"))
    delta = _load(spec, snapshot=True)
    engine.forget_modules()
    assert delta["compiled"] == 1 and delta["write_failed"] == 2  # module and snapshot


def test_snapshot_skips_parsing_and_matches(fresh_cache, gpt2_json, corpus):
    first = _load(gpt2_json, snapshot=True)
    assert first["snapshot_loaded"] == 0 and len(list(fresh_cache.glob("*.snap"))) == 1
    second = _load(gpt2_json, snapshot=True)
    assert second["snapshot_loaded"] == 1 and second["deserialized"] == 1
    restored = Tokenizer.from_file(gpt2_json)  # from the snapshot
    parsed = Tokenizer.from_file(gpt2_json, snapshot=False)
    assert restored.info == parsed.info
    assert restored.encode_batch(corpus).ids == parsed.encode_batch(corpus).ids
    assert restored.decode(parsed.encode("ünïcode")) == "ünïcode"


def test_damaged_snapshot_is_ignored(fresh_cache, gpt2_json):
    _load(gpt2_json, snapshot=True)
    snap = next(fresh_cache.glob("*.snap"))
    data = bytearray(snap.read_bytes())
    data[-1000] ^= 0x01  # inside the memory image
    snap.write_bytes(bytes(data))
    delta = _load(gpt2_json, snapshot=True)
    assert delta["snapshot_rejected"] == 1 and delta["snapshot_loaded"] == 0
    assert _load(gpt2_json, snapshot=True)["snapshot_loaded"] == 1  # rewritten


def test_snapshot_key_tracks_file_and_module(gpt2_json):
    from aigc.wasm import snapshot

    raw = gpt2_json.read_bytes()
    assert snapshot.key_for(raw) == snapshot.key_for(bytes(raw))
    assert snapshot.key_for(raw + b" ") != snapshot.key_for(raw)


def test_unmetered_engine_is_a_separate_cache_entry(fresh_cache, spec, corpus):
    """fuel=False compiles different code: its own key and file, same ids, and a
    metered module stored under the unmetered key is refused."""
    wasm = engine.wasm_path("tokenizer").read_bytes()
    assert engine.cache_key(wasm, fuel=False) != engine.cache_key(wasm)
    metered = Tokenizer.from_file(spec, snapshot=False)
    free = Tokenizer.from_file(spec, snapshot=False, fuel=False)
    assert free.encode_batch(corpus[:300]).ids == metered.encode_batch(corpus[:300]).ids
    assert engine.cache_path("tokenizer", wasm).is_file()
    unmetered = engine.cache_path("tokenizer", wasm, fuel=False)
    assert unmetered.is_file()
    engine._write_cache(unmetered, engine.cache_key(wasm, fuel=False),
                        engine.read_blob(engine.cache_path("tokenizer", wasm), engine.cache_key(wasm)))
    engine.forget_modules()
    before = dict(engine.stats)
    assert Tokenizer.from_file(spec, snapshot=False, fuel=False).encode("cache me") == [23870, 502]
    assert engine.stats["rejected"] - before["rejected"] == 1
    assert engine.stats["compiled"] - before["compiled"] == 1
