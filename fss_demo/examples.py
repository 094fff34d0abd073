"""The bundled example episodes (examples/<name>/example.json): the one reader of that file, for the package, the
app, the notebooks, the benchmarks and the tests."""
import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import images

# The repository's examples/ folder (absent from an installed package: pass a folder there).
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@dataclass
class ExampleFiles:
    """What an example.json says, with its file names made paths."""
    folder: str
    title: str
    story: str
    class_name: str
    supports: list           # [(image path, mask path)] in the order given
    query: str               # the query photo's path
    truth: Optional[str]     # the query's true mask's path, or None


@dataclass
class Example:
    """An example decoded: what the model and the notebooks take."""
    title: str
    story: str
    class_name: str
    supports: list      # [(image (H, W, 3) uint8, mask (H, W) bool)] in the order given
    query: np.ndarray   # (H, W, 3) uint8
    truth: np.ndarray   # (H, W) bool: the query's true mask, or None


def folder_of(name_or_folder):
    return name_or_folder if os.path.isdir(name_or_folder) else os.path.join(EXAMPLES_DIR, name_or_folder)


def read_example(name_or_folder):
    """The ExampleFiles of an example, by folder name under examples/ ("good", "bad_support") or by path."""
    folder = folder_of(name_or_folder)
    with open(os.path.join(folder, "example.json")) as f:
        spec = json.load(f)
    path = lambda name: os.path.join(folder, name)
    truth = spec["query"].get("mask")
    return ExampleFiles(folder, spec["title"], spec.get("story", ""), spec.get("class", ""),
                        [(path(s["image"]), path(s["mask"])) for s in spec["supports"]],
                        path(spec["query"]["image"]), path(truth) if truth else None)


def load_example(name_or_folder):
    """An example's pictures decoded (see read_example for the name)."""
    files = read_example(name_or_folder)
    supports = []
    for image_path, mask_path in files.supports:
        image = images.load_image(image_path)
        supports.append((image, images.load_mask(mask_path, size=image.shape[:2])))
    query = images.load_image(files.query)
    truth = images.load_mask(files.truth, size=query.shape[:2]) if files.truth else None
    return Example(files.title, files.story, files.class_name, supports, query, truth)


def list_examples(root=EXAMPLES_DIR):
    """[ExampleFiles] of the example folders under `root`, sorted by folder name."""
    if not os.path.isdir(root):
        return []
    return [read_example(os.path.join(root, name)) for name in sorted(os.listdir(root))
            if os.path.isfile(os.path.join(root, name, "example.json"))]
