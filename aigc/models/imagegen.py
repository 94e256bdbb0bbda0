"""Image generators from registry packages: terrain heightmaps (diffusion) and faces (a DCGAN).

terrain-diffusion: `adaptive-terrain-diffusion` (MIT) ships a one-step consistency UNet as ONNX
that turns noise into a 128x128 heightmap conditioned on a difficulty 1-100. It is stored as
shipped, with the sampler's constants read from the package's own `TerrainGenerator` class; the
build samples with the serving code (aigc/runtime/imagegen.py) and with the package's
generator from the same seeds, and accepts the entry only if both agree.

dcgan-faces: `gan-face-generate` (code MIT) ships a 3.6M-parameter DCGAN generator as a torch
checkpoint, trained on DigiFace-1M, whose licence allows **non-commercial research only**: the
manifest says so in `restrictions`, and the function serves it only when named in MODELS. It is
exported to ONNX here, once, and checked against torch on fixed latents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runtime import imagegen
from . import package_dir, source

TERRAIN_FILE = "weights/terrain_consistency_unet_difficulty100.onnx"
FACES_RESTRICTION = ("Trained on DigiFace-1M, whose licence permits non-commercial research use only: do not "
                     "use generated faces commercially.")
MAX_DIFF = 1e-4


def terrain_config() -> dict[str, Any]:
    from terrain_diffusion.generator import TerrainGenerator as G

    return {"native_size": G.native_size, "num_classes": G.num_classes, "height_range": G.height_range,
            "asinh_scale": G.asinh_scale, "sigma_max": G.sigma_max, "steps": G.sampling_steps}


def build_terrain(out: Path) -> dict[str, Any]:
    import shutil

    import numpy as np
    import onnxruntime as ort
    from terrain_diffusion import TerrainGenerator

    shutil.copyfile(package_dir("terrain_diffusion") / TERRAIN_FILE, out / "model.onnx")
    config = terrain_config()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ours = imagegen.terrain_heights(session, config, [1, 50, 100], [11, 12, 13])
    package = TerrainGenerator(model=out / "model.onnx", device="cpu")
    theirs = np.concatenate([package.generate(1, difficulty=d, seed=s) for d, s in ((1, 11), (50, 12), (100, 13))])
    diff = float(np.abs(ours - theirs).max())
    if diff > MAX_DIFF:
        raise RuntimeError(f"our sampler differs from the package's by {diff:.2e} m (> {MAX_DIFF})")
    (out / "terrain.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"task": "image-generation", "format": "onnx", "platform": "onnxruntime_onnx",
            "generates": "128x128 terrain heightmaps (metres), conditioned on a difficulty 1-100",
            "check": {"max_abs_diff_vs_package_m": diff, "seeds": [11, 12, 13], "difficulties": [1, 50, 100]},
            "sources": [source("adaptive-terrain-diffusion", [f"terrain_diffusion/{TERRAIN_FILE}"])]}


def build_faces(out: Path) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch
    from gan_face_generate.models import Generator

    nz, size = 100, 64
    checkpoint = torch.load(package_dir("gan_face_generate") / "weights.tar", map_location="cpu", weights_only=True)
    net = Generator(0, 3, nz, size).eval()
    net.load_state_dict(checkpoint["netG_state_dict"])
    latents = torch.from_numpy(np.random.default_rng(5).standard_normal((4, nz, 1, 1), dtype=np.float32))
    torch.onnx.export(net, (latents,), str(out / "model.onnx"), input_names=["latent"], output_names=["image"],
                      dynamic_axes={"latent": {0: "batch"}, "image": {0: "batch"}}, opset_version=17, dynamo=False)
    with torch.inference_mode():
        expected = net(latents).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    diff = float(np.abs(session.run(None, {"latent": latents.numpy()})[0] - expected).max())
    if diff > MAX_DIFF:
        raise RuntimeError(f"the ONNX export differs from torch by {diff:.2e} (> {MAX_DIFF})")
    (out / "faces.json").write_text(json.dumps({"latent_size": nz, "native_size": size}, indent=2) + "\n")
    return {"task": "image-generation", "format": "onnx", "platform": "onnxruntime_onnx",
            "generates": "64x64 RGB faces, unconditional", "restrictions": FACES_RESTRICTION,
            "export": {"tool": f"torch.onnx {torch.__version__}", "opset": 17, "max_abs_diff_vs_torch": diff},
            "sources": [source("gan-face-generate", ["gan_face_generate/weights.tar (netG_state_dict)"])]}
