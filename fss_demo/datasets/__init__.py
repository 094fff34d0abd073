"""Few-shot data: one module per dataset layout, one seeded episode sampler for all of them.

Every dataset offers the same small interface:
    name, class_names (class id -> name), ids (image ids),
    image(id) -> RGB uint8 array, labels(id) -> uint8 label map, binarize(labels, class_id) -> {0, 1, 255},
    class_shares(min_share) -> {class id: [image ids where the class covers at least min_share of the image]}.
"""
import os

from .episodes import Episode, EpisodeSampler
from .fss1000 import FSS1000Dataset
from .labelmap import LabelMapDataset
from .pascal import Pascal5iDataset
from .splits import novel_split, training_split


def open_dataset(root, fold=0):
    """Recognise the layout of a folder and open it."""
    if os.path.isfile(os.path.join(root, "classes.txt")) and os.path.isdir(os.path.join(root, "masks")):
        return LabelMapDataset(root)
    if os.path.isdir(os.path.join(root, "JPEGImages")) and os.path.isdir(os.path.join(root, "SegmentationClassAug")):
        return Pascal5iDataset(root, fold=fold)
    if os.path.isdir(root) and any(os.path.isdir(os.path.join(root, d)) for d in os.listdir(root)):
        return FSS1000Dataset(root)
    raise ValueError(f"{root!r} is neither a label-map folder (classes.txt, images/, masks/), "
                     "a PASCAL VOC folder (JPEGImages/, SegmentationClassAug/) nor FSS-1000 (<class>/<n>.jpg + .png)")


__all__ = ["Episode", "EpisodeSampler", "FSS1000Dataset", "LabelMapDataset", "Pascal5iDataset",
           "novel_split", "open_dataset", "training_split"]
