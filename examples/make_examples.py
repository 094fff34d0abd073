"""How the bundled examples were picked (needs ../shared/data and trained weights; not run by the tests).

    python examples/make_examples.py --weights weights --data ../shared/data

From novel (never trained) Caltech-101 classes it draws seeded episodes and keeps:
- `good/`: a 5-shot episode of one class where the ConvLSTM's IoU rises from 1 to 5 shots;
- `bad_support/`: an episode where support 2's mask is painted on the background instead of the object (a
  careless user's mistake): the logical OR takes in the background for good, while the ConvLSTM's admission gate
  keeps support 2 out and its prediction holds (the story of the paper's Fig. 1).
They are picked to show the behaviour, so they are not typical: the notebooks measure how often it happens.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fss_demo  # noqa: E402
from fss_demo.corruptions import moved_off_object  # noqa: E402
from fss_demo.datasets import EpisodeSampler, open_dataset, validation_split  # noqa: E402
from fss_demo.metrics import iou  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def off_object(mask):
    """The mask moved onto the background (corruptions.moved_off_object, on one full-size mask)."""
    import torch

    return moved_off_object(torch.from_numpy(mask[None, None].astype(np.float32)))[0, 0].numpy() > 0.5


def write(folder, title, story, dataset, class_id, query_id, support_ids, support_masks):
    os.makedirs(folder, exist_ok=True)
    spec = {"title": title, "story": story, "class": dataset.class_names[class_id], "supports": [], "query": {}}
    for n, (image_id, mask) in enumerate(zip(support_ids, support_masks), start=1):
        shutil.copy(os.path.join(dataset.root, "images", image_id + ".jpg"), os.path.join(folder, f"support{n}.jpg"))
        Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(folder, f"support{n}_mask.png"))
        spec["supports"].append({"image": f"support{n}.jpg", "mask": f"support{n}_mask.png", "source": image_id})
    shutil.copy(os.path.join(dataset.root, "images", query_id + ".jpg"), os.path.join(folder, "query.jpg"))
    truth = dataset.binarize(dataset.labels(query_id), class_id) == 1
    Image.fromarray(truth.astype(np.uint8) * 255).save(os.path.join(folder, "query_mask.png"))
    spec["query"] = {"image": "query.jpg", "mask": "query_mask.png", "source": query_id}
    with open(os.path.join(folder, "example.json"), "w") as f:
        json.dump(spec, f, indent=2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default=None)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--candidates", type=int, default=60)
    args = parser.parse_args()
    model = fss_demo.load_model(args.weights)
    dataset = open_dataset(os.path.join(args.data, "caltech_pseudo"))
    classes, ids = validation_split(dataset)
    episodes = EpisodeSampler(dataset, classes, ids, shots=5, seed=123).episodes(args.candidates)
    good, bad = None, None
    for episode in episodes:
        masks = [dataset.binarize(dataset.labels(i), episode.class_id) == 1 for i in episode.supports]
        supports = [(os.path.join(dataset.root, "images", i + ".jpg"), m) for i, m in zip(episode.supports, masks)]
        query = os.path.join(dataset.root, "images", episode.query + ".jpg")
        truth = dataset.binarize(dataset.labels(episode.query), episode.class_id) == 1
        seg = model.segment(query, supports)
        lstm = [iou(m, truth) for m in seg.masks]
        if good is None and lstm[-1] > lstm[0] + 0.08 and lstm[-1] > 0.7 and min(np.diff(lstm)) > -0.02:
            good = (episode, masks, lstm)
        damaged = list(masks)
        damaged[1] = off_object(masks[1])
        seg = model.segment(query, [(s, m) for (s, _), m in zip(supports, damaged)])
        hurt = [iou(m, truth) for m in seg.masks]
        or_hurt = [iou(m, truth) for m in seg.or_masks]
        # the OR must visibly suffer at step 2 and the ConvLSTM must not: the gate's story, shown on real photos
        if bad is None and or_hurt[1] < or_hurt[0] - 0.1 and hurt[1] >= hurt[0] - 0.02 and hurt[-1] > 0.7:
            bad = (episode, damaged, hurt)
        print(dataset.class_names[episode.class_id], np.round(lstm, 2), np.round(hurt, 2))
        if good and bad:
            break
    for name, found, title, story in [
        ("good", good, "Example: five good supports",
         "Five supports of a class the model never trained on. Watch the blue prediction grow as supports arrive."),
        ("bad_support", bad, "Example: a misleading support at step 2",
         "Support 2's mask is painted on the background, not on the object. The logical OR takes that background in "
         "for good; the ConvLSTM's admission gate lets support 2 in far less than the others (see the per-support "
         "panel)."),
    ]:
        if found is None:
            print(f"no episode found for {name}")
            continue
        episode, masks, curve = found
        write(os.path.join(HERE, name), title, story, dataset, episode.class_id, episode.query, episode.supports, masks)
        print(name, dataset.class_names[episode.class_id], np.round(curve, 3))


if __name__ == "__main__":
    main()
