"""Helpers for a function's own tests (`function/handler_test.py`), which the image's test stage runs.

    from aigc.runtime import testing
    from function import handler

    @testing.needs_model("efficientnet-lite0")
    def test_coffee_is_espresso():
        testing.loaded(handler.model)
        out = handler.handle(testing.request(body=photo), None)

A test that needs weights runs where they are in the store (baked with the
build arg AIGC_MODELS, or AIGC_MODEL_STORE pointing at a store) and is
skipped, saying why, in an image built without them.
"""

from __future__ import annotations

from typing import Any

from . import store
from .handler import Event
from .model import Model


def request(path: str = "/", body: bytes | str = b"", method: str = "POST", query: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> Event:
    """The Event a request with these parts would give the handler."""
    return Event(body=body.encode() if isinstance(body, str) else body, headers=dict(headers or {}),
                 method=method, query=dict(query or {}), path=path)


def in_store(name: str) -> bool:
    return (store.store_root() / name / store.MANIFEST).is_file()


def needs_model(name: str) -> Any:
    import pytest

    return pytest.mark.skipif(not in_store(name), reason=f"model {name!r} is not in the store at "
                              f"{store.store_root()} (built without AIGC_MODELS={name}?)")


def loaded(model: Model, timeout: float = 300.0) -> Model:
    """`model` once loaded (what the runtime waits for before a request), or its load error."""
    model.wait_ready(timeout)
    return model
