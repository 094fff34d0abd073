"""Few-shot data: one module per dataset layout, one seeded episode sampler for all of them.

Every dataset offers the same small interface:
    name, class_names (class id -> name), ids (image ids),
    image(id) -> RGB uint8 array, labels(id) -> uint8 label map, binarize(labels, class_id) -> {0, 1, 255},
    class_shares(min_share) -> {class id: [image ids where the class covers at least min_share of the image]}.
"""
import os

from .episodes import Episode, EpisodeMix, EpisodeSampler, collate
from .fss1000 import FSS1000Dataset, class_folders
from .labelmap import LabelMapDataset
from .pascal import Pascal5iDataset
from .splits import novel_split, training_split, validation_split

LAYOUTS = ("a label-map folder (classes.txt, images/, masks/), a PASCAL VOC folder (JPEGImages/, "
           "SegmentationClassAug/) or FSS-1000 (<class>/<n>.jpg with <n>.png)")


def open_dataset(root, fold=0):
    """Recognise the layout of a folder by what it holds, and open it; say what a near miss lacks."""
    if not os.path.isdir(root):
        raise ValueError(f"{root!r} is not a folder; expected {LAYOUTS}")
    lacks = lambda *names: [name for name in names if not os.path.exists(os.path.join(root, name))]
    label_map_lacks = lacks("classes.txt", "images", "masks")
    pascal_lacks = lacks("JPEGImages", "SegmentationClassAug")
    if not label_map_lacks:
        return LabelMapDataset(root)
    if not pascal_lacks:
        return Pascal5iDataset(root, fold=fold)
    if class_folders(root):
        return FSS1000Dataset(root)
    if len(label_map_lacks) < 3:
        raise ValueError(f"{root!r} looks like a label-map folder but lacks {', '.join(label_map_lacks)}")
    if len(pascal_lacks) < 2:
        raise ValueError(f"{root!r} looks like a PASCAL VOC folder but lacks {', '.join(pascal_lacks)}")
    raise ValueError(f"{root!r} holds none of the known layouts: expected {LAYOUTS}")


__all__ = ["Episode", "EpisodeMix", "EpisodeSampler", "FSS1000Dataset", "LabelMapDataset", "Pascal5iDataset",
           "collate", "novel_split", "open_dataset", "training_split", "validation_split"]
