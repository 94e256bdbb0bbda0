"""embed under load: OpenAI `POST /function/embed/v1/embeddings`, expect one vector per input.

    python -m locust -f loadtests/embed.py --headless -H http://127.0.0.1:8080 -u 4 -t 30s

`--embed-model` names the model (default minilm-l6-int8), `--batch` how many
sentences go in one request.
"""

from __future__ import annotations

from gateway_user import FunctionUser  # imports locust first
from locust import events

import itertools

SENTENCES = [
    "A cat sits on the mat.",
    "Serverless functions scale to zero when nobody calls them.",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to points where similar meanings lie close together.",
    "How long does the first request wait when an instance has to start?",
    "Replicas are added when the in-flight requests per replica pass the target.",
]


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--embed-model", env_var="LOCUST_EMBED_MODEL", default="minilm-l6-int8")
    parser.add_argument("--batch", env_var="LOCUST_BATCH", type=int, default=1, help="sentences per request")


class EmbedUser(FunctionUser):
    function = "embed"

    def on_start(self):
        super().on_start()
        self.sentences = itertools.cycle(SENTENCES)

    def invoke(self, name: str) -> None:
        opts = self.environment.parsed_options
        batch = [next(self.sentences) for _ in range(opts.batch)]
        with self.client.post(f"/function/{self.fn}/v1/embeddings", name=name, catch_response=True,
                              json={"model": opts.embed_model, "input": batch}) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                data = resp.json()["data"]
            except (ValueError, KeyError, TypeError):
                resp.failure(f"not an OpenAI embeddings answer: {resp.text[:200]}")
                return
            if len(data) != len(batch) or not data[0].get("embedding"):
                resp.failure(f"{len(data)} embeddings for {len(batch)} inputs")
