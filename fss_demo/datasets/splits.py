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
# Validation images whose machine-made mask marks something other than the named object (a frame, the moon behind a
# dolphin, a holster) or leaves a large part of it as background (a revolver's barrel): scored as queries, they count
# a model wrong for finding the object. Session 32's audit of every held-out Caltech image, judged on the photo and
# its mask alone, blind to any model's answer (the criterion is in NOTES.md). Left out of validation only: training
# never shows these classes, and the composites' objects are cut out of such pictures as pasted, so there the
# label is the pasted pixels themselves.
WRONG_MASKS = {
    "caltech_pseudo": [
        "butterfly_image_0020", "butterfly_image_0023", "butterfly_image_0046", "butterfly_image_0060",
        "camera_image_0042", "camera_image_0050", "dolphin_image_0009", "dolphin_image_0011", "dolphin_image_0034",
        "dolphin_image_0036", "dolphin_image_0044", "dolphin_image_0050", "dolphin_image_0058", "dolphin_image_0060",
        "electric_guitar_image_0010", "electric_guitar_image_0019", "electric_guitar_image_0022",
        "electric_guitar_image_0051", "electric_guitar_image_0052", "electric_guitar_image_0057",
        "grand_piano_image_0030", "headphone_image_0007", "headphone_image_0008", "headphone_image_0031",
        "headphone_image_0034", "hedgehog_image_0003", "revolver_image_0006", "revolver_image_0015",
        "revolver_image_0016", "revolver_image_0017", "revolver_image_0035", "revolver_image_0038",
        "revolver_image_0052", "revolver_image_0056", "starfish_image_0001", "starfish_image_0055",
        "starfish_image_0060", "sunflower_image_0019",
    ],
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
    """(class ids, image ids) held out from training. A set this split does not know is novel as a whole. The
    episodes a model is scored on are `validation_split`'s."""
    names = NOVEL_CLASSES.get(dataset.name)
    if names is None:
        return sorted(dataset.class_names), list(dataset.ids)
    classes = [c for c, name in dataset.class_names.items() if name in names]
    return classes, _ids(dataset, VALIDATION_IMAGES)


def validation_split(dataset):
    """novel_split without the images whose masks are wrong (WRONG_MASKS): the episodes a model is scored on."""
    classes, ids = novel_split(dataset)
    wrong = set(WRONG_MASKS.get(dataset.name, ()))
    return classes, [i for i in ids if i not in wrong]


def training_split(dataset):
    """(class ids, image ids) to train on: every class of the set that is not held out."""
    held_out = set(NOVEL_CLASSES.get(dataset.name, []))
    classes = [c for c, name in dataset.class_names.items() if name not in held_out]
    return classes, _ids(dataset, TRAINING_IMAGES)
