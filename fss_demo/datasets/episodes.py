"""Episodes, in one place: drawing them (seeded, from one data set or a mix) and batching them for the head.

An episode is one class, one query image and K support images, all showing that class.
"""
from dataclasses import dataclass

import numpy as np
import torch

# A class must cover at least this share of an image for the image to serve in an episode (0.5%: a
# 23x23-pixel patch of a 320x320 image), so no episode asks for an invisible object.
MIN_SHARE = 0.005


@dataclass(frozen=True)
class Episode:
    class_id: int
    query: str       # image id
    supports: tuple  # image ids


class EpisodeSampler:
    """Episodes of one data set: a class uniformly, then K+1 distinct images in which it is large enough."""

    def __init__(self, dataset, class_ids, image_ids, shots, seed=0, min_share=MIN_SHARE):
        allowed = set(image_ids)
        shares = dataset.class_shares(min_share)
        self.dataset = dataset
        self.shots = shots
        self.pool = {c: [i for i in shares.get(c, []) if i in allowed] for c in class_ids}
        self.pool = {c: ids for c, ids in self.pool.items() if len(ids) > shots}
        if not self.pool:
            raise ValueError(f"{dataset.name}: no class has {shots + 1} images to make a {shots}-shot episode")
        self.class_ids = sorted(self.pool)
        self.seed = seed

    def draw(self, rng, class_id=None):
        """One random episode (of `class_id` if given)."""
        if class_id is None:
            class_id = self.class_ids[rng.integers(len(self.class_ids))]
        pool = self.pool[class_id]
        ids = [pool[i] for i in rng.choice(len(pool), size=self.shots + 1, replace=False)]
        return Episode(class_id, ids[0], tuple(ids[1:]))

    def episodes(self, count):
        """`count` episodes, the same ones for the same seed."""
        rng = np.random.default_rng(self.seed)
        return [self.draw(rng) for _ in range(count)]


class EpisodeMix:
    """Training episodes from several data sets: a class uniformly from the union of their classes.
    shares: {set index: share of all episodes} for sets that get a fixed share (e.g. the composites); the other
    sets share the rest."""

    def __init__(self, samplers, shares=None):
        self.samplers = list(samplers)
        self.shares = dict(shares or {})
        if sum(self.shares.values()) >= 1 or any(s < 0 for s in self.shares.values()):
            raise ValueError(f"the fixed shares {self.shares} must be >= 0 and leave room for the other sets")
        rest = [s for s in range(len(self.samplers)) if s not in self.shares]
        if not rest:
            raise ValueError("every set has a fixed share: leave at least one to share the rest")
        self.classes = [(s, c) for s in rest for c in self.samplers[s].class_ids]

    def draw(self, rng):
        """(index of the data set, episode)."""
        pick = rng.random() if self.shares else 1.0  # no draw without shares: older runs' episodes stay the same
        for index, share in self.shares.items():
            if pick < share:
                return index, self.samplers[index].draw(rng)
            pick -= share
        index, class_id = self.classes[rng.integers(len(self.classes))]
        return index, self.samplers[index].draw(rng, class_id)


def collate(items, device="cpu"):
    """Batch episodes for the head from cached features.

    items: [(dataset, feature cache, Episode)], all with the same number of supports K.
    Returns query maps [L x (B, C, h, w)] (the cache's: 3 levels, then any cue blocks), supports [K x [L maps]],
    support masks [K x (B, 1, H, W)],
    query targets (B, H, W) in {0, 1, 255}.
    """
    levels, targets = [], []
    for dataset, cache, episode in items:
        features, labels = cache.gather((episode.query,) + tuple(episode.supports))
        levels.append(features)
        targets.append(torch.from_numpy(dataset.binarize(labels.numpy(), episode.class_id)))
    shots = len(items[0][2].supports)
    levels = [torch.stack(level).to(device) for level in zip(*levels)]  # L maps (B, 1+K, C, h, w)
    targets = torch.stack(targets).to(device)  # (B, 1+K, H, W)
    query = [level[:, 0] for level in levels]
    supports = [[level[:, k] for level in levels] for k in range(1, shots + 1)]
    masks = [(targets[:, k:k + 1] == 1).float() for k in range(1, shots + 1)]
    return query, supports, masks, targets[:, 0]
