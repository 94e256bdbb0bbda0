"""speech under load: OpenAI `POST /function/speech/v1/audio/speech`, 16-bit PCM read as it streams.

    python -m locust -f loadtests/speech.py --headless -H http://127.0.0.1:8080 -u 2 -t 60s

The request is timed to the last byte (what a client waits for). Each call also records:
  AUDIO "time to first audio"   request sent -> first audio bytes (ms)
  RATE  "x real time per user"  seconds of audio / seconds the whole answer took; the
                                "response time" columns hold that factor here
"""

from __future__ import annotations

from gateway_user import FunctionUser, fire  # imports locust first
from locust import events

import time

TEXTS = [
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore.",
    "Serverless functions scale to zero when nobody calls them, and start again on the next request.",
    "It was a bright cold day in April, and the clocks were striking thirteen. Call me Ishmael.",
]
RATE, BYTES_PER_SAMPLE = 24000, 2


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--speech-model", env_var="LOCUST_SPEECH_MODEL", default="hibari-heart")
    parser.add_argument("--voice", env_var="LOCUST_VOICE", default="heart")


class SpeechUser(FunctionUser):
    function = "speech"

    def on_start(self):
        super().on_start()
        self.turn = 0

    def invoke(self, name: str) -> None:
        opts = self.environment.parsed_options
        self.turn += 1
        body = {"model": opts.speech_model, "voice": opts.voice, "response_format": "pcm",
                "input": TEXTS[self.turn % len(TEXTS)]}
        started = time.perf_counter()
        first, size = None, 0
        with self.client.post(f"/function/{self.fn}/v1/audio/speech", json=body, name=name, stream=True,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                for chunk in resp.iter_content(chunk_size=None):
                    if chunk and first is None:
                        first = time.perf_counter()
                    size += len(chunk)
            except OSError as exc:
                resp.failure(str(exc))
                return
            took = time.perf_counter() - started
            resp.request_meta["response_time"] = took * 1000
            if first is None or size < RATE * BYTES_PER_SAMPLE:
                resp.failure(f"{size} bytes of audio: less than a second")
                return
        fire(self.environment, "AUDIO", "time to first audio", (first - started) * 1000)
        fire(self.environment, "RATE", "x real time per user", size / BYTES_PER_SAMPLE / RATE / took)
