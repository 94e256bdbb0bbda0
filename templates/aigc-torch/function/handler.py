"""Sample aigc-torch function: a causal language model from the model store.

Set MODEL_NAME to a transformers model directory in the store (e.g. `aigc models
build smollm2-135m`). POST / with {"prompt": "...", "max_tokens": 32,
"temperature": 0} generates a continuation, with a KV-cached token loop
(aigc.runtime.generate); add "model": "<MODEL_NAME>:<adapter>" to use a LoRA
adapter stored as `<MODEL_NAME>--<adapter>`. GET / describes the model.
functions/text-generate in the project serves the same models OpenAI-style.
"""

import os

from aigc.runtime import errors, generate, openai

SAMPLE = "aigc-torch"  # the template's sample handler; handler_test.py tests only this one

MAX_TOKENS = 256
model = generate.CausalLM(os.environ.get("MODEL_NAME", "model"))


def handle(event, context):
    if event is None or event.method == "GET":
        return {"model": model.name, "ready": model.ready, "platform": model.platform,
                "generate": 'POST / {"prompt": "...", "max_tokens": 32}'}
    body = event.json()
    if isinstance(body, dict):
        body.setdefault("model", model.name)
    request = openai.parse_completions(body, model.served_names(), MAX_TOKENS)
    if request.sampling.stream:
        raise errors.InvalidInput("'stream' is not supported by this sample; see functions/text-generate")
    adapter = model.adapter_of(request.model)
    ids = model.encode(request.prompt)
    gen = model.generate(ids, adapter, request.sampling, model.budget(ids, request.sampling.max_tokens,
                                                                      MAX_TOKENS, "prompt"))
    text = gen.text()
    return {"model": request.model, "text": text, "finish_reason": gen.finish_reason,
            "usage": openai.usage(gen.prompt_tokens, gen.completion_tokens)}
