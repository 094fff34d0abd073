"""One seeded episode sampler for every layout: K supports and one query showing the same class."""
from dataclasses import dataclass

import numpy as np

# A class must cover at least this share of an image for the image to serve in an episode (0.5%: a
# 23x23-pixel patch of a 320x320 image), so no episode asks for an invisible object.
MIN_SHARE = 0.005


@dataclass(frozen=True)
class Episode:
    class_id: int
    query: str
    supports: tuple


class EpisodeSampler:
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

    def episodes(self, count):
        """`count` episodes, the same ones for the same seed: class uniformly, then K+1 distinct images."""
        rng = np.random.default_rng(self.seed)
        result = []
        for _ in range(count):
            class_id = self.class_ids[rng.integers(len(self.class_ids))]
            chosen = rng.choice(len(self.pool[class_id]), size=self.shots + 1, replace=False)
            ids = [self.pool[class_id][i] for i in chosen]
            result.append(Episode(class_id, ids[0], tuple(ids[1:])))
        return result
