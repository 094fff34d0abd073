"""Backbone features of a whole dataset, computed once and cached on disk, so training and evaluation
epochs cost only the small head."""
import hashlib
import os

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import images

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "fss_demo")


def backbone_fingerprint(backbone):
    """Its class and weights: two backbones built from the same weights can return different maps."""
    digest = hashlib.sha1(type(backbone).__name__.encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


class FeatureCache:
    """levels[l][i]: float16 features of image i at level l (the backbone's outputs: its three levels, then any cue
    maps); labels[i]: uint8 label map at the network size."""

    def __init__(self, ids, levels, labels):
        self.ids = list(ids)
        self.index = {image_id: i for i, image_id in enumerate(self.ids)}
        self.levels = levels
        self.labels = labels

    def gather(self, image_ids):
        rows = torch.tensor([self.index[i] for i in image_ids])
        return [level[rows].float() for level in self.levels], self.labels[rows]

    @classmethod
    def build(cls, dataset, backbone, image_ids=None, size=images.NETWORK_SIZE, cache_dir=DEFAULT_CACHE):
        image_ids = sorted(set(dataset.ids if image_ids is None else image_ids))
        # the files' sizes and times too: a regenerated set (same ids, new pictures) must not reuse old features
        key = hashlib.sha1(("\n".join(image_ids) + dataset.version()).encode()).hexdigest()[:8]
        # a backbone that also returns cue blocks' outputs caches them too, in a file of its own
        blocks = "".join(f"b{index}" for index in getattr(backbone, "cue_blocks", ()))
        name = f"{dataset.name}-{backbone_fingerprint(backbone)}{'-' + blocks if blocks else ''}-{size}-{key}.pt"
        path = os.path.join(cache_dir, name)
        if os.path.isfile(path):
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return cls(saved["ids"], saved["levels"], saved["labels"])
        levels, labels = None, torch.empty(len(image_ids), size, size, dtype=torch.uint8)
        with torch.inference_mode():
            for row, image_id in enumerate(tqdm(image_ids, desc=f"features {dataset.name}", unit="img")):
                x = torch.from_numpy(images.to_network(dataset.image(image_id), size))[None]
                outputs = backbone(x.to(next(backbone.parameters()).device))
                if levels is None:
                    levels = [torch.empty(len(image_ids), *o.shape[1:], dtype=torch.float16) for o in outputs]
                for store, output in zip(levels, outputs):
                    store[row] = output[0].half().cpu()
                label_map = Image.fromarray(dataset.labels(image_id)).resize((size, size), Image.NEAREST)
                labels[row] = torch.from_numpy(np.array(label_map))
        os.makedirs(cache_dir, exist_ok=True)
        torch.save({"ids": image_ids, "levels": levels, "labels": labels}, path + ".tmp")
        os.replace(path + ".tmp", path)
        return cls(image_ids, levels, labels)
