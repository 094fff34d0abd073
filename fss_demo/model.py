"""A-MCG-style few-shot segmenter: frozen backbone, multi-context guiding, ConvLSTM over supports.

Read top to bottom: similarity maps (the training-free part), the ConvLSTM cell, the fusion head,
then `FewShotSegmenter`, which owns the backbone and the user-facing `segment()`.
"""
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from . import images
from .backbone import LEVEL_CHANNELS, build_backbone

# ---------------------------------------------------------------------------------------------------------------
# Similarity maps: class-agnostic cues that transfer to unseen classes (PANet / PFENet style)


def masked_average(features, mask):
    """(N, C, h, w), (N, 1, h, w) -> (N, C): the mean feature under a soft mask."""
    return (features * mask).sum((2, 3)) / mask.sum((2, 3)).clamp_min(1e-6)


def cosine_map(features, vector):
    """Cosine similarity of every pixel of (N, C, h, w) to a vector (N, C) -> (N, 1, h, w)."""
    return (F.normalize(features, dim=1) * F.normalize(vector, dim=1)[:, :, None, None]).sum(1, keepdim=True)


def resize_mask(mask, features):
    """(N, 1, H, W) soft mask -> share of object under each feature cell."""
    return F.adaptive_avg_pool2d(mask, features.shape[-2:])


def level_guidance(query, support, mask, with_prior=True, pool_support=False):
    """Maps at one backbone level: cosine to the object prototype, cosine to the background prototype,
    and the prior (PFENet): each query pixel's best cosine to any support pixel on the object, min-max scaled.
    pool_support: match against 2x2-pooled support pixels (a quarter of the cost at stride 8; the query side,
    where small objects must be found, keeps its resolution)."""
    object_prototype = masked_average(support, mask)
    background_prototype = masked_average(support, 1 - mask)
    cosines = [cosine_map(query, object_prototype), cosine_map(query, background_prototype)]
    if not with_prior:
        return torch.cat(cosines, 1)
    if pool_support:
        support, mask = F.avg_pool2d(support, 2, ceil_mode=True), F.avg_pool2d(mask, 2, ceil_mode=True)
    pixel_match = torch.einsum("ncq,ncs->nqs", F.normalize(query, dim=1).flatten(2), F.normalize(support, dim=1).flatten(2))
    weights = mask.flatten(2)
    on_object = weights >= 0.5 * weights.amax(-1, keepdim=True).clamp_min(1e-6)  # robust to tiny masks
    prior = pixel_match.masked_fill(~on_object, -1.0).amax(-1)
    low, high = prior.amin(-1, keepdim=True), prior.amax(-1, keepdim=True)
    prior = ((prior - low) / (high - low).clamp_min(1e-6)).view_as(query[:, :1])
    return torch.cat(cosines + [prior], 1)


def prototype_features(levels):
    """Features of the prototype baseline: stride 8 concatenated with upsampled stride 16."""
    return torch.cat([levels[0], F.interpolate(levels[1], size=levels[0].shape[-2:], mode="bilinear", align_corners=False)], 1)


def prototype_baseline(query, supports, masks):
    """Training-free baseline: cosine to the mean object prototype of supports 1..k, for each k (stride-8 maps)."""
    query_features = prototype_features(query)
    prototypes, maps = 0, []
    for k, (support, mask) in enumerate(zip(supports, masks), start=1):
        support_features = prototype_features(support)
        prototypes = prototypes + masked_average(support_features, resize_mask(mask, support_features))
        maps.append(cosine_map(query_features, prototypes / k))
    return maps


# ---------------------------------------------------------------------------------------------------------------
# ConvLSTM


class ConvLSTMCell(nn.Module):
    """ConvLSTM with per-channel peepholes (any input size works), group-norm on gates and cell, forget bias 1."""

    def __init__(self, in_channels, hidden, kernel_size=3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2, bias=False)
        self.gate_norm = nn.GroupNorm(4, 4 * hidden)  # one group per gate
        self.cell_norm = nn.GroupNorm(1, hidden)
        self.peephole = nn.Parameter(torch.zeros(3, hidden, 1, 1))  # input, forget, output
        with torch.no_grad():
            self.gate_norm.bias[hidden:2 * hidden].fill_(1.0)  # forget-gate bias 1

    def zero_state(self, x):
        zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        return zeros, zeros

    def forward(self, x, state):
        h, c = state
        zi, zf, zo, zg = self.gate_norm(self.gates(torch.cat([x, h], 1))).chunk(4, 1)
        i = torch.sigmoid(zi + self.peephole[0] * c)
        f = torch.sigmoid(zf + self.peephole[1] * c)
        g = torch.tanh(zg)
        c = f * c + i * g
        o = torch.sigmoid(zo + self.peephole[2] * c)
        h = o * torch.tanh(self.cell_norm(c))
        return (h, c), {"input_gate": i, "forget_gate": f, "output_gate": o, "candidate": g, "cell": c, "hidden": h}


class ResidualSpatialAttention(nn.Module):
    """The authors' final attention ("center RAN"): mask from two pool-down / upsample stages, output (1 + mask) * x."""

    def __init__(self, channels):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(channels, channels // 4, 1), nn.ReLU(inplace=True))
        self.up = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        m = self.down(F.max_pool2d(x, 3, 2, 1))
        m = F.max_pool2d(m, 3, 2, 1)
        m = F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (1 + torch.sigmoid(self.up(m))) * x


# ---------------------------------------------------------------------------------------------------------------
# The trainable head


def guidance_channels(prior_levels):
    """2 cosine maps at each of the 3 levels, plus one prior map per level in `prior_levels` (0, 1, 2 = stride 8,
    16, 32). PFENet takes the prior from high-level features; at stride 8 it sees small objects but costs most."""
    return 6 + len(prior_levels)


class FusionHead(nn.Module):
    """Fuses (support, query) into the ConvLSTM's input, runs the ConvLSTM and decodes each step."""

    def __init__(self, level_channels, width=64, hidden=64, feature_dropout=0.2, prior_levels=(1, 2),
                 max_guidance=False):
        super().__init__()
        self.prior_levels = tuple(prior_levels)
        # The decoder sees the mean of supports 1..k's guidance maps and, with max_guidance, also their maximum:
        # the mean blurs a small object that only some supports match well; the maximum keeps it (as the OR does).
        self.max_guidance = max_guidance
        guidance = guidance_channels(self.prior_levels)
        # Multi-context guiding: at each level a 1x1 projection of the query map and of the support
        # (mask-pooled: support and query are not aligned pixel to pixel) added into one running branch.
        self.query_proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in level_channels)
        self.support_proj = nn.ModuleList(nn.Linear(c, width) for c in level_channels)
        self.guide_proj = nn.Conv2d(guidance, width, 1)
        self.feature_dropout = nn.Dropout2d(feature_dropout)
        self.down = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1))  # stride 8 -> 16
        self.mix = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.attention = ResidualSpatialAttention(width)
        self.to_lstm = nn.Conv2d(width, width, 1)
        self.lstm = ConvLSTMCell(width, hidden)
        self.decoder = nn.Sequential(
            nn.Conv2d(hidden + guidance * (2 if max_guidance else 1), 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1))
        # The decoder's answer is a correction on the prototype baseline's similarity, so training starts from
        # (and can always fall back to) the training-free cue.
        self.similarity_scale = nn.Parameter(torch.tensor(10.0))
        self.similarity_offset = nn.Parameter(torch.tensor(0.5))

    def context(self, query, support, mask):
        """Everything one (support, query) pair gives: the ConvLSTM input, guidance maps and prototypes.

        query, support: lists of 3 level maps (N, C, h, w); mask: (N, 1, H, W) soft support mask.
        """
        masks = [resize_mask(mask, level) for level in support]
        guidance = [level_guidance(q, s, m, with_prior=level in self.prior_levels, pool_support=level == 0)
                    for level, (q, s, m) in enumerate(zip(query, support, masks))]
        size8 = query[0].shape[-2:]
        guidance = torch.cat([F.interpolate(g, size=size8, mode="bilinear", align_corners=False) if g.shape[-2:] != size8
                              else g for g in guidance], 1)
        branch = []
        for level, (q, s, m) in enumerate(zip(query, support, masks)):
            branch.append(self.feature_dropout(self.query_proj[level](q)) + self.support_proj[level](masked_average(s, m))[:, :, None, None])
        x = self.down(branch[0] + self.guide_proj(guidance))
        for extra in branch[1:]:
            x = x + F.interpolate(extra, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = self.to_lstm(self.attention(self.mix(x)))
        proto_support = prototype_features(support)
        prototype = masked_average(proto_support, resize_mask(mask, proto_support))
        return x, guidance, prototype

    def pool_guidance(self, mean, maximum):
        return torch.cat([mean, maximum], 1) if self.max_guidance else mean

    def decode(self, hidden, guidance, similarity):
        up = F.interpolate(hidden, size=guidance.shape[-2:], mode="bilinear", align_corners=False)
        correction = self.decoder(torch.cat([up, guidance], 1))
        return self.similarity_scale * (similarity - self.similarity_offset) + correction

    def run(self, query, supports, masks, one_shot=True, trace=False):
        """Feed supports one at a time.

        query: list of 3 level maps (N, ...); supports: list over K of such lists; masks: list over K of (N, 1, H, W).
        Returns logits per step (list of K maps at stride 8), each support's own 1-shot logits, gate traces.
        """
        query_proto_features = prototype_features(query)
        state, steps, singles, traces = None, [], [], []
        guidance_sum, guidance_max, prototype_sum = 0, None, 0
        for k, (support, mask) in enumerate(zip(supports, masks), start=1):
            x, guidance, prototype = self.context(query, support, mask)
            if state is None:
                state = self.lstm.zero_state(x)
            state, gates = self.lstm(x, state)
            guidance_sum, prototype_sum = guidance_sum + guidance, prototype_sum + prototype
            guidance_max = guidance if guidance_max is None else torch.maximum(guidance_max, guidance)
            similarity = cosine_map(query_proto_features, prototype_sum / k)
            steps.append(self.decode(state[0], self.pool_guidance(guidance_sum / k, guidance_max), similarity))
            if one_shot and k == 1:  # step 1 already is the first support alone
                singles.append(steps[0])
            elif one_shot:  # the same support alone, from a zero state: the input of the logical-OR baseline
                single_state, _ = self.lstm(x, self.lstm.zero_state(x))
                singles.append(self.decode(single_state[0], self.pool_guidance(guidance, guidance),
                                           cosine_map(query_proto_features, prototype)))
            if trace:
                traces.append({name: value.detach() for name, value in gates.items()})
        return steps, singles, traces


# ---------------------------------------------------------------------------------------------------------------
# The user-facing model


@dataclass
class Segmentation:
    """Result of `FewShotSegmenter.segment`: one entry per step k (after supports 1..k), at the query's size."""

    masks: list
    probabilities: list
    or_masks: list
    or_probabilities: list
    gates: list = field(default_factory=list)
    query_size: tuple = (0, 0)


class FewShotSegmenter(nn.Module, PyTorchModelHubMixin, library_name="fss-demo", license="apache-2.0",
                       tags=["few-shot-segmentation", "image-segmentation", "convlstm"],
                       pipeline_tag="image-segmentation"):
    """Segment, in a query image, the object marked in a few support images.

    >>> model = FewShotSegmenter()             # random weights; use fss_demo.load_model() for trained ones
    >>> seg = model.segment(query, [(image, mask), ...])
    """

    def __init__(self, backbone="mobilenet_v2", width=64, hidden=64, prior_levels=(1, 2), max_guidance=False,
                 input_size=images.NETWORK_SIZE, threshold=0.5, prototype_threshold=0.5, support_cache_size=32):
        # Defaults are the first head's, so a saved config.json without the newer keys still loads as written;
        # the published model's config.json sets max_guidance (train.py's default recipe).
        super().__init__()
        self.backbone = build_backbone(backbone)
        self.head = FusionHead(LEVEL_CHANNELS[backbone], width=width, hidden=hidden, prior_levels=prior_levels,
                               max_guidance=max_guidance)
        self.input_size = input_size
        self.threshold = threshold  # chosen on validation episodes (see fss_demo.evaluate --choose-threshold)
        self.prototype_threshold = prototype_threshold
        self.support_cache_size = support_cache_size
        self._support_cache = OrderedDict()
        self.eval()

    # -- features ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def features(self, image):
        """RGB uint8 (H, W, 3) -> list of 3 level maps for one image."""
        x = torch.from_numpy(images.to_network(image, self.input_size))[None]
        return self.backbone(x)

    def _support_features(self, image, mask):
        """Backbone features of a support, cached by content: changing only the query reuses them."""
        key = hashlib.sha1(image.tobytes() + str(image.shape).encode() + np.packbits(mask).tobytes()).hexdigest()
        if key in self._support_cache:
            self._support_cache.move_to_end(key)
            return self._support_cache[key]
        value = (self.features(image), torch.from_numpy(images.mask_to_network(mask, self.input_size))[None, None])
        self._support_cache[key] = value
        while len(self._support_cache) > self.support_cache_size:
            self._support_cache.popitem(last=False)
        return value

    # -- the public API --------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def segment(self, query, supports, trace=False):
        """query: image (path, PIL or array); supports: list of (image, mask) pairs; nonzero mask = object.

        Returns a `Segmentation` with one mask per step; `gates` is filled when trace=True.
        """
        query_image = images.load_image(query, "query image")
        if supports is None or len(supports) == 0:
            raise ValueError("give at least one support: an image with a mask of the object to find")
        prepared = []
        for number, pair in enumerate(supports, start=1):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"support {number}: expected an (image, mask) pair")
            image = images.load_image(pair[0], f"support {number} image")
            mask = images.load_mask(pair[1], size=image.shape[:2], what=f"support {number} mask")
            share = mask.mean()
            if share == 0:
                raise ValueError(f"support {number}: the mask is empty; mark the object on the image")
            if share > 0.995:
                raise ValueError(f"support {number}: the mask covers the whole image; mark only the object")
            prepared.append(self._support_features(image, mask))

        query_levels = self.features(query_image)
        steps, singles, traces = self.head.run(query_levels, [f for f, _ in prepared], [m for _, m in prepared], trace=trace)
        height, width = query_image.shape[:2]

        def to_probabilities(logits):
            up = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            return torch.sigmoid(up)[0, 0].numpy().astype(np.float32)

        probabilities = [to_probabilities(s) for s in steps]
        single = [to_probabilities(s) for s in singles]
        masks = [p > self.threshold for p in probabilities]
        or_masks = list(np.logical_or.accumulate([p > self.threshold for p in single]))
        or_probabilities = list(np.maximum.accumulate(single))
        gates = [{name: value[0].numpy() for name, value in step.items()} for step in traces]
        return Segmentation(masks, probabilities, or_masks, or_probabilities, gates, (height, width))

    def clear_cache(self):
        self._support_cache.clear()
