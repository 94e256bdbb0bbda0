"""image-generate: OpenAI-style image generation, returning PNGs.

    POST /v1/images/generations  {"model", "prompt", "n", "size", "response_format", "seed"} -> PNGs (b64_json)
    POST /                       the same body (`faas-cli invoke`); plain text is taken as the prompt
    GET  /v1/models              the models, with any restriction on their use
    POST /v2/models/<model>/infer  OIP: see each model's metadata

MODEL_NAMES (comma-separated store entries) picks the models; the first is the default:
- terrain-diffusion (MIT): 128x128 terrain heightmaps, 16-bit grey PNGs (0 = the map's lowest
  point, 65535 = its highest, `max_height_m` metres above it), one UNet step each. It is conditioned on a difficulty 1-100: the
  body's `difficulty`, else the first whole number from 1 to 100 in the prompt, else one drawn
  from each image's seed. The response says which.
- dcgan-faces (opt-in): 64x64 faces from a DCGAN trained on DigiFace-1M, whose licence allows
  **non-commercial research use only**; unconditional, so the prompt is reported as ignored.

`seed` (an extension; random when absent, and returned) makes results repeatable: image i of a
request is made from seed + i, so the same body gives the same PNG bytes. `size` must be the
model's native size; `response_format` b64_json only (there is no file store to link `url`s to).
Batches go through /async-function/image-generate, with the result posted to X-Callback-Url.
"""

import base64
import json
import os
import re
import secrets
import time

from aigc.runtime import Model, TensorSpec, errors, imagegen, openai, ort, store

MAX_IMAGES = 8        # per request: ~10 s of terrain on 2 cores
MAX_PROMPT = 1000     # characters, as dall-e-2
_NUMBER = re.compile(r"(?<![\d.])(\d{1,3})(?![\d.])")


class Generator(Model):
    platform = "onnxruntime_onnx"
    fork_safe = True  # a session from aigc.runtime.ort: a zygote may load it and fork replicas
    config_file = ""

    def load(self):
        stored = store.open_model(self.name)
        self.restrictions = stored.manifest.get("restrictions")
        self.config = json.loads(stored.file(self.config_file).read_text())
        self.session = ort.session(stored.file("model.onnx"))

    @property
    def size(self) -> str:
        return f"{self.config['native_size']}x{self.config['native_size']}"


class Terrain(Generator):
    config_file = "terrain.json"
    inputs = (TensorSpec("difficulty", "INT32", (-1,)),)
    outputs = (TensorSpec("heightmap", "FP32", (-1, 128, 128)),)

    def condition(self, body: dict, prompt: str, seeds: list[int]) -> tuple[list[dict], str]:
        classes = self.config["num_classes"]
        chosen = body.get("difficulty")
        if chosen is not None:
            if not isinstance(chosen, int) or isinstance(chosen, bool) or not 1 <= chosen <= classes:
                raise errors.InvalidInput(f"'difficulty' must be a whole number from 1 to {classes}, got {chosen!r}")
            how = f"ignored: 'difficulty' {chosen} was given"
        else:
            found = [int(m) for m in _NUMBER.findall(prompt) if 1 <= int(m) <= classes]
            chosen = found[0] if found else None
            how = (f"used: difficulty {chosen} from the prompt" if found
                   else f"ignored: no difficulty (1-{classes}) in it; each image's is drawn from its seed")
        levels = [chosen or int(_difficulty_rng(s).integers(1, classes + 1)) for s in seeds]
        return [{"seed": s, "difficulty": d} for s, d in zip(seeds, levels)], how

    def pngs(self, params: list[dict]) -> list[bytes]:
        heights = imagegen.terrain_heights(self.session, self.config, [p["difficulty"] for p in params],
                                           [p["seed"] for p in params])
        for p, h in zip(params, heights):
            p["max_height_m"] = round(float(h.max()), 4)
        return [imagegen.png(h, float(h.max()) or 1.0) for h in heights]

    def predict(self, inputs, parameters):
        levels = [int(d) for d in inputs["difficulty"].reshape(-1)]
        if not 1 <= len(levels) <= MAX_IMAGES or not all(1 <= d <= self.config["num_classes"] for d in levels):
            raise errors.InvalidInput(f"'difficulty' must hold 1 to {MAX_IMAGES} values from 1 to "
                                      f"{self.config['num_classes']}")
        base = _seed(parameters)
        return {"heightmap": imagegen.terrain_heights(self.session, self.config, levels,
                                                     [base + i for i in range(len(levels))])}


class Faces(Generator):
    config_file = "faces.json"
    inputs = (TensorSpec("seed", "INT64", (-1,)),)
    outputs = (TensorSpec("image", "UINT8", (-1, 64, 64, 3)),)

    def condition(self, body: dict, prompt: str, seeds: list[int]) -> tuple[list[dict], str]:
        return [{"seed": s} for s in seeds], "ignored: this model is unconditional"

    def pngs(self, params: list[dict]) -> list[bytes]:
        return [imagegen.png(img) for img in imagegen.faces(self.session, self.config, [p["seed"] for p in params])]

    def predict(self, inputs, parameters):
        seeds = [int(s) for s in inputs["seed"].reshape(-1)]
        if not 1 <= len(seeds) <= MAX_IMAGES or not all(0 <= s < 2**63 for s in seeds):
            raise errors.InvalidInput(f"'seed' must hold 1 to {MAX_IMAGES} values from 0 to 2^63-1")
        return {"image": imagegen.faces(self.session, self.config, seeds)}


def _difficulty_rng(seed: int):
    import numpy as np

    return np.random.default_rng([seed, 1])  # not the noise's stream: the difficulty is drawn apart from it


KINDS = {"terrain-diffusion": Terrain, "dcgan-faces": Faces}


def _models_from_env() -> dict[str, Generator]:
    names = [n.strip() for n in os.environ.get("MODEL_NAMES", "terrain-diffusion").split(",") if n.strip()]
    unknown = [n for n in names if n not in KINDS]
    if not names or unknown:  # raised at import: a misconfigured instance stops at start
        raise ValueError(f"MODEL_NAMES must name models from {sorted(KINDS)}, got {names}")
    return {n: KINDS[n](n) for n in names}


models = _models_from_env()


def _seed(body: dict) -> int:
    seed = body.get("seed")
    if seed is None:
        return secrets.randbelow(2**31)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63 - MAX_IMAGES:
        raise errors.InvalidInput(f"'seed' must be a whole number from 0 to 2^63-{MAX_IMAGES + 1}, got {seed!r}")
    return seed


def generate(body) -> dict:
    if not isinstance(body, dict):
        raise errors.InvalidInput("request body must be a JSON object with 'prompt'")
    name = body.get("model", next(iter(models)))
    if name not in models:
        raise errors.InvalidInput(f"'model' is {name!r}; this function serves {list(models)}")
    model = models[name]
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise errors.InvalidInput(f"'prompt' must be a string, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT:
        raise errors.InvalidInput(f"'prompt' is {len(prompt)} characters; at most {MAX_PROMPT}")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGES:
        raise errors.InvalidInput(f"'n' must be a whole number from 1 to {MAX_IMAGES}, got {n!r}")
    size = body.get("size", model.size)
    if size != model.size:
        raise errors.InvalidInput(f"'size' is {size!r}; {name} makes only {model.size} (the valid sizes: "
                                  f"['{model.size}'])")
    fmt = body.get("response_format", "b64_json")
    if fmt != "b64_json":
        raise errors.InvalidInput(f"'response_format' is {fmt!r}; only 'b64_json' is supported (no file store "
                                  "to link urls to)")
    for field in ("quality", "style"):
        if body.get(field) not in (None, "auto", "standard"):
            raise errors.InvalidInput(f"'{field}' is {body[field]!r}; {name} has no such setting (use 'auto')")
    seed = _seed(body)
    params, how = model.condition(body, prompt, [seed + i for i in range(n)])
    images = model.pngs(params)
    out = {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode("ascii")}
                                                 for png in images],
           "model": name, "size": model.size, "output_format": "png", "seed": seed, "prompt": how,
           "parameters": params}
    if model.restrictions:
        out["restrictions"] = model.restrictions
    return out


def handle(event, context):
    route = (event.method, event.path.rstrip("/") or "/")
    if route == ("GET", "/v1/models"):
        listed = openai.model_list(list(models))
        for entry in listed["data"]:
            if getattr(models[entry["id"]], "restrictions", None):
                entry["restrictions"] = models[entry["id"]].restrictions
        return listed
    if route == ("POST", "/v1/images/generations"):
        return generate(event.json())
    if route == ("POST", "/"):
        try:
            body = json.loads(event.body)
        except ValueError:
            body = None
        return generate(body if isinstance(body, dict) else {"prompt": event.body.decode("utf-8", "replace")})
    raise errors.ModelNotFound(f"no route {event.method} {event.path}; use POST /v1/images/generations, POST / "
                               "or GET /v1/models")
