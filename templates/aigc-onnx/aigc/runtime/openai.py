"""OpenAI-compatible request parsing and response shapes shared by functions.

Errors keep this project's `{"error": "…"}` body; the official client shows
that string as the exception message.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np

from . import errors

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's own limit per request


def model_list(names: list[str], owner: str = "aigc") -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": owner}
                                       for n in names]}


def check_model(body: dict, served: list[str]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise errors.InvalidInput(f"'model' is required; this function serves {served}")
    if name not in served:
        raise errors.ModelNotFound(f"model {name!r} does not exist here; this function serves {served}")
    return name


def parse_embeddings(body: Any, served: list[str]) -> tuple[str, list[str], str]:
    """(model, texts, encoding_format) from a /v1/embeddings request body."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("request body must be a JSON object with 'model' and 'input'")
    model = check_model(body, served)
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise errors.InvalidInput("'input' must be a non-empty string or a non-empty list of strings")
    if all(isinstance(t, int) for t in texts) or all(isinstance(t, list) for t in texts):
        raise errors.InvalidInput("token-id input is not supported by this function; send strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise errors.InvalidInput(f"input[{i}] is {type(text).__name__}; every input must be a string")
        if not text.strip():
            raise errors.InvalidInput(f"input[{i}] is empty; every input must contain text")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise errors.InvalidInput(f"{len(texts)} inputs sent; at most {MAX_EMBEDDING_INPUTS} per request")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise errors.InvalidInput("'encoding_format' must be 'float' or 'base64'")
    if body.get("dimensions") is not None:
        raise errors.InvalidInput("'dimensions' is not supported: this model's size is fixed")
    return model, texts, encoding


def embeddings_response(model: str, vectors: np.ndarray, prompt_tokens: int, encoding: str) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(np.asarray(vectors, dtype=np.float32)):
        embedding: Any = (base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
                          if encoding == "base64" else vec.tolist())
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
