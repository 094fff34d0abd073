"""The fixed split of the shared training sets into training classes and novel validation classes.

Held out, never seen as foreground in training: a spread of garments, road objects and whole objects
(animals, instruments, plants, tools), so validation measures transfer to unseen kinds of things.
CamVid is also split by image: training on its `train` split, validation on `val` + `test`.
PASCAL-5i's folds follow the benchmark: fold i's five classes on `val`, the other fifteen trained on `train`.
"""
from .pascal import fold_classes

NOVEL_CLASSES = {
    "ccp": ["belt", "boots", "cardigan", "hat", "jeans", "scarf", "skirt", "socks", "sunglasses", "sweater"],
    "camvid": ["car", "pedestrian", "sign_symbol", "tree"],
    "caltech_pseudo": ["butterfly", "camera", "dolphin", "electric_guitar", "grand_piano", "hedgehog", "kangaroo",
                       "llama", "revolver", "starfish", "sunflower", "headphone"],
}
TRAINING_IMAGES = {"camvid": ["train"]}
VALIDATION_IMAGES = {"camvid": ["val", "test"]}
for _fold in range(4):
    NOVEL_CLASSES[f"pascal5i-fold{_fold}"] = fold_classes(_fold)
    TRAINING_IMAGES[f"pascal5i-fold{_fold}"] = ["train"]
    VALIDATION_IMAGES[f"pascal5i-fold{_fold}"] = ["val"]


def _ids(dataset, splits):
    if dataset.name not in splits:
        return list(dataset.ids)
    allowed = set()
    for name in splits[dataset.name]:
        allowed.update(dataset.split(name))
    return [i for i in dataset.ids if i in allowed]


def novel_split(dataset):
    """(class ids, image ids) to validate on. A set this split does not know is novel as a whole."""
    names = NOVEL_CLASSES.get(dataset.name)
    if names is None:
        return sorted(dataset.class_names), list(dataset.ids)
    classes = [c for c, name in dataset.class_names.items() if name in names]
    return classes, _ids(dataset, VALIDATION_IMAGES)


def training_split(dataset):
    """(class ids, image ids) to train on: every class of the set that is not held out."""
    held_out = set(NOVEL_CLASSES.get(dataset.name, []))
    classes = [c for c, name in dataset.class_names.items() if name not in held_out]
    return classes, _ids(dataset, TRAINING_IMAGES)
