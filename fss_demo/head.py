"""The trainable head of the A-MCG-style segmenter, read top to bottom: similarity maps (the training-free cues), the
ConvLSTM cell, the gated evidence memory, the admission gate, then `FusionHead`, which feeds supports one at a time.
It works on backbone features; `fss_demo.model.FewShotSegmenter` owns the backbone and the user-facing API.
"""
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------------
# Similarity maps: class-agnostic cues that transfer to unseen classes (PANet / PFENet style)


def masked_average(features, mask):
    """(N, C, h, w), (N, 1, h, w) -> (N, C): the mean feature under a soft mask."""
    # a batched matrix product, without the (N, C, h, w) product in memory; bmm, not einsum: for N > 1 this
    # torch's einsum took 8-20 times as long here (measured on the head's shapes)
    weighted_sums = torch.bmm(features.flatten(2), mask.flatten(2).transpose(1, 2))[..., 0]
    return weighted_sums / mask.sum((2, 3)).clamp_min(1e-6)


def map_dot(features, vector):
    """The dot product of every pixel of (N, C, h, w) with a vector (N, C) -> (N, 1, h, w) (bmm: see masked_average)."""
    return torch.bmm(vector[:, None], features.flatten(2)).view(features.shape[0], 1, *features.shape[-2:])


def cosine_map(features, vector):
    """Cosine similarity of every pixel of (N, C, h, w) to a vector (N, C) -> (N, 1, h, w)."""
    return unit_cosine_map(F.normalize(features, dim=1), vector)


def unit_cosine_map(unit_features, vector):
    """cosine_map of features already normalised per pixel: the query's maps are normalised once per episode,
    not at every step and cue (that was a tenth of a training step)."""
    return map_dot(unit_features, F.normalize(vector, dim=1))


def resize_mask(mask, features):
    """(N, 1, H, W) soft mask -> share of object under each feature cell."""
    return F.adaptive_avg_pool2d(mask, features.shape[-2:])


def level_guidance(query_unit, support, mask, with_prior=True):
    """Maps at one backbone level: cosine to the object prototype, cosine to the background prototype,
    and the prior (PFENet): each query pixel's best cosine to any support pixel on the object, min-max scaled.
    query_unit: the query's map normalised per pixel (F.normalize(query, dim=1))."""
    object_prototype = masked_average(support, mask)
    background_prototype = masked_average(support, 1 - mask)
    cosines = [unit_cosine_map(query_unit, object_prototype), unit_cosine_map(query_unit, background_prototype)]
    if not with_prior:
        return torch.cat(cosines, 1)
    pixel_match = torch.einsum("ncq,ncs->nqs", query_unit.flatten(2), F.normalize(support, dim=1).flatten(2))
    weights = mask.flatten(2)
    on_object = weights >= 0.5 * weights.amax(-1, keepdim=True).clamp_min(1e-6)  # robust to tiny masks
    prior = pixel_match.masked_fill(~on_object, -1.0).amax(-1)
    low, high = prior.amin(-1, keepdim=True), prior.amax(-1, keepdim=True)
    prior = ((prior - low) / (high - low).clamp_min(1e-6)).view_as(query_unit[:, :1])
    return torch.cat(cosines + [prior], 1)


def self_support(logits, query_prototype_units, weight):
    """Self-support matching (SSP, Fan et al., ECCV 2022), training-free: the logits plus weight * (cosine to the
    query's own object prototype - cosine to its own background prototype). The prototypes are the query's mean
    features where the answer says object (probability over 0.5, weighted by it) and background (under 0.5, weighted
    by 1 - it). Instances of a class in one photo look more alike than the class across photos, so what an answer
    is sure of brings in the rest of the object and its other instances. A query with no confident object (or
    background) is left as it was. logits: (N, 1, h, w); query_prototype_units: (N, C, h, w)."""
    if not weight:
        return logits
    probability = torch.sigmoid(logits)
    regions = (probability * (probability > 0.5), (1 - probability) * (probability < 0.5))  # object, background
    to_object, to_background = (unit_cosine_map(query_prototype_units, masked_average(query_prototype_units, region))
                                for region in regions)
    found = torch.stack([region.sum((1, 2, 3)) > 1e-3 for region in regions]).all(0)
    return logits + weight * found.to(logits.dtype)[:, None, None, None] * (to_object - to_background)


# ---------------------------------------------------------------------------------------------------------------
# A linear discriminant fitted on the supports (training-free)

# Shrinkage of the pooled covariance towards its mean variance: from a few pictures the covariance of 448 features
# is poorly estimated, and shrinking it keeps the discriminant from fitting their noise (0.3 scored above 0.1 on
# validation, session 33).
DISCRIMINANT_SHRINKAGE = 0.3


def discriminant_features(levels):
    """The features the discriminant works on (N, C, h16, w16): the three levels on the stride-16 grid (stride 8
    average-pooled, stride 32 upsampled), each normalised per pixel, so each level counts alike and a picture's
    contrast matters less than what its pixels look like. Stride 32 is what tells classes apart: without it the
    fused answer scored 0.9-3.4 points lower at five shots on four of five validation sets (session 33). The grid
    of stride 16 keeps its cost within the bench's aim (a quarter of stride 8's pixels); the network draws edges."""
    size = levels[1].shape[-2:]
    return torch.cat([F.normalize(F.adaptive_avg_pool2d(levels[0], size), dim=1), F.normalize(levels[1], dim=1),
                      F.normalize(F.interpolate(levels[2], size=size, mode="bilinear", align_corners=False), dim=1)],
                     1)


class PixelStatistics(NamedTuple):
    """What Fisher's linear discriminant needs of some supports' pixels: for the object (index 0) and the background
    (1), the pixels' weights summed (N, 2) and their features summed (N, 2, C); the outer products of all pixels'
    features summed (N, C, C) (a pixel's two weights add up to 1, so the two classes' products need not be kept
    apart). Sums, so supports add up, each weighted by its admission."""
    weights: torch.Tensor
    sums: torch.Tensor
    products: torch.Tensor

    def add(self, other, weight):
        """These statistics plus `other`'s, weighted by (N, 1, 1, 1) (the admission gate's value)."""
        weight = weight.flatten()
        return PixelStatistics(self.weights + weight[:, None] * other.weights,
                               self.sums + weight[:, None, None] * other.sums,
                               self.products + weight[:, None, None] * other.products)


@torch.autocast("cpu", enabled=False)
@torch.autocast("cuda", enabled=False)
def pixel_statistics(features, mask):
    """A support's PixelStatistics: features (N, C, h, w) from `discriminant_features`, mask (N, 1, H, W).
    In float32 even under autocast (training): sums of products in bfloat16 would not make a usable covariance."""
    features, mask = features.float(), mask.float()
    object_share = resize_mask(mask, features).flatten(1)
    pixel_weights = torch.stack([object_share, 1 - object_share], 1)  # (N, 2, P)
    pixels = features.flatten(2)  # (N, C, P)
    return PixelStatistics(pixel_weights.sum(2), torch.bmm(pixel_weights, pixels.transpose(1, 2)),
                           pixels @ pixels.transpose(1, 2))


@torch.autocast("cpu", enabled=False)
@torch.autocast("cuda", enabled=False)
def discriminant_logits(query_features, statistics):
    """Fisher's linear discriminant fitted on `statistics` (object against background, one shared covariance,
    shrunk), read on the query as the log-odds of the object under its two Gaussians: (N, 1, h, w).

    Why a fitted classifier beside the ConvLSTM: it uses every support pixel, object and background, and gets
    better the more supports there are (its means and covariance are estimated from more pictures), where the
    network's answer levels off after two or three supports on whole objects."""
    query_features = query_features.float()  # statistics are float32 already (pixel_statistics)
    weights = statistics.weights.clamp_min(1e-3)
    means = statistics.sums / weights[:, :, None]  # (N, 2, C)
    scatter = statistics.products - torch.einsum("nk,nkc,nkd->ncd", weights, means, means)  # within the classes
    covariance = scatter / weights.sum(1)[:, None, None]
    channels = covariance.shape[-1]
    mean_variance = torch.diagonal(covariance, dim1=1, dim2=2).mean(1)
    covariance = ((1 - DISCRIMINANT_SHRINKAGE) * covariance + DISCRIMINANT_SHRINKAGE * mean_variance[:, None, None]
                  * torch.eye(channels, dtype=covariance.dtype, device=covariance.device))
    # Cholesky, not torch.linalg.solve: the covariance is positive definite, and batched LU solves of this size gave
    # wrong answers with this machine's torch build (measured: residuals of 1.4 at 256 channels)
    factor, failed = torch.linalg.cholesky_ex(covariance)
    direction = torch.cholesky_solve((means[:, 0] - means[:, 1])[:, :, None], factor)[..., 0]
    bias = -0.5 * (direction * (means[:, 0] + means[:, 1])).sum(1) + torch.log(weights[:, 0] / weights[:, 1])
    logits = map_dot(query_features, direction) + bias[:, None, None, None]
    # no discriminant without both classes (a mask over the whole picture, or none of it): nothing to tell apart;
    # nor without a factor (blank pictures: every pixel alike, no covariance at all)
    usable = (statistics.weights >= 1).all(1) & (failed == 0)
    return torch.where(usable[:, None, None, None], logits, torch.zeros_like(logits))


def prototype_features(levels):
    """Features of the prototype baseline: stride 8 concatenated with upsampled stride 16."""
    return torch.cat([levels[0], F.interpolate(levels[1], size=levels[0].shape[-2:], mode="bilinear", align_corners=False)], 1)


def object_prototype(support, mask):
    """The object's mean feature in one support (stride 8 and 16 concatenated): (N, C)."""
    features = prototype_features(support)
    return masked_average(features, resize_mask(mask, features))


def prototype_baseline(query, supports, masks):
    """Training-free baseline: cosine to the mean object prototype of supports 1..k, for each k (stride-8 maps)."""
    query_features = prototype_features(query)
    prototype_sum, maps = 0, []
    for k, (support, mask) in enumerate(zip(supports, masks), start=1):
        prototype_sum = prototype_sum + object_prototype(support, mask)
        maps.append(cosine_map(query_features, prototype_sum / k))
    return maps


# ---------------------------------------------------------------------------------------------------------------
# ConvLSTM


class ConvLSTMCell(nn.Module):
    """ConvLSTM with per-channel peepholes (any input size works), group-norm on gates and cell, forget bias 1.
    One convolution over input and state together gives the four gates."""

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

    def forward(self, x, state, admission=None, open_input_gate=False):
        """One step. admission: (N, 1, 1, 1) in [0, 1], how far this input is let in at all (see SupportGate): it
        scales the input gate, and a support it keeps out (0) neither writes nor forgets, so the state stays as it
        was. open_input_gate: an ablation, the input gate forced to 1 whatever was decided: True for every sample,
        or (N, 1, 1, 1) in {0, 1} per sample. The gates returned include the admission as it acted (1 where forced
        open)."""
        h, c = state
        z = self.gates(torch.cat([x, h], 1))
        zi, zf, zo, zg = self.gate_norm(z).chunk(4, 1)
        i = torch.sigmoid(zi + self.peephole[0] * c)
        f = torch.sigmoid(zf + self.peephole[1] * c)
        if torch.is_tensor(open_input_gate):  # admission 1 where forced open: it then changes nothing there
            i = open_input_gate + (1 - open_input_gate) * i
            admission = open_input_gate + (1 - open_input_gate) * (1 if admission is None else admission)
        elif open_input_gate:
            i, admission = torch.ones_like(i), None
        if admission is not None:
            i = admission * i
            f = 1 - admission * (1 - f)
        g = torch.tanh(zg)
        c_new = f * c + i * g
        o = torch.sigmoid(zo + self.peephole[2] * c_new)
        h_new = o * torch.tanh(self.cell_norm(c_new))
        if admission is not None:
            h_new = admission * h_new + (1 - admission) * h
        acted = h.new_ones(h.shape[0], 1, 1, 1) if admission is None else admission
        return (h_new, c_new), {"input_gate": i, "forget_gate": f, "output_gate": o, "candidate": g, "cell": c_new,
                                "hidden": h_new, "admission": acted}


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


# Backbone levels (0, 1, 2 = stride 8, 16, 32) that get a PFENet prior map: PFENet takes it from high-level features.
PRIOR_LEVELS = (1, 2)
# Guidance maps: 2 cosine maps at each of the 3 levels, and one prior map per level in PRIOR_LEVELS.
GUIDANCE_CHANNELS = 6 + len(PRIOR_LEVELS)
# ModelConfig.decoder_cue's values; what each one is and why "max": FusionHead.__init__ and ModelConfig.
DECODER_CUES = ("max", "mean")


class EvidenceMemory:
    """What the decoder knows of supports 1..k beyond the hidden state, all of it written with the **weights the
    gates set**: the supports' evidence maps (guidance maps and similarity to the object prototype, stride 8),
    averaged and max-pooled per pixel with the input gate's channel mean there, and their object prototypes
    (stride 8+16 and stride 32), averaged with the input gate's overall mean. A support the gates keep out (weight
    0) leaves the memory as it was, so what the gates do is what the model does."""

    def __init__(self, evidence):
        self.total = torch.zeros_like(evidence)
        self.weight = torch.zeros_like(evidence[:, :1])
        self.maximum = None
        self.prototype_totals = None  # [stride 8+16, stride 32], each (N, C)
        self.prototype_weight = evidence.new_zeros(evidence.shape[0], 1)
        self._query_similarity = None

    def add(self, evidence, weight, prototypes=None, prototype_weight=None):
        """weight: (N, 1, h, w) in [0, 1], the input gate's channel mean at each pixel; prototypes: the support's
        [stride 8+16, stride 32] object prototypes, averaged in with prototype_weight (N, 1)."""
        self.total = self.total + weight * evidence
        self.weight = self.weight + weight
        # a soft, gated maximum: weight 1 takes max(old, new); weight 0 keeps the old
        self.maximum = evidence if self.maximum is None else self.maximum + weight * F.relu(evidence - self.maximum)
        if prototypes is not None:
            weighted = [prototype_weight * p for p in prototypes]
            self.prototype_totals = weighted if self.prototype_totals is None else [
                total + w for total, w in zip(self.prototype_totals, weighted)]
            self.prototype_weight = self.prototype_weight + prototype_weight
        self._query_similarity = None
        return self

    def mean(self):
        return self.total / self.weight.clamp_min(1e-3)

    def prototypes(self):
        """The gated mean object prototypes [stride 8+16, stride 32] of the supports so far."""
        return [total / self.prototype_weight.clamp_min(1e-3) for total in self.prototype_totals]

    def query_similarity(self, query_prototype_units):
        """The query's cosine to the gated mean object prototype (stride 8+16): the admission gate reads it at step
        k + 1 (and the decoder after step k, with decoder_cue "mean"), so it is computed once per step."""
        if self._query_similarity is None:
            self._query_similarity = unit_cosine_map(query_prototype_units, self.prototypes()[0])
        return self._query_similarity


class SupportSummary(NamedTuple):
    """What the admission gate and the memory read of one support, at stride 8+16 and at stride 32; it does not
    depend on the other supports, so it is worked out once per support, not at every step it takes part in."""
    prototypes: list       # object means (N, C): the support's object prototypes
    backgrounds: list      # means outside the mask (N, C)
    unit_objects: list     # means of the features normalised per pixel, inside the mask
    unit_backgrounds: list  # and outside it
    share: torch.Tensor    # (N,): the share of the picture the mask covers


def summarise_support(support, mask):
    """A support's SupportSummary. support: its backbone maps; mask: (N, 1, H, W)."""
    columns = [[], [], [], []]
    for level in (prototype_features(support), support[2]):
        m, unit = resize_mask(mask, level), F.normalize(level, dim=1)
        for column, value in zip(columns, (masked_average(level, m), masked_average(level, 1 - m),
                                           masked_average(unit, m), masked_average(unit, 1 - m))):
            column.append(value)
    return SupportSummary(*columns, share=mask.mean((1, 2, 3)))


def pearson(a, b):
    """Correlation over pixels of two (N, 1, h, w) maps -> (N,)."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-6)


AGREEMENT_FEATURES = 10


def agreement(summary, remembered_prototypes, query_similarity, remembered_similarity):
    """How well a new support (its SupportSummary) agrees with the supports remembered, as their object prototypes
    [stride 8+16, stride 32] (EvidenceMemory.prototypes): (N, AGREEMENT_FEATURES).

    At stride 8+16 and at stride 32: the cosine of the new support's object and background prototypes to the
    remembered object prototype, and the remembered prototype's mean similarity on the new support's own picture
    inside and outside its mask (a mask moved off the object, or over-painted, puts the object outside or the
    background inside); the share of the picture the mask covers (log); and the correlation, over the query, of
    the new support's similarity map with the remembered one (another class lights up other pixels)."""
    stats = []
    for level, remembered in enumerate(remembered_prototypes):
        stats += [F.cosine_similarity(summary.prototypes[level], remembered, dim=1),
                  F.cosine_similarity(summary.backgrounds[level], remembered, dim=1)]
        # the mean over a mask of the picture's cosine map to `remembered`, taken as the masked mean of its unit
        # features dotted with the unit prototype: the same number, without a map that gradients must cross
        direction = F.normalize(remembered, dim=1)
        stats += [(summary.unit_objects[level] * direction).sum(1),
                  (summary.unit_backgrounds[level] * direction).sum(1)]
    stats.append(summary.share.clamp_min(1e-4).log() / 5)
    stats.append(pearson(query_similarity, remembered_similarity))
    return torch.stack(stats, 1)


class SupportGate(nn.Module):
    """The admission gate: how far support k >= 2 is let into the ConvLSTM (a factor of its input gate), from
    `agreement` with the supports already in. The first support is always let in: there is nothing to compare (but
    later supports may outvote it, `FusionHead.first_support`).

    Its value is sigmoid(scale * (logit - shift)). Training runs with scale 1 and shift 0; the two are then chosen
    on validation episodes (`fss_demo.calibrate_gate`), as the threshold is. Why: the cost of a support grows
    with how far it is let in, so one the gate is unsure of (near 0.5, as a mask on the background of a cluttered
    scene is left by training) costs half of what letting it fully in would; a sharper gate that starts to close
    later keeps such supports out and costs clean ones little."""

    def __init__(self, hidden=32, scale=1.0, shift=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(AGREEMENT_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.net[-1].bias.fill_(2.0)  # start mostly open (0.88): a support is let in until shown bad
        self.scale, self.shift = scale, shift

    def forward(self, stats):
        return torch.sigmoid(self.scale * (self.net(stats) - self.shift))[:, :, None, None]  # (N, 1, 1, 1)


class FusionHead(nn.Module):
    """Fuses (support, query) into the ConvLSTM's input, decides how far to let each support in, runs the ConvLSTM
    and decodes each step from its hidden state and the gated evidence memory."""

    def __init__(self, level_channels, width=64, hidden=64, feature_dropout=0.2, decoder_cue="max", gate_scale=1.0,
                 gate_shift=0.0, cue_channels=(), self_support=0.0, rejudge_first=False, discriminant=0.0,
                 self_support_grows=False):
        super().__init__()
        self.decoder_cue = decoder_cue
        self.rejudge_first = rejudge_first  # let later supports outvote the first one (`first_support`)
        self.self_support = self_support  # the weight of `self_support`, in similarity_scale's units (see `answer`)
        self.discriminant = discriminant  # the weight of `discriminant_logits` in the fused answers (see `answer`)
        self.self_support_grows = self_support_grows  # self-support on the discriminant's schedule (see `answer`)
        # HSNet's many-layer cues (Min et al., ICCV 2021), as prototype cosines: one map per cue map of the backbone
        # (the cue blocks' outputs, ModelConfig.cue_blocks, then any the backbone adds of its own), the query's cosine
        # to the support's object mean there. Mid-level blocks see parts and textures that the three stage outputs
        # have already pooled away.
        guidance = GUIDANCE_CHANNELS + len(cue_channels)
        evidence = guidance + 1  # guidance maps (and cue maps' cosines) + similarity to the object prototype
        # Multi-context guiding: at each level a 1x1 projection of the query map and of the support
        # (mask-pooled: support and query are not aligned pixel to pixel) added into one running branch.
        self.query_proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in level_channels)
        self.support_proj = nn.ModuleList(nn.Linear(c, width) for c in level_channels)
        self.guide_proj = nn.Conv2d(evidence, width, 1)
        self.feature_dropout = nn.Dropout2d(feature_dropout)
        self.down = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1))  # stride 8 -> 16
        self.mix = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.attention = ResidualSpatialAttention(width)
        self.to_lstm = nn.Conv2d(width, width, 1)
        self.support_gate = SupportGate(scale=gate_scale, shift=gate_shift)
        self.lstm = ConvLSTMCell(width, hidden)
        # The decoder sees the gated mean of supports 1..k's guidance maps and their gated maximum: the mean blurs
        # a small object that only some supports match well; the maximum keeps it.
        self.decoder = nn.Sequential(nn.Conv2d(hidden + 2 * guidance, 32, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(32, 1, 1))
        # The decoder's answer is a correction on the prototype baseline's similarity, so training starts from
        # (and can always fall back to) the training-free cue. With decoder_cue "max" that cue is the gated maximum
        # of the supports' own cosines: the mean prototype of supports showing different instances or scales
        # matches none of them, and on real scenes its cosines fall as supports arrive.
        self.similarity_scale = nn.Parameter(torch.tensor(10.0))
        self.similarity_offset = nn.Parameter(torch.tensor(0.5))
        # Recall across supports: each support's own 1-shot answer is kept in a gated maximum ("found"), and the
        # answer after step k is corrected towards it where the hidden state trusts it. A small object that only
        # one support finds then survives the fusion, as in the logical OR, without taking all of the OR's false
        # positives. Zero-initialised: training starts from the plain decoder.
        self.recall = nn.Sequential(nn.Conv2d(hidden + 2, 8, 1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
        with torch.no_grad():
            self.recall[-1].weight.zero_()
            self.recall[-1].bias.zero_()

    def evidence(self, query_units, query_prototype_units, support, mask, prototype):
        """One support's evidence about the query (N, E, h8, w8): guidance maps at every level, the cue maps'
        cosines, then the cosine to its object prototype (stride 8+16; the training-free cue). Also the support's
        masks at its three levels. The query's maps come normalised per pixel (see forward)."""
        masks = [resize_mask(mask, level) for level in support[:3]]
        guidance = [level_guidance(q, s, m, with_prior=level in PRIOR_LEVELS)
                    for level, (q, s, m) in enumerate(zip(query_units, support, masks))]
        guidance += [unit_cosine_map(q, masked_average(s, resize_mask(mask, s)))
                     for q, s in zip(query_units[3:], support[3:])]
        size8 = query_units[0].shape[-2:]
        guidance = [F.interpolate(g, size=size8, mode="bilinear", align_corners=False) if g.shape[-2:] != size8
                    else g for g in guidance]
        similarity = unit_cosine_map(query_prototype_units, prototype)
        return torch.cat(guidance + [similarity], 1), masks

    def lstm_input(self, query_projections, support, masks, evidence):
        """The ConvLSTM's input at stride 16: multi-context guiding of the query (its maps projected by query_proj)
        by the support and its evidence."""
        branch = [self.feature_dropout(q) + self.support_proj[level](masked_average(s, m))[:, :, None, None]
                  for level, (q, s, m) in enumerate(zip(query_projections, support[:3], masks))]
        x = self.down(branch[0] + self.guide_proj(evidence))
        for extra in branch[1:]:
            x = x + F.interpolate(extra, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.to_lstm(self.attention(self.mix(x)))

    def decode(self, hidden, memory, query_prototype_units):
        mean = memory.mean()
        guidance = torch.cat([mean[:, :-1], memory.maximum[:, :-1]], 1)
        if self.decoder_cue == "max":
            similarity = memory.maximum[:, -1:]
        else:
            similarity = memory.query_similarity(query_prototype_units)
        up = F.interpolate(hidden, size=mean.shape[-2:], mode="bilinear", align_corners=False)
        correction = self.decoder(torch.cat([up, guidance], 1))
        return self.similarity_scale * (similarity - self.similarity_offset) + correction, up

    def answer(self, decoded, found, context, statistics=None, let_in=None):
        """The step's logits: the decoder's, corrected towards `found` (the gated maximum of the supports' own
        1-shot logits) where the hidden state says so; plus the linear discriminant fitted on the supports let in
        (`statistics`, their PixelStatistics summed with the admission gate's weights; none for a 1-shot answer);
        then refined by the query's own prototypes (`self_support`). Either is off at weight 0.
        decoded: (logits, hidden at stride 8) from `decode`; context: the query's QueryContext; let_in: the
        supports let in so far (N,), the admissions summed (None: a lone support's answer).

        The discriminant's weight is `discriminant` * (1 - 1 / n), n the supports let in (admissions summed): 0 for
        one support, whose discriminant is weak (measured on validation: 7-30 points below the network's 1-shot
        answer on four of five sets), and growing as supports add up, as its worth does (it rises 16-20 points from
        one support to five, the network's answer 2-9). With `self_support_grows`, self-support's weight follows the
        same schedule: it starts from the answer so far, which is weakest at one support."""
        logits, up = decoded
        logits = logits + self.recall(torch.cat([up, logits, found - logits], 1))
        # the schedule, 1 - 1/n: nothing for a lone support (no let_in) or one let in, more as supports add up
        growth = None if let_in is None else (1 - 1 / let_in.clamp_min(1))[:, None, None, None]
        if self.discriminant and statistics is not None:  # statistics come with let_in (FusionHead.run_step)
            weight = self.discriminant * growth
            if bool(weight.any()):  # 0 for one support, or with the others kept out: no fit needed
                fitted = F.interpolate(discriminant_logits(context.discriminant_units, statistics),
                                       size=logits.shape[-2:], mode="bilinear", align_corners=False)
                logits = logits + weight * fitted
        weight = self.self_support * self.similarity_scale
        if not self.self_support_grows:
            return self_support(logits, context.prototype_units, weight)
        if growth is None:
            return logits
        return logits + growth * (self_support(logits, context.prototype_units, weight) - logits)

    def admit(self, passed, memory, query_prototype_units):
        """The admission gate's value for this support (a SupportPass) (N, 1, 1, 1): 1 for a run's first one."""
        if memory is None:
            return passed.evidence.new_ones(passed.evidence.shape[0], 1, 1, 1)
        remembered = memory.query_similarity(query_prototype_units)
        return self.support_gate(agreement(passed.summary, memory.prototypes(), passed.evidence[:, -1:],
                                           remembered))

    def step(self, passed, state, memory, query_prototype_units, open_gate=False):
        """One support (a SupportPass) into the ConvLSTM: (new state, new memory, gates incl. the admission).
        open_gate forces the input gate to 1 (admission included): True, or per sample (N, 1, 1, 1) in {0, 1}."""
        admission = self.admit(passed, memory, query_prototype_units)
        x, evidence = passed.x, passed.evidence
        state, gates = self.lstm(x, state if state is not None else self.lstm.zero_state(x), admission=admission,
                                 open_input_gate=open_gate)
        weight = F.interpolate(gates["input_gate"].mean(1, keepdim=True), size=evidence.shape[-2:], mode="bilinear",
                               align_corners=False)
        memory = (memory or EvidenceMemory(evidence)).add(evidence, weight, passed.summary.prototypes,
                                                          gates["input_gate"].mean((1, 2, 3))[:, None])
        return state, memory, gates

    def read_query(self, query):
        """What every step needs of the query (the backbone's maps (N, ...): 3 levels, then any cue maps), computed
        once per query: its maps normalised per pixel (for the cosine cues) and projected into the fusion branch."""
        return QueryContext(units=[F.normalize(level, dim=1) for level in query],
                            prototype_units=F.normalize(prototype_features(query), dim=1),
                            discriminant_units=discriminant_features(query) if self.discriminant else None,
                            projections=[project(level) for project, level in zip(self.query_proj, query[:3])])

    def read_supports(self, context, supports, masks, with_statistics=True):
        """What each support gives the query whatever its place in the order (a `SupportPass` each): its evidence,
        the ConvLSTM's input and its summary. supports: list over K of the backbone's maps (N, ...) as the query's;
        masks: list over K of (N, 1, H, W). with_statistics=False leaves out their pixels for the discriminant, which
        a lone support never uses.

        The K supports go through as one batch of K * N (beside K copies of the query's context): on a CPU the head
        is many small operations, and batching them made the app's 5-shot head about a sixth faster (session 39)."""
        if not supports:
            return []
        support = [torch.cat(levels) for levels in zip(*supports)]
        mask = torch.cat(list(masks))
        # what reading a support needs of the query: not its discriminant features, read on the query alone later
        context = widened(context._replace(discriminant_units=None), len(supports))
        summary = summarise_support(support, mask)
        evidence, level_masks = self.evidence(context.units, context.prototype_units, support, mask,
                                              summary.prototypes[0])
        x = self.lstm_input(context.projections, support, level_masks, evidence)
        statistics = (pixel_statistics(discriminant_features(support), mask) if self.discriminant and with_statistics
                      else None)
        return split_pass(SupportPass(evidence, x, summary, statistics), len(supports))

    def alone(self, context, passed):
        """The support alone, from a zero state: decode's (logits, hidden at stride 8). Computed once per
        SupportPass, whatever the runs that use it."""
        if passed.alone is None:
            self.alone_all(context, [passed])
        return passed.alone

    def alone_all(self, context, passes):
        """`alone` for every pass that has no answer alone yet, as one batch (see `read_supports`)."""
        missing = [p for p in passes if p.alone is None]
        if not missing:
            return
        joined = join_passes(missing)
        units = widened(context.prototype_units, len(missing))  # all that a first step and its decoding read
        state, memory, _ = self.step(joined, None, None, units)
        answers = self.decode(state[0], memory, units)
        for passed, logits, hidden in zip(missing, *(part.chunk(len(missing)) for part in answers)):
            passed.alone = (logits, hidden)

    def forward(self, query, supports, masks, one_shot=True, trace=False, open_gate_at=()):
        """Feed supports one at a time.

        query: the backbone's maps (N, ...): 3 levels, then any cue maps; supports: list over K of such lists;
        masks: list over K of (N, 1, H, W).
        Returns `fuse`'s HeadOutput (its arguments one_shot, trace and open_gate_at are described there).
        """
        context = self.read_query(query)
        return self.fuse(context, self.read_supports(context, supports, masks, with_statistics=len(supports) > 1),
                         one_shot, trace, open_gate_at)

    def fuse(self, context, passes, one_shot=True, trace=False, open_gate_at=()):
        """The ConvLSTM over the supports' passes (`read_query`, `read_supports`; reusing them, runs over other
        orders or subsets of the same supports cost only the steps).

        The answer after step k is always a function of supports 1..k alone. The run that gives it feeds them in the
        order given, unless `rejudge_first` moves another support to the front (`first_support`): then the run
        starts again from that support, and support 1 is judged by the admission gate as any other.

        open_gate_at: supports (1-based, as given) whose input gate is forced open (to test that the gates matter).
        one_shot: also return each support's own 1-shot answer. The passes of each support alone run either way
        (the fused answer is corrected towards what they find); this only decides whether their answers are returned.
        Returns a HeadOutput: the logits after supports 1..k (K maps (N, 1, h8, w8) at stride 8), each support's
        own 1-shot logits (the same, or [] unless one_shot), and of the run that gave the last answer: each support's
        gate traces ([] unless trace) and admission (K tensors (N, 1, 1, 1), with gradients), in the order given,
        and the order it fed them in ((N, K) support indices, 0-based).
        """
        output, run, judged = HeadOutput([], [], [], [], None), None, {}
        if not passes:
            return output
        # every support after the first is needed alone (its 1-shot answer, or the `found` of the runs it joins)
        self.alone_all(context, passes[1:])
        for k in range(1, len(passes) + 1):
            first = self.first_support(passes[:k], judged) if self.rejudge_first and k >= 3 else None
            if run is not None and (first is None or torch.equal(first, run.order[:, 0])):
                self.run_step(context, run, passes, passes[k - 1].x.new_full(run.order[:, :1].shape, k - 1,
                                                                             dtype=torch.long), open_gate_at)
            else:  # the first run, or a new first support: start again over supports 1..k
                run = FusionRun(order=None, trace=trace)
                for column in run_order(first, k, passes[0].x.shape[0], passes[0].x.device).T:
                    self.run_step(context, run, passes, column[:, None], open_gate_at)
            output.steps.append(run.answer)
            if one_shot and k == 1:  # the support's 1-shot answer: the input of the logical-OR baseline
                output.one_shots.append(output.steps[0])
            elif one_shot:
                alone = self.alone(context, passes[k - 1])
                output.one_shots.append(self.answer(alone, alone[0], context))
        # the last run's admissions and traces, put back in the order given
        place = torch.argsort(run.order, dim=1)  # place[n, i]: the step at which support i went in
        output.admissions.extend(in_order(run.admissions, place))
        if trace:
            by_name = {name: in_order([step[name] for step in run.traces], place) for name in run.traces[0]}
            output.traces.extend({name: by_name[name][i] for name in by_name} for i in range(len(passes)))
        return output._replace(order=run.order)

    def run_step(self, context, run, passes, numbers, open_gate_at):
        """Feed run one more support: for each sample n, passes[numbers[n, 0]] (numbers: (N, 1))."""
        passed = pick(passes, numbers[:, 0], lambda p: self.alone(context, p))
        # the ablation: True, or per sample where this step takes a support named in open_gate_at
        forced = torch.isin(numbers[:, 0], torch.tensor([at - 1 for at in open_gate_at], dtype=torch.long,
                                                       device=numbers.device))
        opened = bool(forced.all()) or (forced.float()[:, None, None, None] if forced.any() else False)
        run.order = numbers if run.order is None else torch.cat([run.order, numbers], 1)
        run.state, run.memory, gates = self.step(passed, run.state, run.memory, context.prototype_units,
                                                 open_gate=opened)
        decoded = self.decode(run.state[0], run.memory, context.prototype_units)
        # The same support alone, from a zero state (a run's first step already is): what it finds on its own
        alone = decoded if run.found is None else self.alone(context, passed)
        # a gated maximum, as the evidence memory's: a support kept out (admission 0) leaves it as it was
        run.found = alone[0] if run.found is None else run.found + gates["admission"] * F.relu(alone[0] - run.found)
        # the discriminant's pixels, gated the same way
        if passed.statistics is not None:
            run.statistics = (passed.statistics if run.statistics is None
                              else run.statistics.add(passed.statistics, gates["admission"]))
        run.admissions.append(gates["admission"])
        run.answer = self.answer(decoded, run.found, context, run.statistics,
                                 let_in=torch.stack(run.admissions).sum(0).flatten())
        if run.trace:
            run.traces.append({name: value.detach() for name, value in gates.items()})

    def pair_admission(self, judged, against):
        """How far the admission gate lets support `judged` in with only support `against` in the memory (N,):
        both SupportPasses. A memory of one support remembers its prototypes, and the query's cosine to them is the
        last evidence map: both are read off the passes, with no memory built."""
        return self.support_gate(agreement(judged.summary, against.summary.prototypes, judged.evidence[:, -1:],
                                           against.evidence[:, -1:])).flatten()

    def first_support(self, passes, judged):
        """Which of supports 1..k (>= 3) a run should start from (N,), 0-based: support 1, unless the others let it
        in at under 0.5 on average when each is the only one remembered; then the support the others let in most.

        Why: the gate judges each support against the ones before it, so a bad first support (its mask off the
        object) is never judged, and the good ones after it are kept out as disagreeing with it (measured: a 5-shot
        answer 3.0 instead of 39.4 on ccp). Two later supports that agree with each other outvote it.
        judged: {(i, j): pair_admission of support j against support i}, filled as supports arrive."""
        k = len(passes)
        for i in range(k):
            for j in range(k):
                if i != j and (i, j) not in judged:
                    judged[i, j] = self.pair_admission(passes[j], passes[i])
        let_in = torch.stack([torch.stack([judged[j, i] for j in range(k) if j != i]).mean(0) for i in range(k)], 1)
        return torch.where(let_in[:, 0] < 0.5, let_in.argmax(1), 0)


@dataclass
class FusionRun:
    """One run of the ConvLSTM over supports in one order (FusionHead.fuse)."""
    order: Optional[torch.Tensor]  # (N, steps so far): the supports fed at each step, 0-based, per sample
    trace: bool
    state: Optional[tuple] = None
    memory: Optional[EvidenceMemory] = None
    found: Optional[torch.Tensor] = None  # the gated maximum of the supports' own 1-shot logits
    statistics: Optional[PixelStatistics] = None  # the supports' pixels, weighted by their admissions
    answer: Optional[torch.Tensor] = None  # the logits after the last step
    admissions: list = field(default_factory=list)  # per step
    traces: list = field(default_factory=list)      # per step, when traced


def run_order(first, k, batch, device):
    """(N, k): support `first[n]` then the others in their order (first None: supports 0..k-1 as given)."""
    steps = torch.arange(k, device=device).expand(batch, k)
    if first is None:
        return steps
    return torch.argsort(torch.where(steps == first[:, None], -1, steps), dim=1)


def in_order(values, place):
    """values per step (each (N, ...)) -> per support as given: support i's is values[place[n, i]][n]."""
    if torch.equal(place, torch.arange(place.shape[1], device=place.device).expand_as(place)):
        return list(values)
    stacked, rows = torch.stack(values), torch.arange(place.shape[0], device=place.device)
    return [stacked[place[:, i], rows] for i in range(place.shape[1])]


def tree_map(function, *trees):
    """`function` over the tensors of like-shaped trees (tensors, None, and lists, tuples and NamedTuples of them),
    e.g. a SupportSummary from K supports' SupportSummaries."""
    first = trees[0]
    if first is None or torch.is_tensor(first):
        return None if first is None else function(*trees)
    parts = [tree_map(function, *branches) for branches in zip(*trees)]
    return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)


PASS_PARTS = ("evidence", "x", "summary", "statistics", "alone")


def join_passes(passes):
    """K SupportPasses (each of N samples) -> one of K * N, support-major (see `read_supports`)."""
    if len(passes) == 1:
        return passes[0]
    concatenated = lambda *values: torch.cat(values)
    return SupportPass(*(tree_map(concatenated, *(getattr(p, part) for p in passes)) for part in PASS_PARTS))


def split_pass(passed, k):
    """join_passes undone: a SupportPass of K * N samples -> K of N."""
    return [SupportPass(*(tree_map(lambda value: value.chunk(k)[i], getattr(passed, part)) for part in PASS_PARTS))
            for i in range(k)]


def widened(context, k):
    """A QueryContext (or a part of one) of N samples repeated K times along the batch, beside K supports joined
    (`join_passes`)."""
    return context if k == 1 else tree_map(lambda value: value.repeat(k, *[1] * (value.dim() - 1)), context)


def pick(passes, numbers, alone):
    """The SupportPass of passes[numbers[n]] for each sample n; the object itself when all samples pick the same.
    alone: a pass -> its answer alone (FusionHead.alone), gathered too."""
    if bool((numbers == numbers[0]).all()):
        return passes[int(numbers[0])]
    rows = torch.arange(len(numbers), device=numbers.device)
    gathered = lambda *values: torch.stack(values)[numbers, rows]
    for passed in passes:
        alone(passed)
    return SupportPass(*(tree_map(gathered, *(getattr(p, part) for p in passes)) for part in PASS_PARTS))


class QueryContext(NamedTuple):
    units: list            # the query's backbone maps, normalised per pixel
    prototype_units: torch.Tensor  # its prototype features (stride 8+16), normalised per pixel
    projections: list      # its level maps projected into the fusion branch (query_proj)
    discriminant_units: Optional[torch.Tensor] = None  # its discriminant_features, when the discriminant is on


@dataclass
class SupportPass:
    """One support's part of a run that does not depend on the order (FusionHead.read_support)."""
    evidence: torch.Tensor  # (N, E, h8, w8): guidance maps, any cue maps' cosines, the cosine to its object prototype
    x: torch.Tensor        # the ConvLSTM's input at stride 16
    summary: SupportSummary  # what the admission gate and the memory read of it
    statistics: Optional[PixelStatistics] = None  # its pixels for the discriminant, when that is on
    alone: Optional[tuple] = None  # its answer alone (FusionHead.alone), once computed


class HeadOutput(NamedTuple):
    steps: list        # K logit maps (N, 1, h8, w8): after supports 1..k
    one_shots: list    # K logit maps: support k alone
    traces: list       # per support {gate name: tensor}, when traced, in the run that gave the last answer
    admissions: list   # K (N, 1, 1, 1): how far each support was let in, in that run
    order: torch.Tensor  # (N, K): the order that run fed the supports in, 0-based
