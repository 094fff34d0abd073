"""The composite generator on tiny generated label-map sets named like the shared ones (no ../shared needed)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from fss_demo.datasets import EpisodeSampler, LabelMapDataset, open_dataset, training_split
from fss_demo.datasets.composites import (CLUTTER_DISTRACTORS, CLUTTER_INSTANCES, CLUTTER_SCALE, CLUTTER_SPREAD,
                                          SHARE_RANGE, build_composites, catalog, label_table, plan)
from fss_demo.datasets.episodes import MIN_SHARE
from fss_demo.datasets.splits import NOVEL_CLASSES

SIZE = 64
COLOURS = {}


def colour(name):
    """A fixed colour per class name, so cut-outs of one class look alike."""
    return COLOURS.setdefault(name, np.random.default_rng(len(COLOURS) + 3).integers(30, 226, 3))


def write_set(root, names, pictures, splits=None):
    """A label-map set from [(image id, [(class name, (top, left, bottom, right))], fill class or None)]."""
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    (root / "classes.txt").write_text("".join(n + "\n" for n in names))
    rng = np.random.default_rng(len(names))
    for image_id, boxes, fill in pictures:
        image = rng.normal(110, 25, (48, 64, 3))
        labels = np.full((48, 64), 0 if fill is None else names.index(fill) + 1, np.uint8)
        if fill is not None:
            image[:] += colour(fill) - 110
        for name, (top, left, bottom, right) in boxes:
            image[top:bottom, left:right] = colour(name) + rng.normal(0, 12, (bottom - top, right - left, 3))
            labels[top:bottom, left:right] = names.index(name) + 1
        labels[0, :3] = 255
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{image_id}.jpg")
        Image.fromarray(labels).save(root / "masks" / f"{image_id}.png")
    if splits:
        os.makedirs(root / "splits")
        for split, ids in splits.items():
            (root / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Fake ccp (hat held out), camvid (car held out, train/val/test) and caltech_pseudo (llama, butterfly held out)."""
    base = tmp_path_factory.mktemp("shared")
    ccp = ["bag", "hair", "hat", "skin"]
    write_set(base / "ccp", ccp, [(f"{n:04d}", [("hat", (0, 16 + n, 12, 40 + n)), ("hair", (12, 18 + n, 24, 40 + n)),
                                                ("skin", (24, 22 + n, 48, 34 + n)), ("bag", (20, 44, 44, 60))], None)
                                  for n in range(8)])
    camvid = ["sky", "building", "road", "car"]
    frames = [(f"f{n:02d}", [("building", (12, 0, 28, 64)), ("road", (28, 0, 48, 64)),
                             ("car", (22 + n % 4, 4 * n % 40, 40 + n % 4, 4 * n % 40 + 22))], "sky") for n in range(14)]
    ids = [f for f, _, _ in frames]
    write_set(base / "camvid", camvid, frames, {"train": ids[:8], "val": ids[8:11], "test": ids[11:]})
    caltech = ["accordion", "ant", "barrel", "butterfly", "llama"]
    write_set(base / "caltech_pseudo", caltech, [(f"{name}_{n}", [(name, (8 + n, 10 + n, 36 + n, 40 + n))], None)
                                                 for name in caltech for n in range(6)])
    return [str(base / name) for name in ("ccp", "camvid", "caltech_pseudo")]


@pytest.fixture(scope="module")
def built(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("composites")
    return build_composites(shared, str(out), per_class=4, val_per_class=3, size=SIZE, seed=0, clutter_per_class=2)


def records(folder):
    with open(os.path.join(folder, "objects.json")) as f:
        return json.load(f)


def novel_names():
    return {f"{s}/{c}" for s, names in NOVEL_CLASSES.items() for c in names}


def test_layout_and_hold_out(built):
    train_dir, val_dir, clutter_dir, clutter_train_dir = built
    train, val, clutter = open_dataset(train_dir), open_dataset(val_dir), open_dataset(clutter_dir)
    assert clutter.class_names == val.class_names and 0 < len(clutter.ids) <= 3 * 4
    clutter_train = open_dataset(clutter_train_dir)  # the training classes, as cluttered scenes
    assert clutter_train.class_names == train.class_names and 0 < len(clutter_train.ids) <= 2 * 10
    assert isinstance(train, LabelMapDataset) and isinstance(val, LabelMapDataset)
    assert sorted(train.class_names.values()) == [
        "caltech_pseudo/accordion", "caltech_pseudo/ant", "caltech_pseudo/barrel", "camvid/building", "camvid/road",
        "camvid/sky", "ccp/bag", "ccp/hair", "ccp/person", "ccp/skin"]
    assert sorted(val.class_names.values()) == ["caltech_pseudo/butterfly", "caltech_pseudo/llama", "camvid/car",
                                                "ccp/hat"]
    assert set(val.class_names.values()) <= novel_names()
    assert len(train.ids) == 4 * 10 and len(val.ids) == 3 * 4
    for dataset in (train, val):
        for image_id in dataset.ids:
            labels = dataset.labels(image_id)
            assert labels.shape == (SIZE, SIZE) and dataset.image(image_id).shape == (SIZE, SIZE, 3)
            assert set(np.unique(labels).tolist()) <= {0, 255} | set(dataset.class_names)
    # Composites are a set the split does not know: all of it trains, all of it validates.
    assert training_split(train)[0] == sorted(train.class_names)


def test_held_out_pixels_of_backgrounds(shared):
    datasets = [LabelMapDataset(d) for d in shared]
    catalogs = [catalog(d, SIZE) for d in datasets]
    camvid = 1
    for training in (True, False):
        composite = plan(datasets, catalogs, training)
        lut = label_table(datasets[camvid], camvid, composite.classes, training)
        ids = {c.name: i for i, c in enumerate(composite.classes, start=1)}
        sky, car = 1, 4  # camvid's own label values
        if training:
            assert lut[car] == 255 and lut[sky] == ids["camvid/sky"]
            assert set(composite.backgrounds[camvid]) == {f"f{n:02d}" for n in range(8)}  # camvid's train split
        else:
            assert lut[car] == ids["camvid/car"] and lut[sky] == 0
            assert set(composite.backgrounds[camvid]) == {f"f{n:02d}" for n in range(8, 14)}


def test_every_target_is_large_enough_and_objects_in_scale(built):
    seen_distractor = False
    for folder in built[:2]:
        dataset = open_dataset(folder)
        ids = {name: c for c, name in dataset.class_names.items()}
        for image_id, record in records(folder).items():
            labels = dataset.labels(image_id)
            assert (labels == ids[record["target"]]).mean() >= MIN_SHARE
            assert 1 <= sum(o["role"] == "target" for o in record["objects"]) <= 3
            assert sum(o["role"] == "distractor" for o in record["objects"]) <= 2
            for o in record["objects"]:
                # Feathering and whole-pixel sizes move a 64-pixel composite's shares a little off the drawn range.
                assert 0.5 * SHARE_RANGE[0] <= o["share"] <= 1.1 * SHARE_RANGE[1]
                if o["role"] == "distractor":
                    assert o["class"] != record["target"]
                    seen_distractor |= bool((labels == ids[o["class"]]).any())
            if record["target"] == "ccp/person":  # a person's garments cannot also be labelled garments
                assert not record["background"].startswith("ccp/")
                assert all(o["class"] == "ccp/person" or not o["class"].startswith("ccp/") for o in record["objects"])
        EpisodeSampler(dataset, sorted(dataset.class_names), dataset.ids, shots=1).episodes(5)
    assert seen_distractor


def test_cluttered_scenes_have_many_objects_at_a_scale_of_their_own(shared, tmp_path):
    """clutter_val: 1 to 30 instances of the target and up to 8 distractors, each object near its picture's own
    scale (0.4% to 6% of it), every target still large enough in all for an episode."""
    folders = build_composites(shared, str(tmp_path / "more"), per_class=1, val_per_class=12, size=SIZE, seed=0,
                               clutter_per_class=1)
    dataset, counts, scales = open_dataset(folders[2]), [], []
    ids = {name: c for c, name in dataset.class_names.items()}
    for image_id, record in records(folders[2]).items():
        assert (dataset.labels(image_id) == ids[record["target"]]).mean() >= MIN_SHARE
        targets = [o["share"] for o in record["objects"] if o["role"] == "target"]
        counts.append(len(targets))
        assert CLUTTER_INSTANCES[0] <= len(targets) <= CLUTTER_INSTANCES[1]
        assert sum(o["role"] == "distractor" for o in record["objects"]) <= CLUTTER_DISTRACTORS[1]
        low, high = CLUTTER_SCALE[0] * np.exp(-CLUTTER_SPREAD), CLUTTER_SCALE[1] * np.exp(CLUTTER_SPREAD)
        assert all(0.5 * low <= o["share"] <= 1.1 * high for o in record["objects"])
        scales.append(np.median(targets))
    assert max(counts) >= 4 and min(counts) < max(counts)  # many instances, and not always as many
    assert max(scales) > 4 * min(scales)  # pictures at very different scales


def test_seeded_and_reused(shared, built, tmp_path):
    def masks(folder):
        folder = os.path.join(folder, "masks")
        return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}

    sizes = dict(per_class=4, val_per_class=3, size=SIZE, clutter_per_class=2)
    again = build_composites(shared, str(tmp_path / "again"), seed=0, **sizes)
    other = build_composites(shared, str(tmp_path / "other"), seed=1, **sizes)
    for first, second, third in zip(built, again, other):
        assert masks(first) == masks(second)
        assert masks(first) != masks(third)
        assert records(first) == records(second)
    stamp = os.path.getmtime(os.path.join(again[0], "classes.txt"))
    assert build_composites(shared, str(tmp_path / "again"), seed=0, **sizes) == again
    assert os.path.getmtime(os.path.join(again[0], "classes.txt")) == stamp  # complete: not made again
