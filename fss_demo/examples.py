"""The bundled example episodes (examples/<name>/example.json), as the app and the notebooks read them."""
import json
import os
from dataclasses import dataclass

import numpy as np

from . import images

# The repository's examples/ folder (absent from an installed package: pass a folder there).
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@dataclass
class Example:
    title: str
    story: str
    class_name: str
    supports: list      # [(image (H, W, 3) uint8, mask (H, W) bool)] in the order given
    query: np.ndarray   # (H, W, 3) uint8
    truth: np.ndarray   # (H, W) bool: the query's true mask, or None


def load_example(name_or_folder):
    """An example by folder name under examples/ ("good", "bad_support") or by path."""
    folder = name_or_folder if os.path.isdir(name_or_folder) else os.path.join(EXAMPLES_DIR, name_or_folder)
    with open(os.path.join(folder, "example.json")) as f:
        spec = json.load(f)
    path = lambda name: os.path.join(folder, name)
    supports = []
    for support in spec["supports"]:
        image = images.load_image(path(support["image"]))
        supports.append((image, images.load_mask(path(support["mask"]), size=image.shape[:2])))
    query = images.load_image(path(spec["query"]["image"]))
    truth_file = spec["query"].get("mask")
    truth = images.load_mask(path(truth_file), size=query.shape[:2]) if truth_file else None
    return Example(spec["title"], spec.get("story", ""), spec.get("class", ""), supports, query, truth)


def list_examples(root=EXAMPLES_DIR):
    """{title: folder} of the example folders under `root`, sorted by folder name."""
    found = {}
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            spec = os.path.join(root, name, "example.json")
            if os.path.isfile(spec):
                with open(spec) as f:
                    found[json.load(f)["title"]] = os.path.join(root, name)
    return found
