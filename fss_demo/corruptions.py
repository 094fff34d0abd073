"""Bad supports, made on purpose: what a careless or unlucky user gives the model.

Used by the notebooks and `examples/make_examples.py` to show what a bad support does.
"""
import numpy as np
import torch
import torch.nn.functional as F


def innermost_pixel(mask):
    """(y, x) of the pixel of a bool mask farthest from its edge in chessboard distance: the last to survive
    repeated 3x3 erosion (the image border does not erode)."""
    from scipy import ndimage  # training and evaluation only; the app and the model do not need scipy

    depth = ndimage.distance_transform_cdt(np.asarray(mask, dtype=bool), metric="chessboard")
    ys, xs = np.nonzero(depth == depth.max())
    middle = len(ys) // 2  # any survivor is as deep as the others; take a central one, deterministically
    return int(ys[middle]), int(xs[middle])


def small_patch(mask, share=0.06):
    """Keep only a square patch of the object around its innermost pixel: about `share` of its area."""
    mask = np.asarray(mask, dtype=bool)
    y, x = innermost_pixel(mask)
    half = max(2, int(np.sqrt(share * mask.sum()) / 2))
    patch = np.zeros_like(mask)
    patch[max(0, y - half):y + half, max(0, x - half):x + half] = True
    return patch & mask


# ---------------------------------------------------------------------------------------------------------------
# Batched, on network-size masks: what training shows the ConvLSTM so that it learns when to keep a support out,
# and what `evaluate --corrupt` measures. Masks are float tensors (B, 1, H, W) in [0, 1].

KINDS = ("off_object", "over_painted", "other_class", "small_patch")


def dilate(mask, radius):
    """Dilation by a square of side 2 * radius + 1, as a row then a column max (the same, 2 / side of the cost)."""
    size = 2 * radius + 1
    rows = F.max_pool2d(mask, (1, size), stride=1, padding=(0, radius))
    return F.max_pool2d(rows, (size, 1), stride=1, padding=(radius, 0))


def moved_off_object(mask):
    """The mask's shape moved half the image away (wrapping round), with the object itself cut out of it: a mask
    painted on the background. An object too large to leave gets the background ring around it instead."""
    height, width = mask.shape[-2:]
    moved = torch.roll(mask, (height // 2, width // 2), dims=(-2, -1)) * (1 - mask)
    ring = dilate(mask, max(2, height // 16)) * (1 - mask)
    too_little = moved.flatten(1).sum(1) < 0.25 * mask.flatten(1).sum(1)
    return torch.where(too_little[:, None, None, None], ring, moved)


def over_painted(mask, radius):
    """What a big brush gives: the object and a wide band of background around it."""
    return dilate(mask, radius)


def small_patches(mask, share=0.06):
    """A small patch of the object around its innermost pixel, per mask (see `small_patch`)."""
    patches = [torch.from_numpy(small_patch(m[0].numpy() > 0.5, share)).float() for m in mask.cpu()]
    return torch.stack(patches)[:, None].to(mask.device)


def collection(class_key):
    """The collection part of a "collection/class" key (None for other keys: all of one collection)."""
    return class_key.split("/")[0] if isinstance(class_key, str) and "/" in class_key else None


def corrupt(kind, supports, masks, step, rows, class_keys, rng):
    """Replace support `step` (0-based) of the episodes `rows` of a batch by a bad one of `kind`, in place.

    supports: K lists of backbone maps (B, C, h, w); masks: K tensors (B, 1, H, W); class_keys: B hashable
    class keys, so that "other_class" takes another episode's support of a different class (if the batch has
    none, the mask is moved off the object instead). Keys "collection/class" (training's) prefer a donor of the
    same collection: a user's wrong support is a shirt for trousers more often than a shirt for a car."""
    rows = list(rows)
    if not rows:
        return
    mask = masks[step]
    if kind == "other_class":
        donors = {}
        for row in rows:
            others = [j for j, key in enumerate(class_keys) if key != class_keys[row]]
            related = [j for j in others if collection(class_keys[j]) == collection(class_keys[row])]
            others = related or others
            if others:
                donors[row] = others[rng.integers(len(others))]
        for row, donor in donors.items():
            for level in supports[step]:
                level[row] = level[donor].clone()
            mask[row] = mask[donor].clone()
        rows = [row for row in rows if row not in donors]
        kind = "off_object"
    if not rows:
        return
    index = torch.tensor(rows)
    if kind == "off_object":
        mask[index] = moved_off_object(mask[index])
    elif kind == "over_painted":
        mask[index] = over_painted(mask[index], radius=int(rng.integers(mask.shape[-1] // 20, mask.shape[-1] // 8)))
    elif kind == "small_patch":
        mask[index] = small_patches(mask[index])
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {KINDS}")


def corrupt_randomly(supports, masks, class_keys, rng, probability):
    """Training: with `probability`, an episode gets one bad support, of a random kind, at a random step >= 2.
    Returns {(row, step): kind} of what was done."""
    done = {}
    for row in range(len(class_keys)):
        if len(masks) > 1 and rng.random() < probability:
            done[(row, int(rng.integers(1, len(masks))))] = KINDS[rng.integers(len(KINDS))]
    for (row, step), kind in done.items():
        corrupt(kind, supports, masks, step, [row], class_keys, rng)
    return done
