"""Bad supports, made on purpose: what a careless or unlucky user gives the model.

Used by the notebooks and `examples/make_examples.py` to show what a bad support does.
"""
import numpy as np
import torch
import torch.nn.functional as F


def innermost_pixel(mask):
    """(y, x) of the pixel of a bool mask farthest from its edge (the last to survive repeated 3x3 erosion)."""
    current = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    while True:
        eroded = -F.max_pool2d(-current, 3, stride=1, padding=1)
        if not eroded.any():
            break
        current = eroded
    ys, xs = np.nonzero(current[0, 0].numpy())
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
