"""PASCAL-5i (Shaban et al. 2017): VOC2012 JPEGImages + SegmentationClassAug, 20 classes in 4 folds of 5.

Fold i holds out classes 5i+1 .. 5i+5: they are scored on the `val` images, and training uses the other 15
classes on the `train` images (see splits.py). Image lists come from ImageSets/Segmentation/<split>.txt; without
a train list, training takes every labelled image that is not in val.
"""
import os

import numpy as np
from PIL import Image

from .. import images
from .base import Dataset

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def fold_classes(fold):
    """The names of fold `fold`'s five held-out classes."""
    return VOC_CLASSES[5 * fold:5 * fold + 5]


class Pascal5iDataset(Dataset):
    def __init__(self, root, fold=0):
        if fold not in range(4):
            raise ValueError("PASCAL-5i has folds 0, 1, 2 and 3")
        self.root = root
        self.fold = fold
        self.name = f"pascal5i-fold{fold}"
        self.class_names = {c: name for c, name in enumerate(VOC_CLASSES, start=1)}
        self.ids = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, "SegmentationClassAug"))
                          if f.endswith(".png"))
        self._shares = None

    def split(self, name):
        listing = os.path.join(self.root, "ImageSets", "Segmentation", f"{name}.txt")
        if os.path.isfile(listing):
            with open(listing) as f:
                return [line.strip() for line in f if line.strip()]
        if name == "train":
            held_out = set(self.split("val"))
            return [i for i in self.ids if i not in held_out]
        raise ValueError(f"{self.name}: no image list {listing}")

    def image(self, image_id):
        return images.load_image(os.path.join(self.root, "JPEGImages", image_id + ".jpg"))

    def labels(self, image_id):
        return np.asarray(Image.open(os.path.join(self.root, "SegmentationClassAug", image_id + ".png")))
