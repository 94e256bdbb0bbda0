"""image-classify under load: POST a JPEG body to /function/image-classify, expect top-k labels.

    python -m locust -f loadtests/image_classify.py --headless -H http://127.0.0.1:8080 -u 4 -t 30s

`--image PATH` (or LOCUST_IMAGE) picks the photo; without it a JPEG is made from
scikit-image's bundled "chelsea" photo (a cat), so the run needs no download.
"""

from __future__ import annotations

from gateway_user import FunctionUser  # imports locust first
from locust import events

import io

_body: dict[str, bytes] = {}


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--image", env_var="LOCUST_IMAGE", default="", help="JPEG/PNG file to send")


def image_bytes(path: str) -> bytes:
    if path:
        with open(path, "rb") as fh:
            return fh.read()
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class ImageClassifyUser(FunctionUser):
    function = "image-classify"

    def on_start(self):
        super().on_start()
        if "jpeg" not in _body:  # read once per process, shared by every user
            _body["jpeg"] = image_bytes(self.environment.parsed_options.image)

    def invoke(self, name: str) -> None:
        with self.client.post(f"/function/{self.fn}", data=_body["jpeg"], name=name,
                              headers={"Content-Type": "image/jpeg"}, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                body = resp.json()
            except ValueError:
                resp.failure("answer is not JSON")
                return
            preds = body.get("predictions") if isinstance(body, dict) else None
            if not preds or "label" not in preds[0]:
                resp.failure(f"no predictions in {str(body)[:200]}")
