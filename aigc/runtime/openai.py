"""OpenAI-compatible request parsing and response shapes shared by functions.

Errors keep this project's `{"error": "…"}` body; the official client shows
that string as the exception message.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from dataclasses import dataclass, field
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


# --- text generation: /v1/completions and /v1/chat/completions ------------------------------

MAX_STOP_SEQUENCES = 4  # OpenAI's limit
CHAT_ROLES = ("system", "developer", "user", "assistant")
# accepted only at their neutral values: silently ignoring them would return something else than asked
_UNSUPPORTED = {"n": (None, 1), "best_of": (None, 1), "echo": (None, False), "logprobs": (None, False),
                "top_logprobs": (None, 0), "suffix": (None, ""), "presence_penalty": (None, 0),
                "frequency_penalty": (None, 0), "logit_bias": (None, {}), "tools": (None, []),
                "functions": (None, []), "tool_choice": (None, "none"), "response_format": (None, {"type": "text"})}


@dataclass
class Sampling:
    max_tokens: int | None  # None: as many as fit in the context, up to the cap
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False


@dataclass
class GenerationRequest:
    model: str
    sampling: Sampling
    prompt: str | None = None  # /v1/completions
    messages: list[dict[str, str]] | None = None  # /v1/chat/completions, content flattened to text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise errors.InvalidInput(f"'{name}' must be a number, got {type(value).__name__}")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise errors.InvalidInput(f"'{name}' is {value}; it must lie in {bracket}{low:g}, {high:g}]")
    return float(value)


def _integer(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidInput(f"'{name}' must be an integer, got {type(value).__name__}")
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise errors.InvalidInput(f"'{name}' must be true or false, got {type(value).__name__}")
    return value


def parse_sampling(body: dict, max_tokens_cap: int, default_max_tokens: int | None) -> Sampling:
    """The generation knobs both endpoints share; every refusal names the field."""
    for name, neutral in _UNSUPPORTED.items():
        if name in body and body[name] not in neutral:
            raise errors.InvalidInput(f"'{name}' is not supported by this function; leave it out")
    field_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, field_name)
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif max_tokens < 1:
        raise errors.InvalidInput(f"'{field_name}' is {max_tokens}; it must be at least 1")
    elif max_tokens > max_tokens_cap:
        raise errors.InvalidInput(f"'{field_name}' is {max_tokens}; this function generates at most "
                                  f"{max_tokens_cap} tokens per request (AIGC_MAX_TOKENS)")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise errors.InvalidInput("'stop' must be a non-empty string or a list of non-empty strings")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise errors.InvalidInput(f"'stop' has {len(stop)} sequences; at most {MAX_STOP_SEQUENCES}")
    seed = _integer(body, "seed")
    if seed is not None and not -(1 << 63) <= seed < (1 << 64):
        raise errors.InvalidInput("'seed' must fit in 64 bits")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise errors.InvalidInput("'stream_options' must be an object, and is allowed only with 'stream': true")
    return Sampling(max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                    top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True), stop=stop, seed=seed,
                    stream=stream, include_usage=_flag(options or {}, "include_usage"))


def parse_completions(body: Any, served: list[str], max_tokens_cap: int) -> GenerationRequest:
    """A /v1/completions body; like OpenAI, max_tokens defaults to 16."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("request body must be a JSON object with 'model' and 'prompt'")
    model = check_model(body, served)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) or isinstance(t, list) for t in prompt):
        raise errors.InvalidInput("token-id prompts are not supported by this function; send a string")
    if isinstance(prompt, list):
        raise errors.InvalidInput("'prompt' must be one string; batches of prompts are not supported")
    if not isinstance(prompt, str):
        raise errors.InvalidInput(f"'prompt' must be a string, got {type(prompt).__name__}")
    if not prompt:
        raise errors.InvalidInput("'prompt' is empty; send some text to continue")
    return GenerationRequest(model, parse_sampling(body, max_tokens_cap, min(16, max_tokens_cap)), prompt=prompt)


def _message_text(i: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise errors.InvalidInput(f"'messages[{i}].content[{j}]' must be {{\"type\": \"text\", \"text\": "
                                          "string}; only text parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise errors.InvalidInput(f"'messages[{i}].content' must be a string or a non-empty list of text parts")


def parse_chat(body: Any, served: list[str], max_tokens_cap: int) -> GenerationRequest:
    """A /v1/chat/completions body; max_tokens defaults to what fits (the caller clips to the context)."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("request body must be a JSON object with 'model' and 'messages'")
    model = check_model(body, served)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.InvalidInput("'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    flat = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise errors.InvalidInput(f"'messages[{i}]' must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise errors.InvalidInput(f"'messages[{i}].role' is {role!r}; it must be one of {list(CHAT_ROLES)}")
        # developer is OpenAI's newer name for system; chat templates know only system
        flat.append({"role": "system" if role == "developer" else role,
                     "content": _message_text(i, message.get("content"))})
    return GenerationRequest(model, parse_sampling(body, max_tokens_cap, None), messages=flat)


def generation_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_object(rid: str, created: int, model: str, text: str, finish_reason: str | None,
                      usage_: dict | None = None) -> dict[str, Any]:
    """A /v1/completions response, or (finish_reason None, no usage) one of its stream chunks."""
    out: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created, "model": model,
                           "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def chat_object(rid: str, created: int, model: str, text: str, finish_reason: str, usage_: dict) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage_}


def chat_chunk(rid: str, created: int, model: str, delta: dict, finish_reason: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(rid: str, created: int, model: str, chat: bool, usage_: dict) -> dict[str, Any]:
    """The last chunk when stream_options.include_usage is set: no choices, only usage."""
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": [], "usage": usage_}


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


# --- speech: /v1/audio/speech ---------------------------------------------------------------

MAX_SPEECH_CHARS = 4096  # OpenAI's limit for `input`
SPEED_RANGE = (0.5, 2.0)  # what the voices here render well (OpenAI's API takes 0.25-4)


@dataclass
class SpeechRequest:
    model: str
    input: str
    voice: str
    response_format: str
    speed: float


def parse_speech(body: Any, served: list[str], voices: list[str], formats: tuple[str, ...]) -> SpeechRequest:
    """A /v1/audio/speech body; every error is a 400 that names the field."""
    if not isinstance(body, dict):
        raise errors.InvalidInput("request body must be a JSON object with 'model', 'input' and 'voice'")
    model = body.get("model")
    if not isinstance(model, str) or model not in served:
        raise errors.InvalidInput(f"'model' is {model!r}; this function serves {served}")
    text = body.get("input")
    if not isinstance(text, str):
        raise errors.InvalidInput(f"'input' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise errors.InvalidInput("'input' is empty; send the text to speak")
    if len(text) > MAX_SPEECH_CHARS:
        raise errors.InvalidInput(f"'input' is {len(text)} characters; at most {MAX_SPEECH_CHARS} per request")
    voice = body.get("voice")
    if not isinstance(voice, str) or voice not in voices:
        raise errors.InvalidInput(f"'voice' is {voice!r}; this function has the voices {voices}")
    fmt = body.get("response_format", "mp3")  # OpenAI's default
    if fmt not in formats:
        raise errors.InvalidInput(f"'response_format' is {fmt!r}; supported here: {', '.join(formats)}")
    if body.get("stream_format", "audio") != "audio":
        raise errors.InvalidInput("'stream_format' must be 'audio': audio is streamed as it is made, not as SSE")
    speed = _number(body, "speed", 1.0, *SPEED_RANGE)
    return SpeechRequest(model, text, voice, fmt, speed)
