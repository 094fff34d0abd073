"""The label-map layout of ../shared/data and of a user's own data:

    <root>/classes.txt         line i (1-based) names label value i
    <root>/images/<id>.jpg     photo
    <root>/masks/<id>.png      uint8 label map: 0 background, i class i, 255 ignore
    <root>/splits/<name>.txt   optional image id lists
"""
import os

import numpy as np
from PIL import Image

from .. import images
from .base import Dataset


class LabelMapDataset(Dataset):
    def __init__(self, root, split=None):
        self.root = root
        self.name = os.path.basename(os.path.normpath(root))
        with open(os.path.join(root, "classes.txt")) as f:
            names = [line.strip() for line in f if line.strip()]
        self.class_names = {i: name for i, name in enumerate(names, start=1)}
        self.ids = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, "masks")) if f.endswith(".png"))
        self._shares = None
        if split is not None:
            self.ids = [i for i in self.split(split) if i in set(self.ids)]

    def split(self, name):
        with open(os.path.join(self.root, "splits", f"{name}.txt")) as f:
            return [line.strip() for line in f if line.strip()]

    def version(self):
        listing = os.scandir(os.path.join(self.root, "masks"))
        return ",".join(sorted(f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for e in listing))

    def image(self, image_id):
        for extension in (".jpg", ".jpeg", ".png"):
            path = os.path.join(self.root, "images", image_id + extension)
            if os.path.isfile(path):
                return images.load_image(path)
        raise ValueError(f"{self.name}: no image for {image_id!r}")

    def labels(self, image_id):
        return np.asarray(Image.open(os.path.join(self.root, "masks", image_id + ".png")))
