"""Shared fixtures: tiny generated data sets and a tiny seeded model, so tests need no ../shared and no network."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(2)


def blob_image(rng, size, boxes):
    """A noisy photo-like picture with coloured rectangles, and its label map."""
    height, width = size
    image = (rng.normal(120, 20, (height, width, 3))).clip(0, 255).astype(np.uint8)
    labels = np.zeros((height, width), np.uint8)
    for class_id, (top, left, bottom, right) in boxes:
        colour = np.array([(class_id * 80) % 256, (class_id * 150) % 256, (class_id * 40 + 60) % 256], np.uint8)
        image[top:bottom, left:right] = colour
        labels[top:bottom, left:right] = class_id
    return image, labels


@pytest.fixture(scope="session")
def labelmap_root(tmp_path_factory):
    """A label-map data set: 3 classes, 14 images, one split file."""
    root = tmp_path_factory.mktemp("labelmap") / "toyset"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    (root / "classes.txt").write_text("square\nbar\ndisc\n")
    rng = np.random.default_rng(0)
    ids = []
    for n in range(14):
        boxes = [(1 + n % 3, (5, 5, 30, 30)), (1 + (n + 1) % 3, (36, 10, 58, 60))]
        image, labels = blob_image(rng, (64, 72), boxes)
        labels[0, :] = 255
        image_id = f"img{n:02d}"
        Image.fromarray(image).save(root / "images" / f"{image_id}.jpg")
        Image.fromarray(labels).save(root / "masks" / f"{image_id}.png")
        ids.append(image_id)
    (root / "splits" / "train.txt").write_text("\n".join(ids[:10]) + "\n")
    return str(root)


@pytest.fixture(scope="session")
def tiny_model():
    from fss_demo import FewShotSegmenter, ModelConfig

    torch.manual_seed(0)
    model = FewShotSegmenter(ModelConfig(input_size=64, width=16, hidden=16))
    with torch.no_grad():  # training starts the recall correction at zero; tests must see it at work
        for parameter in model.head.recall[-1].parameters():
            parameter.normal_(0, 0.5)
    return model


@pytest.fixture
def square_episode():
    """Three supports and a query (uint8 arrays) showing a bright square, with masks."""
    rng = np.random.default_rng(1)
    pairs = []
    for n in range(4):
        image, labels = blob_image(rng, (60 + 4 * n, 80), [(1, (10 + n, 12, 40 + n, 45))])
        pairs.append((image, labels == 1))
    return pairs[0], pairs[1:]


@pytest.fixture(scope="session")
def server():
    """The app, launched once for every test that reaches it over HTTP: its URL."""
    from .live import launched_app

    yield from launched_app()
