"""Scene-like few-shot sets composed from label-map sets: objects cut out with their masks, pasted onto other photos.

    python -m fss_demo.datasets.composites --data ../shared/data/ccp ../shared/data/camvid \
        ../shared/data/caltech_pseudo --out DIR [--per-class 40] [--val-per-class 20] [--clutter-per-class 30] \
        [--size 416] [--seed 0]

writes four label-map sets (classes.txt, images/<id>.jpg, masks/<id>.png), read by `open_dataset` like any other:

    DIR/composites_train/   training classes only, cut from training images, on training backgrounds;
                            pixels of held-out classes in the backgrounds are 255 (nothing is learnt about them)
    DIR/composites_val/     novel classes only, cut from validation images, on validation backgrounds;
                            pixels of training classes in the backgrounds are 0
    DIR/clutter_val/        the same novel classes and sources as composites_val, as cluttered scenes (below)
    DIR/clutter_train/      the training classes and sources of composites_train, as cluttered scenes

Each composite is made for one target class: 1 to 3 instances of it plus 0 to 2 distractors of other classes, each
labelled with its own class, pasted in random order (later ones occlude earlier ones) at log-uniform scales of 1% to
40% of the image, random positions and flips, with soft edges. A cluttered composite is like everyday photos of
crowds, rows of cars or chairs: 1 to 30 instances of the target, 0 to 8 distractors, each picture at a scale of its
own (typical objects of 0.4% to 6% of the picture, so an episode's supports show the class at very different
sizes). Class names are "<set>/<class>" so that classes of different sets never merge; "ccp/person" is the union of
a ccp photo's labels, cut out as one object. Each folder also holds `objects.json` (what was pasted where, for
checks) and `done.json` (the arguments: a second call with the same ones returns at once). Seeded: the same call
gives byte-identical files.
"""
import argparse
import json
import math
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from .episodes import MIN_SHARE
from .labelmap import LabelMapDataset
from .splits import novel_split, training_split

# Bump when the recipe changes, so that folders made by an older recipe are rebuilt instead of reused.
RECIPE_VERSION = 1
SPLITS = ("composites_train", "composites_val", "clutter_val", "clutter_train")
# A class made of all of a set's labels: the whole person of a fashion photo (every garment, skin and hair together).
WHOLE_CLASSES = {"ccp": "person"}
WHOLE = -1  # the label "value" that stands for the union of all labels

# Share of the composite that one pasted object covers, drawn log-uniformly: small objects (the weak spot)
# are as frequent as large ones. 1% stays above the sampler's 0.5% after a border cut and some occlusion.
SHARE_RANGE = (0.01, 0.40)
# A cut-out is enlarged at most this much: beyond it the object is visibly blurry next to a sharp background, a cue
# that would tell "pasted" apart from "photographed".
MAX_UPSCALE = 3.0
# Cut-outs smaller than this (in source pixels) are mush at any useful scale (rings, earrings, distant signs).
MIN_SOURCE_PIXELS = 256
# A class needs this many distinct source objects, so that a 5-shot episode (6 images) need not repeat one object.
MIN_SOURCES = 6
# Up to this fraction of an object's box may lie off each side of the image: a partly cut object is realistic,
# and at least 0.85 x 0.85 = 72% of the box stays inside.
OFF_CANVAS = 0.15
# Cluttered scenes (clutter_val): instances of the target (log-uniform count), distractors, a picture's typical
# object share (log-uniform) and each object's spread around it (a factor exp(uniform(-SPREAD, SPREAD))); the
# instances are capped so that their shares add up to at most CLUTTER_AREA.
CLUTTER_INSTANCES = (1, 30)
CLUTTER_DISTRACTORS = (0, 8)
CLUTTER_SCALE = (0.004, 0.06)
CLUTTER_SPREAD = 0.5
CLUTTER_AREA = 0.6
# Gaussian blur of the pasted alpha, in output pixels: a feathered edge like a photo's, no sharp seam to latch onto.
EDGE_SIGMA = 1.0
# Backgrounds are square crops of 60-100% of the photo's shorter side: varied framing, still a whole scene.
CROP_RANGE = (0.6, 1.0)
# A background pool is restricted to photos without pixels of held-out classes only if this many remain.
MIN_BACKGROUNDS = 20
# A composite whose target ends up below the sampler's minimum share (occluded, cut by the border) is redrawn.
ATTEMPTS = 5
JPEG_QUALITY = 90
# Source photos kept decoded: composites of one target class reuse its few sources again and again.
PHOTO_CACHE = 64


@dataclass(frozen=True)
class ObjectClass:
    set_index: int
    value: int  # label value in its set, or WHOLE
    name: str   # "<set>/<class>"

    def clashes(self, other_set, other_value=None):
        """A whole class and the other classes (or the photos) of its own set cannot share a composite: one pixel
        holds one label, so a pasted person's coat would be "person" while a pasted coat is "coat"."""
        if self.set_index != other_set:
            return False
        if other_value is None:  # a background photo of that set: its person is labelled by garments
            return self.value == WHOLE
        return (self.value == WHOLE) != (other_value == WHOLE)


@dataclass
class Plan:
    """What one composite set is made of."""
    classes: list        # [ObjectClass]; composite class id = position + 1
    sources: dict        # ObjectClass -> [image id] with a usable cut-out, sorted
    backgrounds: dict    # set index -> [image id], sorted
    luts: dict           # set index -> uint8 (256,) map from the set's labels to composite labels


# ---------------------------------------------------------------- cut-outs


def largest_component(mask):
    """(component mask cropped to its box, (top, left)) of the largest 8-connected component, or None if empty.
    One connected piece is one object: it drops stray pixels of noisy masks (caltech's are machine-made) and splits
    a street's cars or a pair of shoes into single instances, so scale and position refer to one object."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    top, left = rows[0], cols[0]
    crop = mask[top:rows[-1] + 1, left:cols[-1] + 1]
    labelled, count = ndimage.label(crop, structure=np.ones((3, 3), bool))
    if count > 1:
        crop = labelled == 1 + np.argmax(np.bincount(labelled.ravel())[1:])
        rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
        crop = crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        top, left = top + rows[0], left + cols[0]
    return crop, (int(top), int(left))


def class_mask(labels, value):
    return (labels != 0) & (labels != 255) if value == WHOLE else labels == value


def usable(component, size):
    """Big enough to be a recognisable object, and able to reach the smallest share without enlarging past
    MAX_UPSCALE or outgrowing the image (thin poles cannot)."""
    mask, _ = component
    area = int(mask.sum())
    reach = min(MAX_UPSCALE, size / max(mask.shape))
    return area >= MIN_SOURCE_PIXELS and area * reach ** 2 >= SHARE_RANGE[0] * size * size


def catalog(dataset, size):
    """{image id: (label values present, {value or WHOLE: usable largest component?})}, read once per set."""
    whole = dataset.name in WHOLE_CLASSES
    found = {}
    for image_id in dataset.ids:
        labels = dataset.labels(image_id)
        values = {int(v) for v in np.unique(labels)} - {0, 255}
        ok = {v for v in values if usable(largest_component(labels == v), size)}
        if whole and values and usable(largest_component(class_mask(labels, WHOLE)), size):
            ok.add(WHOLE)
        found[image_id] = (values, ok)
    return found


# ---------------------------------------------------------------- what each set is made of


def plan(datasets, catalogs, training):
    """Classes, object sources, background pools and label maps of composites_train (training=True) or _val."""
    classes, sources, backgrounds, luts = [], {}, {}, {}
    for set_index, (dataset, found) in enumerate(zip(datasets, catalogs)):
        train_classes, train_ids = training_split(dataset)
        novel_classes, val_ids = novel_split(dataset)
        # A set the split does not know is all-novel to novel_split and all-training to training_split: it goes to
        # composites_train only, so no class is ever on both sides.
        novel_classes = sorted(set(novel_classes) - set(train_classes))
        values, image_ids = (train_classes, train_ids) if training else (novel_classes, val_ids)
        names = [(v, dataset.class_names[v]) for v in sorted(values)]
        if training and dataset.name in WHOLE_CLASSES:
            names.append((WHOLE, WHOLE_CLASSES[dataset.name]))
        for value, name in names:
            object_class = ObjectClass(set_index, value, f"{dataset.name}/{name}")
            ids = [i for i in image_ids if value in found[i][1]]
            if len(ids) >= MIN_SOURCES:
                classes.append(object_class)
                sources[object_class] = ids
        # Photos without held-out pixels are preferred as backgrounds: for training they carry no ignored holes, for
        # validation they show no more objects of the classes being pasted (and, for caltech, other classes' photos).
        clean = [i for i in image_ids if not found[i][0] & set(novel_classes)]
        backgrounds[set_index] = clean if len(clean) >= MIN_BACKGROUNDS else list(image_ids)
    if len(classes) > 254:
        raise ValueError(f"{len(classes)} classes do not fit in a uint8 label map")
    for set_index, dataset in enumerate(datasets):
        luts[set_index] = label_table(dataset, set_index, classes, training)
    return Plan(classes, sources, backgrounds, luts)


def label_table(dataset, set_index, classes, training):
    """Background labels: a class of the composite set keeps its label (renumbered); any other class is 255 in
    training (held out: neither target nor background) and 0 in validation (training classes are background there)."""
    lut = np.full(256, 255 if training else 0, np.uint8)
    lut[0], lut[255] = 0, 255
    for class_id, object_class in enumerate(classes, start=1):
        if object_class.set_index == set_index and object_class.value != WHOLE:
            lut[object_class.value] = class_id
    return lut


# ---------------------------------------------------------------- one composite


class Photos:
    """Decoded (image, labels) of the sets' photos, the most recently used kept."""

    def __init__(self, datasets):
        self.datasets = datasets
        self.kept = OrderedDict()

    def get(self, set_index, image_id):
        key = (set_index, image_id)
        if key not in self.kept:
            dataset = self.datasets[set_index]
            self.kept[key] = (dataset.image(image_id), dataset.labels(image_id))
            if len(self.kept) > PHOTO_CACHE:
                self.kept.popitem(last=False)
        self.kept.move_to_end(key)
        return self.kept[key]


def background(rng, photos, set_index, image_id, lut, size):
    """A random square crop of the photo, resized to size x size, maybe flipped; its labels renumbered by `lut`."""
    image, labels = photos.get(set_index, image_id)
    height, width = labels.shape
    side = max(1, round(min(height, width) * rng.uniform(*CROP_RANGE)))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    box = (int(left), int(top), int(left + side), int(top + side))
    image = Image.fromarray(image).resize((size, size), Image.BILINEAR, box=box)
    labels = Image.fromarray(labels).resize((size, size), Image.NEAREST, box=box)
    if rng.random() < 0.5:
        image, labels = image.transpose(Image.FLIP_LEFT_RIGHT), labels.transpose(Image.FLIP_LEFT_RIGHT)
    return np.array(image, np.float32), lut[np.asarray(labels)]


def cut_out(photos, object_class, image_id):
    """(RGB crop, bool mask) of the object's largest connected piece in its source photo."""
    image, labels = photos.get(object_class.set_index, image_id)
    mask, (top, left) = largest_component(class_mask(labels, object_class.value))
    return image[top:top + mask.shape[0], left:left + mask.shape[1]], mask


def log_uniform(rng, low, high):
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def paste(rng, canvas, label_map, cutout, class_id, share):
    """Blend a cut-out into canvas (float RGB) at `share` of the image, a random position and flip; its alpha > 0.5
    pixels take `class_id` in label_map. Returns the share of the image the whole object covers (before border cut
    and occlusion)."""
    rgb, mask = cutout
    size = canvas.shape[0]
    scale = min(math.sqrt(share * size * size / mask.sum()), MAX_UPSCALE, size / max(mask.shape))
    width, height = max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale))
    rgb = Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), Image.BILINEAR)
    alpha = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.BILINEAR)
    if rng.random() < 0.5:
        rgb, alpha = rgb.transpose(Image.FLIP_LEFT_RIGHT), alpha.transpose(Image.FLIP_LEFT_RIGHT)
    # Padding first, so that the blur feathers the object's edge also where it touches its box.
    pad = math.ceil(3 * EDGE_SIGMA)
    alpha = np.pad(np.asarray(alpha), pad)
    alpha = np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(EDGE_SIGMA)), np.float32) / 255
    rgb = np.pad(np.asarray(rgb, np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    top = rng.integers(-int(OFF_CANVAS * height), size - height + int(OFF_CANVAS * height) + 1) - pad
    left = rng.integers(-int(OFF_CANVAS * width), size - width + int(OFF_CANVAS * width) + 1) - pad
    inside = np.s_[max(top, 0):min(top + alpha.shape[0], size), max(left, 0):min(left + alpha.shape[1], size)]
    own = np.s_[inside[0].start - top:inside[0].stop - top, inside[1].start - left:inside[1].stop - left]
    a = alpha[own][..., None]
    canvas[inside] = a * rgb[own] + (1 - a) * canvas[inside]
    label_map[inside][alpha[own] > 0.5] = class_id
    return float((alpha > 0.5).sum()) / (size * size)


def choose_objects(rng, plan, target, count=None, distractors=None, pool=None):
    """[(class, source image id, role)]: `count` (default 1-3) instances of the target from different photos of
    `pool` (default: all its sources) where possible, then `distractors` (default 0-2) of other classes (uniform
    over classes, like the targets), none clashing with another."""
    pool = plan.sources[target] if pool is None else pool
    count = int(rng.integers(1, 4)) if count is None else count
    picks = rng.choice(len(pool), size=count, replace=count > len(pool))
    chosen = [(target, pool[p], "target") for p in picks]
    for _ in range(int(rng.integers(0, 3)) if distractors is None else distractors):
        others = [c for c in plan.classes if c != target
                  and not any(c.clashes(o.set_index, o.value) for o, _, _ in chosen)]
        if not others:
            break
        distractor = others[rng.integers(len(others))]
        pool = plan.sources[distractor]
        chosen.append((distractor, pool[rng.integers(len(pool))], "distractor"))
    return chosen


def choose_background(rng, plan, target, objects):
    """(set index, image id): a set none of the objects clashes with, then a photo that was not a source of the
    target class where possible (caltech: another class's photo)."""
    sets = [s for s in sorted(plan.backgrounds) if plan.backgrounds[s]
            and not any(o.clashes(s) for o, _, _ in objects)]
    set_index = sets[rng.integers(len(sets))]
    pool = plan.backgrounds[set_index]
    if target.set_index == set_index:
        sourced = set(plan.sources[target])
        pool = [i for i in pool if i not in sourced] or pool
    return set_index, pool[rng.integers(len(pool))]


def compose(rng, plan, photos, target, size, cluttered=False, pool=None):
    """(RGB uint8, label map, record) of one composite for `target`: objects pasted in random order on a background;
    `cluttered`: a cluttered scene (CLUTTER_*) whose instances of the target come from the source photos `pool`."""
    class_ids = {c: i for i, c in enumerate(plan.classes, start=1)}
    if cluttered:
        scale = log_uniform(rng, *CLUTTER_SCALE)
        count = min(int(log_uniform(rng, CLUTTER_INSTANCES[0], CLUTTER_INSTANCES[1] + 1)),
                    max(1, int(CLUTTER_AREA / scale)))
        distractors = int(rng.integers(CLUTTER_DISTRACTORS[0], CLUTTER_DISTRACTORS[1] + 1))
        objects = choose_objects(rng, plan, target, count, distractors, pool)
        draw_share = lambda: scale * math.exp(rng.uniform(-CLUTTER_SPREAD, CLUTTER_SPREAD))
    else:
        objects = choose_objects(rng, plan, target)
        draw_share = lambda: log_uniform(rng, *SHARE_RANGE)
    set_index, image_id = choose_background(rng, plan, target, objects)
    canvas, label_map = background(rng, photos, set_index, image_id, plan.luts[set_index], size)
    record = {"target": target.name, "background": f"{photos.datasets[set_index].name}/{image_id}", "objects": []}
    for k in rng.permutation(len(objects)):
        object_class, source, role = objects[k]
        share = paste(rng, canvas, label_map, cut_out(photos, object_class, source), class_ids[object_class],
                      draw_share())
        record["objects"].append({"class": object_class.name, "role": role, "share": round(share, 5),
                                  "source": f"{photos.datasets[object_class.set_index].name}/{source}"})
    record["target_share"] = round(float((label_map == class_ids[target]).mean()), 5)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), label_map, record


# ---------------------------------------------------------------- whole sets


def file_stem(object_class, n):
    return object_class.name.replace("/", "-") + f"-{n:03d}"


def write_set(folder, plan, photos, count, size, seed, split_index, cluttered=False):
    """Compose `count` images per class into `folder`; returns {"classes", "images", "redrawn", "dropped"}."""
    os.makedirs(os.path.join(folder, "images"))
    os.makedirs(os.path.join(folder, "masks"))
    with open(os.path.join(folder, "classes.txt"), "w") as f:
        f.write("".join(c.name + "\n" for c in plan.classes))
    records, redrawn, dropped = {}, 0, 0
    for class_index, target in enumerate(plan.classes):
        for n in range(count):
            # One generator per composite: a composite does not change when the count of another class does.
            rng = np.random.default_rng([seed, split_index, class_index, n])
            # Cluttered scenes take their instances from a share of the class's sources of their own: a query and
            # its supports then show other objects of the class (a cut-out seen in a support is no match to find).
            sources = plan.sources[target]
            pool = (sources[n::count] or [sources[n % len(sources)]]) if cluttered else None
            for attempt in range(ATTEMPTS):
                image, label_map, record = compose(rng, plan, photos, target, size, cluttered, pool)
                if record["target_share"] >= MIN_SHARE:
                    break
            else:
                dropped += 1
                continue
            redrawn += attempt
            stem = file_stem(target, n)
            Image.fromarray(image).save(os.path.join(folder, "images", stem + ".jpg"), quality=JPEG_QUALITY)
            Image.fromarray(label_map).save(os.path.join(folder, "masks", stem + ".png"))
            records[stem] = record
    with open(os.path.join(folder, "objects.json"), "w") as f:
        json.dump(records, f, indent=0, sort_keys=True)
    return {"classes": len(plan.classes), "images": len(records), "redrawn": redrawn, "dropped": dropped}


def is_complete(folder, arguments):
    try:
        with open(os.path.join(folder, "done.json")) as f:
            return json.load(f)["arguments"] == arguments
    except (OSError, ValueError, KeyError):
        return False


def build_composites(data_dirs, out_dir, per_class=40, val_per_class=20, size=416, seed=0, clutter_per_class=30):
    """Write <out_dir>/composites_train, composites_val, clutter_val and clutter_train (see the module's
    docstring); return the four paths. Folders already made with the same arguments are kept as they are."""
    arguments = {"data": [os.path.abspath(d) for d in data_dirs], "per_class": per_class,
                 "val_per_class": val_per_class, "size": size, "seed": seed, "recipe": RECIPE_VERSION}
    folders = tuple(os.path.join(out_dir, name) for name in SPLITS)
    # The cluttered sets have arguments of their own, so that adding them left the other folders as they were.
    clutter = {**arguments, "clutter": [CLUTTER_INSTANCES, CLUTTER_DISTRACTORS, CLUTTER_SCALE, CLUTTER_SPREAD,
                                        CLUTTER_AREA]}
    folder_arguments = [arguments, arguments, clutter, {**clutter, "clutter_per_class": clutter_per_class}]
    if all(is_complete(folder, a) for folder, a in zip(folders, folder_arguments)):
        return folders
    datasets = [LabelMapDataset(d) for d in data_dirs]
    catalogs = [catalog(dataset, size) for dataset in datasets]
    photos = Photos(datasets)
    counts = (per_class, val_per_class, val_per_class, clutter_per_class)
    for split_index, (folder, count) in enumerate(zip(folders, counts)):
        if is_complete(folder, folder_arguments[split_index]):
            continue
        # Built beside the final folder and moved in when whole: an interrupted run leaves no half set behind.
        partial = folder + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        name = SPLITS[split_index]
        written = write_set(partial, plan(datasets, catalogs, training=name.endswith("_train")), photos, count, size,
                            seed, split_index, cluttered=name.startswith("clutter"))
        with open(os.path.join(partial, "done.json"), "w") as f:
            json.dump({"arguments": folder_arguments[split_index], "counts": written}, f, indent=1)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    return folders


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compose scene-like few-shot training and validation sets.")
    parser.add_argument("--data", nargs="+", required=True, help="label-map sets to take objects and backgrounds from")
    parser.add_argument("--out", required=True, help="writes OUT/composites_train, ... (see above)")
    parser.add_argument("--per-class", type=int, default=40, help="composites per training class")
    parser.add_argument("--val-per-class", type=int, default=20, help="composites per novel class")
    parser.add_argument("--clutter-per-class", type=int, default=30, help="cluttered composites per training class")
    parser.add_argument("--size", type=int, default=416, help="side of the square composites")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    began = time.time()
    folders = build_composites(args.data, args.out, args.per_class, args.val_per_class, args.size, args.seed,
                               args.clutter_per_class)
    for folder in folders:
        with open(os.path.join(folder, "done.json")) as f:
            counts = json.load(f)["counts"]
        print(f"{folder}: {counts['classes']} classes, {counts['images']} images "
              f"({counts['redrawn']} redraws, {counts['dropped']} dropped)")
    print(f"{time.time() - began:.1f} s")


if __name__ == "__main__":
    main()
