"""The bad supports that training shows the gates and that `evaluate --corrupt` measures."""
import numpy as np
import torch

from fss_demo import corruptions


def masks():
    mask = torch.zeros(3, 1, 64, 64)
    mask[0, 0, 10:30, 10:30] = 1   # a square
    mask[1, 0, 2:62, 2:62] = 1     # most of the image: cannot move away, gets the ring
    mask[2, 0, 40:50, 20:35] = 1   # a small bar
    return mask


def test_each_kind_does_what_it_says():
    mask = masks()
    moved = corruptions.moved_off_object(mask)
    assert (moved * mask).sum() == 0 and (moved.flatten(1).sum(1) > 0).all()  # all on the background
    painted = corruptions.over_painted(mask, 6)
    assert ((painted - mask) >= 0).all() and (painted.flatten(1).sum(1) > mask.flatten(1).sum(1)).all()
    patch = corruptions.small_patches(mask)
    assert (patch * (1 - mask)).sum() == 0  # inside the object
    assert (patch.flatten(1).sum(1) < 0.15 * mask.flatten(1).sum(1)).all()  # and small (at least 4x4 pixels)
    assert corruptions.innermost_pixel(mask[0, 0].numpy() > 0) in {(19, 19), (19, 20), (20, 19), (20, 20)}


def test_other_class_takes_a_support_of_another_class():
    mask = masks()
    supports = [[torch.arange(3.0).view(3, 1, 1, 1).repeat(1, 2, 4, 4) for _ in range(3)] for _ in range(2)]
    all_masks = [mask.clone(), mask.clone()]
    corruptions.corrupt("other_class", supports, all_masks, 1, [0], ["cat", "cat", "cup"], np.random.default_rng(0))
    assert torch.equal(all_masks[1][0], mask[2]) and (supports[1][0][0] == 2).all()  # from episode 2, the cup
    assert torch.equal(all_masks[0], mask) and (supports[0][0][0] == 0).all()  # step 1 untouched


def test_another_class_comes_from_the_same_collection_when_the_batch_has_one():
    mask = masks()
    keys = ["ccp/pants", "camvid/car", "ccp/shirt"]
    for seed in range(5):  # whatever the draw: episode 1 (a car) is of another collection, so never the donor
        supports = [[torch.arange(3.0).view(3, 1, 1, 1).repeat(1, 2, 4, 4) for _ in range(3)] for _ in range(2)]
        corruptions.corrupt("other_class", supports, [mask.clone(), mask.clone()], 1, [0], keys,
                            np.random.default_rng(seed))
        assert (supports[1][0][0] == 2).all()
    supports = [[torch.arange(3.0).view(3, 1, 1, 1).repeat(1, 2, 4, 4) for _ in range(3)] for _ in range(2)]
    corruptions.corrupt("other_class", supports, [mask.clone(), mask.clone()], 1, [1], keys, np.random.default_rng(0))
    assert not (supports[1][1][0] == 1).all()  # no other street class: another collection's support instead


def test_training_class_keys_name_the_same_class_alike_in_both_sets():
    from fss_demo.train import class_key

    class Named:
        def __init__(self, name, classes):
            self.name, self.class_names = name, dict(enumerate(classes, start=1))

    assert class_key(Named("ccp", ["shirt", "pants"]), 2) == "ccp/pants"
    assert class_key(Named("composites_train", ["ccp/pants", "camvid/car"]), 1) == "ccp/pants"


def test_random_corruption_is_seeded_and_never_at_step_one():
    done = []
    for _ in range(2):
        supports = [[torch.zeros(3, 2, 4, 4) for _ in range(3)] for _ in range(5)]
        all_masks = [masks() for _ in range(5)]
        done.append(corruptions.corrupt_randomly(supports, all_masks, ["a", "b", "c"], np.random.default_rng(3), 1.0))
        assert torch.equal(all_masks[0], masks())
    assert done[0] == done[1] and len(done[0]) == 3
    assert all(step >= 1 and kind in corruptions.KINDS for (_, step), kind in done[0].items())
