"""The published head before model v2 (run 5), kept so that saved models of that kind still load and can be
compared: its decoder reads the plain mean and maximum of all supports' guidance maps and the cosine to their mean
prototype beside the ConvLSTM state, so the gates do not decide what reaches the prediction. A config.json without
a `fusion` setting means this head. New models use `model.FusionHead` (fusion="gated").
"""
import torch
import torch.nn.functional as F
from torch import nn

from .model import (ConvLSTMCell, HeadOutput, ModelConfig, ResidualSpatialAttention, cosine_map,
                    guidance_channels, level_guidance, masked_average, object_prototype, prototype_features,
                    resize_mask)


class MeanFusionHead(nn.Module):
    """Fuses (support, query) into the ConvLSTM's input, runs the ConvLSTM and decodes each step (run 5)."""

    def __init__(self, level_channels, config=ModelConfig()):
        super().__init__()
        width, hidden = config.width, config.hidden
        self.prior_levels = tuple(config.prior_levels)
        # The decoder sees the mean of supports 1..k's guidance maps and, with max_guidance, also their maximum:
        # the mean blurs a small object that only some supports match well; the maximum keeps it (as the OR does).
        self.max_guidance = max_guidance = config.max_guidance
        guidance = guidance_channels(self.prior_levels)
        # Multi-context guiding: at each level a 1x1 projection of the query map and of the support
        # (mask-pooled: support and query are not aligned pixel to pixel) added into one running branch.
        self.query_proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in level_channels)
        self.support_proj = nn.ModuleList(nn.Linear(c, width) for c in level_channels)
        self.guide_proj = nn.Conv2d(guidance, width, 1)
        self.feature_dropout = nn.Dropout2d(config.feature_dropout)
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
        return x, guidance, object_prototype(support, mask)

    def pool_guidance(self, mean, maximum):
        return torch.cat([mean, maximum], 1) if self.max_guidance else mean

    def decode(self, hidden, guidance, similarity):
        up = F.interpolate(hidden, size=guidance.shape[-2:], mode="bilinear", align_corners=False)
        correction = self.decoder(torch.cat([up, guidance], 1))
        return self.similarity_scale * (similarity - self.similarity_offset) + correction

    def forward(self, query, supports, masks, one_shot=True, trace=False, open_gate_at=()):
        """Feed supports one at a time.

        query: list of 3 level maps (N, ...); supports: list over K of such lists; masks: list over K of (N, 1, H, W).
        Returns the logits after supports 1..k (list of K (N, 1, h8, w8) maps at stride 8), each support's own
        1-shot logits alone (the same, or [] unless one_shot), and per step the gate traces (or [] unless trace).
        """
        query_proto_features = prototype_features(query)
        state, steps, one_shots, traces = None, [], [], []
        guidance_sum, guidance_max, prototype_sum = 0, None, 0
        for k, (support, mask) in enumerate(zip(supports, masks), start=1):
            x, guidance, prototype = self.context(query, support, mask)
            if state is None:
                state = self.lstm.zero_state(x)
            state, gates = self.lstm(x, state, open_input_gate=k in open_gate_at)
            guidance_sum, prototype_sum = guidance_sum + guidance, prototype_sum + prototype
            guidance_max = guidance if guidance_max is None else torch.maximum(guidance_max, guidance)
            similarity = cosine_map(query_proto_features, prototype_sum / k)
            steps.append(self.decode(state[0], self.pool_guidance(guidance_sum / k, guidance_max), similarity))
            if one_shot and k == 1:  # step 1 already is the first support alone
                one_shots.append(steps[0])
            elif one_shot:  # the same support alone, from a zero state: the input of the logical-OR baseline
                alone, _ = self.lstm(x, self.lstm.zero_state(x))
                one_shots.append(self.decode(alone[0], self.pool_guidance(guidance, guidance),
                                             cosine_map(query_proto_features, prototype)))
            if trace:
                traces.append({name: value.detach() for name, value in gates.items()})
        return HeadOutput(steps, one_shots, traces, [x.new_ones(x.shape[0], 1, 1, 1) for _ in steps])  # no admission gate
