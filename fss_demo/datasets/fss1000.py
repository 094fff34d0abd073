"""FSS-1000's layout: <root>/<class>/<n>.jpg with its binary mask <root>/<class>/<n>.png."""
import os

import numpy as np
from PIL import Image

from .. import images
from .base import Dataset


def image_mask_pairs(folder):
    """Stems of the <n>.jpg files in `folder` that have their <n>.png mask beside them."""
    names = set(os.listdir(folder))
    return sorted(os.path.splitext(f)[0] for f in names
                  if f.lower().endswith(".jpg") and os.path.splitext(f)[0] + ".png" in names)


def class_folders(root):
    """The sub-folders of `root` that hold at least one photo with its mask: FSS-1000's classes."""
    return sorted(d for d in os.listdir(root)
                  if os.path.isdir(os.path.join(root, d)) and image_mask_pairs(os.path.join(root, d)))


class FSS1000Dataset(Dataset):
    def __init__(self, root):
        self.root = root
        self.name = os.path.basename(os.path.normpath(root))
        self.class_names = {i: name for i, name in enumerate(class_folders(root), start=1)}
        self.ids = []
        self._class_of = {}
        for class_id, folder in self.class_names.items():
            for stem in image_mask_pairs(os.path.join(root, folder)):
                image_id = f"{folder}/{stem}"
                self.ids.append(image_id)
                self._class_of[image_id] = class_id
        self._shares = None

    def image(self, image_id):
        return images.load_image(os.path.join(self.root, image_id + ".jpg"))

    def labels(self, image_id):
        """0 = background, 1 = the object of this image's class (FSS-1000 masks are 0/255 greyscale or RGB)."""
        mask = np.asarray(Image.open(os.path.join(self.root, image_id + ".png")).convert("L"))
        return (mask > 127).astype(np.uint8)

    def class_shares(self, min_share=0.005):
        """Every image of a class's folder: FSS-1000 images show their class prominently."""
        found = {c: [] for c in self.class_names}
        for image_id, class_id in self._class_of.items():
            found[class_id].append(image_id)
        return found

    def binarize(self, labels, class_id):
        return labels.astype(np.uint8)
