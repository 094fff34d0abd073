import os

import numpy as np
import pytest
from PIL import Image

from fss_demo.datasets import EpisodeSampler, FSS1000Dataset, LabelMapDataset, Pascal5iDataset, open_dataset
from fss_demo.datasets.splits import NOVEL_CLASSES, WRONG_MASKS, novel_split, training_split, validation_split


def test_labelmap_reader_and_sampler(labelmap_root):
    dataset = open_dataset(labelmap_root)
    assert isinstance(dataset, LabelMapDataset)
    assert dataset.class_names == {1: "square", 2: "bar", 3: "disc"}
    shares = dataset.class_shares()
    assert all(len(ids) >= 9 for ids in shares.values())
    labels = dataset.labels(dataset.ids[0])
    binary = dataset.binarize(labels, 1)
    assert set(np.unique(binary)) <= {0, 1, 255} and (binary[0] == 255).all()
    sampler = EpisodeSampler(dataset, [1, 2, 3], dataset.ids, shots=3, seed=7)
    first, again = sampler.episodes(20), EpisodeSampler(dataset, [1, 2, 3], dataset.ids, shots=3, seed=7).episodes(20)
    assert first == again
    for episode in first:
        assert len(set((episode.query,) + episode.supports)) == 4
        for image_id in (episode.query,) + episode.supports:
            assert episode.class_id in dataset.classes_in(dataset.labels(image_id))
    assert EpisodeSampler(dataset, [1, 2, 3], dataset.ids, shots=3, seed=8).episodes(20) != first


def test_fss1000_reader(tmp_path):
    for name in ("cat", "cup"):
        (tmp_path / name).mkdir()
        for n in range(1, 4):
            Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).save(tmp_path / name / f"{n}.jpg")
            mask = np.zeros((8, 8), np.uint8)
            mask[2:6, 2:6] = 255
            Image.fromarray(mask).save(tmp_path / name / f"{n}.png")
    dataset = open_dataset(str(tmp_path))
    assert isinstance(dataset, FSS1000Dataset) and dataset.class_names == {1: "cat", 2: "cup"}
    assert dataset.binarize(dataset.labels("cup/1"), 2).sum() == 16
    episode = EpisodeSampler(dataset, [1, 2], dataset.ids, shots=2).episodes(1)[0]
    assert all(i.startswith(dataset.class_names[episode.class_id] + "/") for i in (episode.query,) + episode.supports)


def make_pascal(root, val_ids=("2007_0", "2007_1", "2007_2", "2007_3")):
    """A tiny VOC folder: 8 images with a bus or a car (fold 1's classes) and a person (fold 2's); val lists 4."""
    os.makedirs(root / "JPEGImages")
    os.makedirs(root / "SegmentationClassAug")
    os.makedirs(root / "ImageSets" / "Segmentation")
    for n in range(8):
        labels = np.zeros((10, 10), np.uint8)
        labels[2:8, 2:6] = 6 + (n % 2)  # bus / car: fold 1
        labels[2:8, 6:9] = 15  # person: fold 2
        labels[0] = 255
        Image.fromarray(labels).save(root / "SegmentationClassAug" / f"2007_{n}.png")
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "JPEGImages" / f"2007_{n}.jpg")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val_ids))


def test_pascal5i_reader(tmp_path):
    make_pascal(tmp_path)
    dataset = open_dataset(str(tmp_path), fold=1)
    assert isinstance(dataset, Pascal5iDataset)
    assert len(dataset.class_names) == 20 and dataset.class_names[6] == "bus"
    assert dataset.class_shares()[6] == ["2007_0", "2007_2", "2007_4", "2007_6"]
    novel, novel_ids = novel_split(dataset)
    assert [dataset.class_names[c] for c in novel] == ["bus", "car", "cat", "chair", "cow"]
    assert novel_ids == ["2007_0", "2007_1", "2007_2", "2007_3"]  # the val list
    training, training_ids = training_split(dataset)
    assert training_ids == ["2007_4", "2007_5", "2007_6", "2007_7"]  # no train list: every image not in val
    assert 15 in training and 6 not in training


@pytest.mark.parametrize("fold", range(4))
def test_pascal5i_training_never_sees_the_folds_test_classes(tmp_path, fold):
    make_pascal(tmp_path)
    dataset = open_dataset(str(tmp_path), fold=fold)
    novel, novel_ids = novel_split(dataset)
    training, training_ids = training_split(dataset)
    assert len(novel) == 5 and len(training) == 15
    assert not set(novel) & set(training)
    assert not set(novel_ids) & set(training_ids)


def test_open_dataset_names_what_a_folder_lacks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "splits").mkdir()
    with pytest.raises(ValueError, match="label-map folder but lacks classes.txt"):
        open_dataset(str(tmp_path))
    other = tmp_path / "voc"
    (other / "JPEGImages").mkdir(parents=True)
    with pytest.raises(ValueError, match="PASCAL VOC folder but lacks SegmentationClassAug"):
        open_dataset(str(other))
    empty = tmp_path / "empty"
    (empty / "some_folder").mkdir(parents=True)
    with pytest.raises(ValueError, match="none of the known layouts"):
        open_dataset(str(empty))
    with pytest.raises(ValueError, match="not a folder"):
        open_dataset(str(tmp_path / "missing"))


def test_shared_split_is_fixed_and_disjoint():
    class Fake:
        name = "ccp"
        class_names = {i + 1: n for i, n in enumerate(["belt", "bag", "hat", "coat"])}
        ids = ["a", "b"]
    novel, _ = novel_split(Fake)
    training, _ = training_split(Fake)
    assert novel == [1, 3] and training == [2, 4]
    assert all(len(names) == len(set(names)) for names in NOVEL_CLASSES.values())


def test_validation_leaves_out_the_audited_wrong_masks_and_only_there():
    class Fake:
        name = "caltech_pseudo"
        class_names = {1: "dolphin", 2: "ant"}
        ids = ["dolphin_image_0001", "dolphin_image_0009", "ant_image_0001"]
    classes, ids = validation_split(Fake)
    assert classes == [1]
    assert ids == ["dolphin_image_0001", "ant_image_0001"]  # dolphin_image_0009's mask marks the frame
    assert novel_split(Fake)[1] == Fake.ids  # what the composites cut objects from is unchanged
    assert training_split(Fake)[0] == [2]
    for name, wrong in WRONG_MASKS.items():  # the audit covered held-out classes only
        assert all(any(i.startswith(c + "_image_") for c in NOVEL_CLASSES[name]) for i in wrong)
