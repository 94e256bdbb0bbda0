"""text-generate: a causal LM (SmolLM2-135M-Instruct) with OpenAI-compatible completions and chat.

It runs on ONNX Runtime GenAI (4-bit weights, the store entry `<MODEL_NAME>-onnx`; no torch in the image),
with the LoRA adapters published for MODEL_NAME applied per request.

    POST /v1/completions        prompt -> text
    POST /v1/chat/completions   messages -> assistant message (the model's chat template applied)
    POST /                      either body: chat with "messages", else a completion (`faas-cli invoke`)
    GET  /v1/models             the base model and its LoRA adapters (`smollm2-135m:<adapter>`)

`stream: true` answers with server-sent events (`data: {chunk}` ... `data: [DONE]`).
Adapters live in the model store as `<base>--<adapter>` (see aigc/runtime/adapters.py)
and load on first use. AIGC_MAX_TOKENS caps max_tokens per request.
"""

import logging
import os
import time

from flask import Response

from aigc.runtime import errors, openai
from aigc.runtime.generate_onnx import OnnxCausalLM
from aigc.runtime.config import Settings


def _positive(name: str, default: str) -> int:
    raw = os.environ.get(name) or default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"invalid {name}={raw!r}: must be a whole number >= 1")
    return int(raw)


# checked at import, so a bad value stops the instance at start with the variable's name
MAX_TOKENS = _positive("AIGC_MAX_TOKENS", "512")
EXEC_TIMEOUT = Settings.from_env().exec_timeout
model = OnnxCausalLM(os.environ.get("MODEL_NAME", "smollm2-135m"), max_adapters=_positive("AIGC_MAX_ADAPTERS", "8"))
log = logging.getLogger("aigc.runtime")


def handle(event, context):
    route = (event.method, event.path.rstrip("/") or "/")
    if route == ("GET", "/v1/models"):
        return openai.model_list(model.served_names())
    if event.method == "GET" and event.path.startswith("/v1/models/"):
        wanted = event.path[len("/v1/models/"):]
        listed = openai.model_list(model.served_names())["data"]
        found = [m for m in listed if m["id"] == wanted]
        if not found:
            raise errors.ModelNotFound(f"model {wanted!r} does not exist here")
        return found[0]
    if route == ("POST", "/v1/completions"):
        return _generate(event.json(), chat=False)
    if route == ("POST", "/v1/chat/completions"):
        return _generate(event.json(), chat=True)
    if route == ("POST", "/"):
        body = event.json()
        if isinstance(body, dict):
            body.setdefault("model", model.name)  # `faas-cli invoke` users need not know the model's name
        return _generate(body, chat=isinstance(body, dict) and "messages" in body)
    raise errors.ModelNotFound(f"no route {event.method} {event.path}; use POST /v1/completions, "
                               "POST /v1/chat/completions, POST / or GET /v1/models")


def _generate(body, chat: bool):
    served = model.served_names(body.get("model") if isinstance(body, dict) else None)
    if chat:
        request = openai.parse_chat(body, served, MAX_TOKENS)
    else:
        request = openai.parse_completions(body, served, MAX_TOKENS)
    adapter = model.adapter_of(request.model)  # loads it now: an unusable adapter fails before streaming
    if chat:
        ids, field = model.chat_ids(request.messages), "messages"
    else:
        ids, field = model.encode(request.prompt), "prompt"
    sampling = request.sampling
    budget = model.budget(ids, sampling.max_tokens, MAX_TOKENS, field)
    rid, created = openai.generation_id(chat), int(time.time())
    if sampling.stream:
        # the runtime's gate keeps this request's in-flight slot until the stream closes; exec_timeout
        # bounds a stream too, and its end says so in-band (the 200 is long sent)
        gen = model.generate(ids, adapter, sampling, budget, deadline=time.monotonic() + EXEC_TIMEOUT)
        return Response(_events(gen, rid, created, request.model, chat), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    # past exec_timeout the client has its 504 already; stop spending CPU on the answer
    gen = model.generate(ids, adapter, sampling, budget, deadline=time.monotonic() + EXEC_TIMEOUT)
    text = gen.text()
    usage = openai.usage(gen.prompt_tokens, gen.completion_tokens)
    if chat:
        return openai.chat_object(rid, created, request.model, text, gen.finish_reason, usage)
    return openai.completion_object(rid, created, request.model, text, gen.finish_reason, usage)


def _events(gen, rid: str, created: int, name: str, chat: bool):
    """SSE chunks. Closing this generator (client gone) closes `gen`, which ends the token loop."""
    def piece(text: str, finish: str | None = None) -> bytes:
        if chat:
            return openai.sse(openai.chat_chunk(rid, created, name, {"content": text} if text else {}, finish))
        return openai.sse(openai.completion_object(rid, created, name, text, finish))

    try:
        if chat:
            yield openai.sse(openai.chat_chunk(rid, created, name, {"role": "assistant", "content": ""}, None))
        for text in gen:
            yield piece(text)
        if gen.finish_reason == "timeout":
            yield piece("", "length")  # OpenAI's reason for a cut answer, then why it was cut
            yield openai.sse({"error": f"generation stopped at exec_timeout={EXEC_TIMEOUT:g}s after "
                                       f"{gen.completion_tokens} tokens; ask for fewer tokens or raise exec_timeout"})
            yield openai.SSE_DONE
            return
        yield piece("", gen.finish_reason)
        if gen.sampling.include_usage:
            yield openai.sse(openai.usage_chunk(rid, created, name, chat,
                                                openai.usage(gen.prompt_tokens, gen.completion_tokens)))
        yield openai.SSE_DONE
    except Exception as exc:  # the 200 and headers are sent: report in-band, as OpenAI's streams do
        log.exception("generation failed mid-stream")
        message = exc.message if isinstance(exc, errors.AigcError) else f"internal error: {type(exc).__name__}: {exc}"
        yield openai.sse({"error": message})
    finally:
        gen.close()
