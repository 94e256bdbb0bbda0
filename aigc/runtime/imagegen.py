"""Image generators on ONNX Runtime: what turns a seed (and a condition) into pixels, and into PNG.

Used by functions/image-generate and by the model builders' checks (aigc/models/imagegen.py), so
the sampler a build verifies is the one that serves.

- terrain: a one-step consistency model. Noise at sigma_max goes through the UNet once with the
  difficulty label (d-1)/(classes-1); its output in [-1, 1] maps back to metres through the asinh
  companding the model was trained with. A heightmap PNG is 16-bit grey over a span of metres the
  caller picks (image-generate: each map's own, so flat maps stay visible; it reports the span).
- faces: a DCGAN generator: latent N(0, 1) of `latent_size`, output tanh RGB, PNG 8-bit RGB.

Every image is made from its own seed, so image i of a request with seed s is the same as the
first image of a request with seed s+i.
"""

from __future__ import annotations

import io

import numpy as np


def terrain_heights(session, config: dict, difficulties: list[int], seeds: list[int]) -> np.ndarray:
    """(N, size, size) heights in metres, each from its seed; the lowest point of each map is 0."""
    size, top = config["native_size"], config["height_range"]
    noisy = np.stack([np.random.default_rng(s).standard_normal((1, size, size), dtype=np.float32) for s in seeds])
    noisy *= np.float32(config["sigma_max"])
    labels = ((np.asarray(difficulties, np.float64) - 1) / (config["num_classes"] - 1)).astype(np.float32)
    sigmas = np.full(len(seeds), config["sigma_max"], dtype=np.float32)
    out = session.run(["denoised"], {"noisy": noisy, "sigma": sigmas, "difficulty": labels})[0][:, 0]
    unit = np.clip((out + 1.0) * 0.5, 0.0, 1.0)
    scale = config["asinh_scale"]
    heights = np.clip(scale * np.sinh(unit * np.arcsinh(top / scale)), 0.0, top).astype(np.float32)
    return heights - heights.min(axis=(-2, -1), keepdims=True)


def faces(session, config: dict, seeds: list[int]) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB faces, each from its seed."""
    z = np.stack([np.random.default_rng(s).standard_normal((config["latent_size"], 1, 1), dtype=np.float32)
                  for s in seeds])
    rgb = session.run(None, {"latent": z})[0]  # (N, 3, H, W) in [-1, 1]
    return np.clip(np.round((rgb.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def png(pixels: np.ndarray, height_range: float | None = None) -> bytes:
    """PNG bytes of an RGB uint8 image, or of a heightmap in metres as 16-bit grey from 0 to `height_range`."""
    from PIL import Image

    if height_range is not None:
        grey = np.round(np.clip(pixels / height_range, 0.0, 1.0) * 65535).astype(np.uint16)
        image = Image.fromarray(grey)
    else:
        image = Image.fromarray(pixels, "RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
