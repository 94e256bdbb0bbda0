"""text-generate under load: OpenAI chat completions with `"stream": true`, read as server-sent events.

    python -m locust -f loadtests/text_generate.py --headless -H http://127.0.0.1:8080 -u 2 -t 60s

The request itself is timed to `data: [DONE]` (the whole stream, what a client
waits for; locust alone would stop the clock at the response headers). Each call
also records two custom samples:
  SSE  "time to first token"  request sent -> first chunk with content (ms)
  RATE "tokens/s per user"    completion tokens after the first / (last token - first
                              token); the "response time" columns hold tokens/s here
Completion tokens come from the usage chunk (`stream_options.include_usage`),
or, from a server without it, the count of content chunks.
"""

from __future__ import annotations

from gateway_user import FunctionUser, fire  # imports locust first
from locust import events

import json
import time

PROMPTS = [
    "Write a haiku about a cat sitting on a mat.",
    "Explain in two sentences what serverless computing is.",
    "List three colours of the rainbow.",
    "What is the capital of France? Answer briefly.",
]


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--chat-model", env_var="LOCUST_CHAT_MODEL", default="smollm2-135m")
    parser.add_argument("--max-tokens", env_var="LOCUST_MAX_TOKENS", type=int, default=32)


class StreamError(Exception):
    pass


def read_stream(lines) -> tuple[float | None, float | None, int, int | None]:
    """(first content time, last content time, content chunks, usage completion tokens) of an SSE body.

    Raises StreamError when the stream ends without `data: [DONE]` or a chunk is not JSON.
    """
    first = last = None
    chunks, usage_tokens = 0, None
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else raw
        if not line.startswith("data:"):
            continue  # blank separators, comments, event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            return first, last, chunks, usage_tokens
        try:
            obj = json.loads(data)
        except ValueError:
            raise StreamError(f"chunk is not JSON: {data[:100]}") from None
        if obj.get("usage"):
            usage_tokens = obj["usage"].get("completion_tokens")
        for choice in obj.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
                chunks += 1
    raise StreamError("stream ended without data: [DONE]")


class TextGenerateUser(FunctionUser):
    function = "text-generate"

    def on_start(self):
        super().on_start()
        self.turn = 0

    def invoke(self, name: str) -> None:
        opts = self.environment.parsed_options
        self.turn += 1
        body = {"model": opts.chat_model, "stream": True, "stream_options": {"include_usage": True},
                "max_tokens": opts.max_tokens, "temperature": 0.0,
                "messages": [{"role": "user", "content": PROMPTS[self.turn % len(PROMPTS)]}]}
        started = time.perf_counter()
        with self.client.post(f"/function/{self.fn}/v1/chat/completions", json=body, name=name, stream=True,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                resp.failure(f"not an event stream: {resp.headers.get('Content-Type')}")
                return
            try:
                first, last, chunks, tokens = read_stream(resp.iter_lines())
            except (StreamError, OSError) as exc:
                resp.failure(str(exc))
                return
            resp.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            if first is None:
                resp.failure("no content in the stream")
                return
        env = self.environment
        fire(env, "SSE", "time to first token", (first - started) * 1000)
        tokens = tokens or chunks
        if tokens > 1 and last > first:
            # the first token's wait is TTFT; the rate is over the tokens that followed it
            fire(env, "RATE", "tokens/s per user", (tokens - 1) / (last - first))
