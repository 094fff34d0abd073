"""FSS-1000's layout: <root>/<class>/<n>.jpg with its binary mask <root>/<class>/<n>.png."""
import os

import numpy as np
from PIL import Image

from .. import images
from .base import Dataset


class FSS1000Dataset(Dataset):
    def __init__(self, root):
        self.root = root
        self.name = os.path.basename(os.path.normpath(root))
        folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.class_names = {i: name for i, name in enumerate(folders, start=1)}
        self.ids = []
        self._class_of = {}
        for class_id, folder in self.class_names.items():
            for f in sorted(os.listdir(os.path.join(root, folder))):
                stem, extension = os.path.splitext(f)
                if extension.lower() == ".jpg" and os.path.isfile(os.path.join(root, folder, stem + ".png")):
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

    def classes_in(self, labels):
        return {}  # unused: class_shares below knows each image's class from its folder

    def class_shares(self, min_share=0.005):
        found = {c: [] for c in self.class_names}
        for image_id, class_id in self._class_of.items():
            found[class_id].append(image_id)
        return found  # every FSS-1000 image shows its class prominently

    def binarize(self, labels, class_id):
        return labels.astype(np.uint8)
