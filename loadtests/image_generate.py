"""image-generate under load: OpenAI `POST /function/image-generate/v1/images/generations`.

    python -m locust -f loadtests/image_generate.py --headless -H http://127.0.0.1:8080 -u 2 -t 60s

Each call asks for `--images N` PNGs (default 1) with a new seed; it checks that N decodable PNGs
came back, and records IMAGES "images/s per user" (the "response time" columns hold that rate).
"""

from __future__ import annotations

from gateway_user import FunctionUser, fire  # imports locust first
from locust import events

import base64
import time

PNG = b"\x89PNG\r\n\x1a\n"


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--image-model", env_var="LOCUST_IMAGE_MODEL", default="terrain-diffusion")
    parser.add_argument("--images", env_var="LOCUST_IMAGES", type=int, default=1, help="images per request")
    parser.add_argument("--prompt", env_var="LOCUST_PROMPT", default="rolling hills, difficulty 40")


class ImageGenerateUser(FunctionUser):
    function = "image-generate"

    def on_start(self):
        super().on_start()
        self.seed = id(self) % 100_000 * 1000  # users draw from different seeds

    def invoke(self, name: str) -> None:
        opts = self.environment.parsed_options
        self.seed += opts.images
        body = {"model": opts.image_model, "prompt": opts.prompt, "n": opts.images, "seed": self.seed}
        started = time.perf_counter()
        with self.client.post(f"/function/{self.fn}/v1/images/generations", json=body, name=name,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                images = [base64.b64decode(d["b64_json"]) for d in resp.json()["data"]]
            except (ValueError, KeyError, TypeError):
                resp.failure(f"not an OpenAI images answer: {resp.text[:200]}")
                return
            if len(images) != opts.images or not all(i.startswith(PNG) for i in images):
                resp.failure(f"{len(images)} answers for {opts.images} PNGs asked")
                return
        fire(self.environment, "IMAGES", "images/s per user", opts.images / (time.perf_counter() - started))
