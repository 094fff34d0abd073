"""PASCAL-5i (Shaban et al. 2017): VOC2012 JPEGImages + SegmentationClassAug, 20 classes in 4 folds of 5.

Fold i's novel classes are 5i+1 .. 5i+5; evaluation uses VOC2012's segmentation val list when present.
"""
import os

import numpy as np
from PIL import Image

from .. import images
from .base import Dataset

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


class Pascal5iDataset(Dataset):
    def __init__(self, root, fold=0, split="val"):
        if fold not in range(4):
            raise ValueError("PASCAL-5i has folds 0, 1, 2 and 3")
        self.root = root
        self.fold = fold
        self.name = f"pascal5i-fold{fold}"
        self.class_names = {c: VOC_CLASSES[c - 1] for c in range(5 * fold + 1, 5 * fold + 6)}
        listing = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
        if os.path.isfile(listing):
            with open(listing) as f:
                self.ids = [line.strip() for line in f if line.strip()]
        else:
            self.ids = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, "SegmentationClassAug")))
        self._shares = None

    def image(self, image_id):
        return images.load_image(os.path.join(self.root, "JPEGImages", image_id + ".jpg"))

    def labels(self, image_id):
        return np.asarray(Image.open(os.path.join(self.root, "SegmentationClassAug", image_id + ".png")))
