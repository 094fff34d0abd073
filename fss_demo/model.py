"""A-MCG-style few-shot segmenter: frozen backbone, multi-context guiding, ConvLSTM over supports.

Read top to bottom: similarity maps (the training-free part), the ConvLSTM cell, the fusion head,
then `FewShotSegmenter`, which owns the backbone and the user-facing `segment()`.
"""
import dataclasses
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from safetensors.torch import load_model as load_safetensors
from torch import nn

from . import images
from .backbone import backbone_spec, build_backbone

# ---------------------------------------------------------------------------------------------------------------
# Settings


def default_device():
    """Where training, evaluation and a loaded model run unless told: a CUDA GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ModelConfig:
    """Every setting of a model, saved as its config.json. The defaults are the published recipe; train.py takes
    its defaults from here."""
    backbone: str = "mobilenet_v2"
    width: int = 64                  # the fusion branch
    hidden: int = 64                 # the ConvLSTM's state
    lstm_input_kernel: int = 3       # the ConvLSTM's kernel on its input (on its state always 3); 1 saves 40% of
                                     # the cell's multiply-adds (run 14 in NOTES.md, not kept)
    prior_levels: tuple = (1, 2)     # backbone levels (0, 1, 2 = stride 8, 16, 32) with a PFENet prior map
    max_guidance: bool = True        # the decoder also sees the maximum of the supports' guidance maps (run 5)
    fusion: str = "gated"            # the head: support evidence reaches the decoder only through the gates (model
                                     # v2); run 5's "mean" head, which read a plain mean beside the cell, is gone
    feature_dropout: float = 0.2     # on the query's projected features, in training
    input_size: int = images.NETWORK_SIZE
    threshold: float = 0.5           # on the sigmoid output; chosen on validation (evaluate --choose-threshold)
    prototype_threshold: float = 0.5  # on the training-free baseline's cosine
    support_cache_size: int = 32     # supports whose backbone features are kept

    def __post_init__(self):
        if self.fusion != "gated":
            raise ValueError(f"fusion {self.fusion!r}: this version has only the 'gated' head (run 5's older 'mean' "
                             "fusion head is gone)")

    @classmethod
    def from_dict(cls, saved):
        """The config of a saved config.json. Unknown keys are refused, and so is run 5's kind of head (its config
        has no `fusion` setting), whose weights this version cannot take."""
        if "fusion" not in saved:
            raise ValueError("this config.json is of a model with the older 'mean' fusion head (fss-demo run 5, before "
                             "model v2): this version's head cannot take its weights")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - fields)
        if unknown:
            raise ValueError(f"config.json has settings this version does not know: {unknown}")
        values = dict(saved)
        if "prior_levels" in values:
            values["prior_levels"] = tuple(values["prior_levels"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------------------------
# Similarity maps: class-agnostic cues that transfer to unseen classes (PANet / PFENet style)


def masked_average(features, mask):
    """(N, C, h, w), (N, 1, h, w) -> (N, C): the mean feature under a soft mask."""
    # einsum: a batched matrix product, without the (N, C, h, w) product in memory
    return torch.einsum("nchw,nhw->nc", features, mask[:, 0]) / mask.sum((2, 3)).clamp_min(1e-6)


def cosine_map(features, vector):
    """Cosine similarity of every pixel of (N, C, h, w) to a vector (N, C) -> (N, 1, h, w)."""
    return unit_cosine_map(F.normalize(features, dim=1), vector)


def unit_cosine_map(unit_features, vector):
    """cosine_map of features already normalised per pixel: the query's maps are normalised once per episode,
    not at every step and cue (that was a tenth of a training step)."""
    return torch.einsum("nchw,nc->nhw", unit_features, F.normalize(vector, dim=1))[:, None]


def resize_mask(mask, features):
    """(N, 1, H, W) soft mask -> share of object under each feature cell."""
    return F.adaptive_avg_pool2d(mask, features.shape[-2:])


def level_guidance(query_unit, support, mask, with_prior=True, pool_support=False):
    """Maps at one backbone level: cosine to the object prototype, cosine to the background prototype,
    and the prior (PFENet): each query pixel's best cosine to any support pixel on the object, min-max scaled.
    query_unit: the query's map normalised per pixel (F.normalize(query, dim=1)).
    pool_support: match against 2x2-pooled support pixels (a quarter of the cost at stride 8; the query side,
    where small objects must be found, keeps its resolution)."""
    object_prototype = masked_average(support, mask)
    background_prototype = masked_average(support, 1 - mask)
    cosines = [unit_cosine_map(query_unit, object_prototype), unit_cosine_map(query_unit, background_prototype)]
    if not with_prior:
        return torch.cat(cosines, 1)
    if pool_support:
        support, mask = F.avg_pool2d(support, 2, ceil_mode=True), F.avg_pool2d(mask, 2, ceil_mode=True)
    pixel_match = torch.einsum("ncq,ncs->nqs", query_unit.flatten(2), F.normalize(support, dim=1).flatten(2))
    weights = mask.flatten(2)
    on_object = weights >= 0.5 * weights.amax(-1, keepdim=True).clamp_min(1e-6)  # robust to tiny masks
    prior = pixel_match.masked_fill(~on_object, -1.0).amax(-1)
    low, high = prior.amin(-1, keepdim=True), prior.amax(-1, keepdim=True)
    prior = ((prior - low) / (high - low).clamp_min(1e-6)).view_as(query_unit[:, :1])
    return torch.cat(cosines + [prior], 1)


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
    input_kernel_size: its kernel on the input; when it differs from kernel_size (the state's), the gates come from
    two convolutions (`input_gates`, `hidden_gates`) instead of one over input and state together (`gates`)."""

    def __init__(self, in_channels, hidden, kernel_size=3, input_kernel_size=3):
        super().__init__()
        self.hidden = hidden
        self.gates = self.input_gates = self.hidden_gates = None
        if input_kernel_size == kernel_size:  # one convolution over input and state together
            self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2, bias=False)
        else:
            self.input_gates = nn.Conv2d(in_channels, 4 * hidden, input_kernel_size, padding=input_kernel_size // 2,
                                         bias=False)
            self.hidden_gates = nn.Conv2d(hidden, 4 * hidden, kernel_size, padding=kernel_size // 2, bias=False)
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
        was. open_input_gate: an ablation, the input gate forced to 1 whatever was decided."""
        h, c = state
        z = self.gates(torch.cat([x, h], 1)) if self.gates is not None else self.input_gates(x) + self.hidden_gates(h)
        zi, zf, zo, zg = self.gate_norm(z).chunk(4, 1)
        i = torch.sigmoid(zi + self.peephole[0] * c)
        f = torch.sigmoid(zf + self.peephole[1] * c)
        if open_input_gate:
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
        return (h_new, c_new), {"input_gate": i, "forget_gate": f, "output_gate": o, "candidate": g, "cell": c_new,
                                "hidden": h_new}


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
        """The query's cosine to the gated mean object prototype (stride 8+16): the decoder reads it after step k
        and the admission gate at step k + 1, so it is computed once per step."""
        if self._query_similarity is None:
            self._query_similarity = unit_cosine_map(query_prototype_units, self.prototypes()[0])
        return self._query_similarity


def support_prototypes(support, mask):
    """A support's object prototypes: [stride 8+16 (N, C), stride 32 (N, C)]."""
    return [object_prototype(support, mask), masked_average(support[2], resize_mask(mask, support[2]))]


def pearson(a, b):
    """Correlation over pixels of two (N, 1, h, w) maps -> (N,)."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-6)


AGREEMENT_FEATURES = 10


def agreement(support, mask, memory, query_similarity, remembered_similarity):
    """How well a new support agrees with the supports the memory holds: (N, AGREEMENT_FEATURES).

    At stride 8+16 and at stride 32: the cosine of the new support's object and background prototypes to the
    remembered object prototype, and the remembered prototype's mean similarity on the new support's own picture
    inside and outside its mask (a mask moved off the object, or over-painted, puts the object outside or the
    background inside); the share of the picture the mask covers (log); and the correlation, over the query, of
    the new support's similarity map with the remembered one (another class lights up other pixels)."""
    features = [prototype_features(support), support[2]]
    stats = []
    for level, remembered in zip(features, memory.prototypes()):
        m = resize_mask(mask, level)
        stats += [F.cosine_similarity(masked_average(level, m), remembered, dim=1),
                  F.cosine_similarity(masked_average(level, 1 - m), remembered, dim=1)]
        # the mean over a mask of the picture's cosine map to `remembered`, taken as the masked mean of its unit
        # features dotted with the unit prototype: the same number, without a map that gradients must cross
        unit, direction = F.normalize(level, dim=1), F.normalize(remembered, dim=1)
        stats += [(masked_average(unit, m) * direction).sum(1), (masked_average(unit, 1 - m) * direction).sum(1)]
    stats.append(mask.mean((1, 2, 3)).clamp_min(1e-4).log() / 5)
    stats.append(pearson(query_similarity, remembered_similarity))
    return torch.stack(stats, 1)


class SupportGate(nn.Module):
    """The admission gate: how far support k >= 2 is let into the ConvLSTM (a factor of its input gate), from
    `agreement` with the supports already in. The first support is always let in: there is nothing to compare."""

    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(AGREEMENT_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.net[-1].bias.fill_(2.0)  # start mostly open (0.88): a support is let in until shown bad

    def forward(self, stats):
        return torch.sigmoid(self.net(stats))[:, :, None, None]  # (N, 1, 1, 1)


class FusionHead(nn.Module):
    """Fuses (support, query) into the ConvLSTM's input, decides how far to let each support in, runs the ConvLSTM
    and decodes each step from its hidden state and the gated evidence memory."""

    def __init__(self, level_channels, config=ModelConfig()):
        super().__init__()
        width, hidden = config.width, config.hidden
        self.prior_levels = tuple(config.prior_levels)
        # The decoder sees the gated mean of supports 1..k's evidence and, with max_guidance, also their gated
        # maximum: the mean blurs a small object that only some supports match well; the maximum keeps it.
        self.max_guidance = config.max_guidance
        evidence = guidance_channels(self.prior_levels) + 1  # guidance maps + similarity to the object prototype
        # Multi-context guiding: at each level a 1x1 projection of the query map and of the support
        # (mask-pooled: support and query are not aligned pixel to pixel) added into one running branch.
        self.query_proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in level_channels)
        self.support_proj = nn.ModuleList(nn.Linear(c, width) for c in level_channels)
        self.guide_proj = nn.Conv2d(evidence, width, 1)
        self.feature_dropout = nn.Dropout2d(config.feature_dropout)
        self.down = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1))  # stride 8 -> 16
        self.mix = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.attention = ResidualSpatialAttention(width)
        self.to_lstm = nn.Conv2d(width, width, 1)
        self.support_gate = SupportGate()
        self.lstm = ConvLSTMCell(width, hidden, input_kernel_size=config.lstm_input_kernel)
        self.decoder = nn.Sequential(
            nn.Conv2d(hidden + (evidence - 1) * (2 if self.max_guidance else 1), 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 1, 1))
        # The decoder's answer is a correction on the prototype baseline's similarity, so training starts from
        # (and can always fall back to) the training-free cue.
        self.similarity_scale = nn.Parameter(torch.tensor(10.0))
        self.similarity_offset = nn.Parameter(torch.tensor(0.5))

    def evidence(self, query_units, query_prototype_units, support, mask):
        """One support's evidence about the query (N, E, h8, w8): guidance maps at every level, then the cosine to
        its object prototype (the training-free cue). Also the support's masks at each level. The query's maps
        come normalised per pixel (see forward)."""
        masks = [resize_mask(mask, level) for level in support]
        guidance = [level_guidance(q, s, m, with_prior=level in self.prior_levels, pool_support=level == 0)
                    for level, (q, s, m) in enumerate(zip(query_units, support, masks))]
        size8 = query_units[0].shape[-2:]
        guidance = [F.interpolate(g, size=size8, mode="bilinear", align_corners=False) if g.shape[-2:] != size8
                    else g for g in guidance]
        similarity = unit_cosine_map(query_prototype_units, object_prototype(support, mask))
        return torch.cat(guidance + [similarity], 1), masks

    def lstm_input(self, query_projections, support, masks, evidence):
        """The ConvLSTM's input at stride 16: multi-context guiding of the query (its maps projected by query_proj)
        by the support and its evidence."""
        branch = [self.feature_dropout(q) + self.support_proj[level](masked_average(s, m))[:, :, None, None]
                  for level, (q, s, m) in enumerate(zip(query_projections, support, masks))]
        x = self.down(branch[0] + self.guide_proj(evidence))
        for extra in branch[1:]:
            x = x + F.interpolate(extra, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.to_lstm(self.attention(self.mix(x)))

    def decode(self, hidden, memory, query_prototype_units):
        mean = memory.mean()
        guidance = mean[:, :-1]
        if self.max_guidance:
            guidance = torch.cat([guidance, memory.maximum[:, :-1]], 1)
        similarity = memory.query_similarity(query_prototype_units)
        up = F.interpolate(hidden, size=mean.shape[-2:], mode="bilinear", align_corners=False)
        correction = self.decoder(torch.cat([up, guidance], 1))
        return self.similarity_scale * (similarity - self.similarity_offset) + correction

    def admit(self, support, mask, evidence, memory, query_prototype_units):
        """The admission gate's value for this support (N, 1, 1, 1): 1 for the first one."""
        if memory is None:
            return evidence.new_ones(evidence.shape[0], 1, 1, 1)
        remembered = memory.query_similarity(query_prototype_units)
        return self.support_gate(agreement(support, mask, memory, evidence[:, -1:], remembered))

    def step(self, x, support, mask, evidence, state, memory, query_prototype_units, open_gate=False):
        """One support into the ConvLSTM: (new state, new memory, gates incl. the admission). open_gate forces the
        input gate to 1 (admission included)."""
        admission = self.admit(support, mask, evidence, memory, query_prototype_units)
        state, gates = self.lstm(x, state if state is not None else self.lstm.zero_state(x), admission=admission,
                                 open_input_gate=open_gate)
        gates["admission"] = torch.ones_like(admission) if open_gate else admission
        weight = F.interpolate(gates["input_gate"].mean(1, keepdim=True), size=evidence.shape[-2:], mode="bilinear",
                               align_corners=False)
        memory = (memory or EvidenceMemory(evidence)).add(evidence, weight, support_prototypes(support, mask),
                                                          gates["input_gate"].mean((1, 2, 3))[:, None])
        return state, memory, gates

    def forward(self, query, supports, masks, one_shot=True, trace=False, open_gate_at=()):
        """Feed supports one at a time.

        query: list of 3 level maps (N, ...); supports: list over K of such lists; masks: list over K of (N, 1, H, W).
        open_gate_at: steps (1-based) whose input gate is forced open (to test that the gates matter).
        Returns a HeadOutput: the logits after supports 1..k (K maps (N, 1, h8, w8) at stride 8), each support's
        own 1-shot logits (the same, or [] unless one_shot), per step the gate traces ([] unless trace) and the
        admission gate's values (K tensors (N, 1, 1, 1), with gradients).
        """
        # The query is the same at every step: its maps are normalised (for the cosine cues) and projected once.
        query_units = [F.normalize(level, dim=1) for level in query]
        query_prototype_units = F.normalize(prototype_features(query), dim=1)
        query_projections = [project(level) for project, level in zip(self.query_proj, query)]
        state, memory, output = None, None, HeadOutput([], [], [], [])
        for k, (support, mask) in enumerate(zip(supports, masks), start=1):
            evidence, level_masks = self.evidence(query_units, query_prototype_units, support, mask)
            x = self.lstm_input(query_projections, support, level_masks, evidence)
            state, memory, gates = self.step(x, support, mask, evidence, state, memory, query_prototype_units,
                                             open_gate=k in open_gate_at)
            output.steps.append(self.decode(state[0], memory, query_prototype_units))
            output.admissions.append(gates["admission"])
            if one_shot and k == 1:  # step 1 already is the first support alone
                output.one_shots.append(output.steps[0])
            elif one_shot:  # the same support alone, from a zero state: the input of the logical-OR baseline
                alone, alone_memory, _ = self.step(x, support, mask, evidence, None, None, query_prototype_units)
                output.one_shots.append(self.decode(alone[0], alone_memory, query_prototype_units))
            if trace:
                output.traces.append({name: value.detach() for name, value in gates.items()})
        return output


class HeadOutput(NamedTuple):
    steps: list        # K logit maps (N, 1, h8, w8): after supports 1..k
    one_shots: list    # K logit maps: support k alone
    traces: list       # per step {gate name: tensor}, when traced
    admissions: list   # K (N, 1, 1, 1): how far each support was let in


# ---------------------------------------------------------------------------------------------------------------
# The user-facing model

# What `segment` takes: a file path, a PIL image or a numpy array (see fss_demo.images for the exact rules).
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
MaskLike = ImageLike  # nonzero = object
# Each support adds a ConvLSTM step and, for the OR, a 1-shot pass (and its gate traces): the app's cap too.
MAX_SUPPORTS = 10


@dataclass
class Segmentation:
    """Result of `FewShotSegmenter.segment`: one entry per step k (after supports 1..k). Maps are (H, W), the size
    of the query as loaded (a photo over `images.MAX_SIDE` pixels on its longer side is first shrunk to it)."""

    masks: list                   # K bool (H, W): the ConvLSTM's answer after supports 1..k
    probabilities: list           # K float32 (H, W) in [0, 1]
    one_shot_probabilities: list  # K float32 (H, W): support k alone (a 1-shot prediction)
    or_masks: list                # K bool (H, W): the logical OR of the 1-shot masks of supports 1..k
    or_probabilities: list        # K float32 (H, W): their running maximum
    admissions: list              # K floats in [0, 1]: how far support k was let in (the admission gate; 1 for
                                  # the first support, which has nothing to be compared with)
    gates: list                   # trace=True: K dicts {input_gate, forget_gate, output_gate, candidate, cell,
                                  # hidden: float32 (hidden, h16, w16)}, at stride 16 of the network input; else []
                                  # (input_gate includes the admission factor)


class FewShotSegmenter(nn.Module, PyTorchModelHubMixin, library_name="fss-demo",
                       tags=["few-shot-segmentation", "image-segmentation", "convlstm"],
                       pipeline_tag="image-segmentation"):
    """Segment, in a query image, the object marked in a few support images.

    >>> model = FewShotSegmenter()             # random head; use fss_demo.load_model() for trained weights
    >>> seg = model.segment(query, [(image, mask), ...])

    No licence is written into saved model cards: a model's licence follows its training data (the published
    weights: CC BY-NC 4.0, from CamVid), which only the person publishing it knows.
    """

    def __init__(self, config: Optional[ModelConfig] = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.backbone = build_backbone(self.config.backbone)
        channels = backbone_spec(self.config.backbone).level_channels
        self.head = FusionHead(channels, self.config)
        self._support_cache = OrderedDict()
        self.eval()

    @property
    def config(self):
        return self._hub_mixin_config

    @config.setter
    def config(self, config):
        # The mixin writes `_hub_mixin_config` as config.json: one object, so a changed threshold is saved too.
        self._hub_mixin_config = config

    @property
    def input_size(self):
        return self.config.input_size

    @property
    def threshold(self):
        return self.config.threshold

    @property
    def prototype_threshold(self):
        return self.config.prototype_threshold

    @property
    def device(self):
        return next(self.parameters()).device

    # -- saving and loading: config.json + model.safetensors, loaded strictly -------------------------------------

    @classmethod
    def _decode_arg(cls, expected_type, value):
        if expected_type in (ModelConfig, Optional[ModelConfig]) and isinstance(value, dict):
            return ModelConfig.from_dict(value)
        return super()._decode_arg(expected_type, value)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location="cpu", strict=True, **model_kwargs):
        """Safetensors only (never a pickle), and every tensor must be there: a clear error names what is not."""
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, "model.safetensors")
            if not os.path.isfile(weights):
                raise ValueError(f"{model_id!r} holds no model.safetensors: is it a save_pretrained folder?")
        else:
            try:
                weights = hf_hub_download(repo_id=model_id, filename="model.safetensors", revision=revision,
                                          cache_dir=cache_dir, force_download=force_download, token=token,
                                          local_files_only=local_files_only)
            except EntryNotFoundError:
                raise ValueError(f"the Hub repo {model_id!r} holds no model.safetensors (other weight formats are "
                                 "not read: they can run code when loaded)") from None
        model = cls(**model_kwargs)
        try:
            missing, unexpected = load_safetensors(model, weights, strict=False, device=str(map_location))
        except RuntimeError as error:  # a tensor of another shape: the weights are of another architecture
            reason = "; ".join(line.strip() for line in str(error).splitlines()[1:4])
            raise ValueError(f"{model_id!r}: model.safetensors does not fit this model's config.json: {reason}") from None
        if strict and (missing or unexpected):
            def listed(keys):
                return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "") if keys else "none"
            raise ValueError(f"{model_id!r}: model.safetensors does not fit this model's config.json; missing tensors: "
                             f"{listed(sorted(missing))}; unexpected tensors: {listed(sorted(unexpected))}")
        return model.eval()

    # -- features ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def features(self, image):
        """RGB uint8 (H, W, 3) -> list of 3 level maps (1, C, h, w) for one image."""
        x = torch.from_numpy(images.to_network(image, self.input_size))[None].to(self.device)
        return self.backbone(x)

    def _support_features(self, image, mask):
        """Backbone features of a support, cached by content: changing only the query reuses them."""
        key = hashlib.sha1(image.tobytes() + str(image.shape).encode() + np.packbits(mask).tobytes()).hexdigest()
        if key in self._support_cache:
            self._support_cache.move_to_end(key)
            return self._support_cache[key]
        network_mask = torch.from_numpy(images.mask_to_network(mask, self.input_size))[None, None].to(self.device)
        value = (self.features(image), network_mask)
        self._support_cache[key] = value
        while len(self._support_cache) > self.config.support_cache_size:
            self._support_cache.popitem(last=False)
        return value

    def clear_cache(self):
        self._support_cache.clear()

    def _prepare_supports(self, supports):
        """Checked supports -> [(backbone features, network-size mask)], from the cache where possible."""
        if supports is None or isinstance(supports, (str, bytes, np.ndarray, Image.Image)):
            raise ValueError("supports: expected a list of (image, mask) pairs")
        supports = list(supports)
        if not supports:
            raise ValueError("give at least one support: an image with a mask of the object to find")
        if len(supports) > MAX_SUPPORTS:
            raise ValueError(f"{len(supports)} supports given; at most {MAX_SUPPORTS} are taken (each one is a "
                             "ConvLSTM step)")
        prepared = []
        for number, pair in enumerate(supports, start=1):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"support {number}: expected an (image, mask) pair")
            image = images.load_image(pair[0], f"support {number} image")
            mask = images.load_mask(pair[1], size=image.shape[:2], what=f"support {number} mask")
            problem = images.support_mask_problem(mask)
            if problem:
                raise ValueError(f"support {number}: {problem}")
            prepared.append(self._support_features(image, mask))
        return prepared

    def _to_probabilities(self, logits, size):
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(up)[0, 0].float().cpu().numpy()

    # -- the public API --------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def segment(self, query: ImageLike, supports: Iterable[tuple[ImageLike, MaskLike]],
                trace: bool = False, open_gates: Iterable[int] = ()) -> Segmentation:
        """Find in `query` the kind of object marked in the supports, fed to the ConvLSTM one at a time.

        query: an image; supports: (image, mask) pairs, at most MAX_SUPPORTS, nonzero mask = object.
        trace: also return each step's gate activations (`Segmentation.gates`).
        open_gates: an ablation: steps (1-based) whose input gate is forced fully open, admission included, to see
        what a support the gates kept out would have done.
        Bad input raises a ValueError that says what to fix.
        """
        query_image = images.load_image(query, "query image")
        prepared = self._prepare_supports(supports)
        query_levels = self.features(query_image)
        steps, one_shots, traces, admissions = self.head(query_levels, [f for f, _ in prepared],
                                                         [m for _, m in prepared], trace=trace,
                                                         open_gate_at=tuple(open_gates))
        size = query_image.shape[:2]
        probabilities = [self._to_probabilities(s, size) for s in steps]
        one_shot = [self._to_probabilities(s, size) for s in one_shots]
        return Segmentation(
            masks=[p > self.threshold for p in probabilities],
            probabilities=probabilities,
            one_shot_probabilities=one_shot,
            or_masks=list(np.logical_or.accumulate([p > self.threshold for p in one_shot])),
            or_probabilities=list(np.maximum.accumulate(one_shot)),
            admissions=[float(a.flatten()[0]) for a in admissions],
            gates=[{name: value[0].float().cpu().numpy() for name, value in step.items() if name != "admission"}
                   for step in traces])

    @torch.inference_mode()
    def leave_one_out(self, query: ImageLike, supports: Iterable[tuple[ImageLike, MaskLike]]) -> list:
        """What each support did: for each k, the ConvLSTM's final probabilities (H, W) with support k left out
        (the others in their order), or None when it is the only support. Support features come from the cache
        that `segment` filled, so this costs one query pass and K runs of the small head."""
        query_image = images.load_image(query, "query image")
        prepared = self._prepare_supports(supports)
        query_levels = self.features(query_image)
        answers = []
        for k in range(len(prepared)):
            others = prepared[:k] + prepared[k + 1:]
            if not others:
                answers.append(None)
                continue
            steps = self.head(query_levels, [f for f, _ in others], [m for _, m in others], one_shot=False).steps
            answers.append(self._to_probabilities(steps[-1], query_image.shape[:2]))
        return answers
