"""The scores against numbers worked out by hand."""
import numpy as np
import pytest
import torch

from fss_demo.metrics import Tally, iou


def test_iou_by_hand():
    predicted = np.array([[1, 1, 0, 0]], bool)
    truth = np.array([[0, 1, 1, 0]], bool)
    assert iou(predicted, truth) == pytest.approx(1 / 3)
    assert iou(predicted, truth, valid=np.array([[True, True, False, True]])) == pytest.approx(1 / 2)
    empty = np.zeros((2, 2), bool)
    assert iou(empty, empty) == 1.0  # both empty: perfect agreement, the convention everywhere
    assert iou(empty, ~empty) == 0.0


def test_class_miou_and_fb_iou_by_hand():
    """Two classes. Class 1: two episodes; class 2: one. Pixels of 8 (one ignored) thresholded at 0.5."""
    tally = Tally({"m": [0.5]})
    t = lambda values: torch.tensor(values)
    # class 1, episode a: truth 1 1 0 0 0 0 0 0, prediction 1 0 0 0 0 0 0 0 -> fg 1/2, bg 6/7
    tally.add("m", 1, 1, t([.9, .1, .1, .1, .1, .1, .1, .1]), t([1, 1, 0, 0, 0, 0, 0, 0]))
    # class 1, episode b: truth 1 1 1 1 0 0 0 [255], prediction 1 1 0 0 1 0 0 [1] -> fg 2/5, bg 2/5
    tally.add("m", 1, 1, t([.9, .9, .1, .1, .9, .1, .1, .9]), t([1, 1, 1, 1, 0, 0, 0, 255]))
    # class 2: truth 0 0 0 0 0 0 1 1, prediction 0 0 0 0 0 0 1 1 -> fg 2/2, bg 6/6
    tally.add("m", 1, 2, t([.1, .1, .1, .1, .1, .1, .9, .9]), t([0, 0, 0, 0, 0, 0, 1, 1]))
    class_miou, fb_iou = tally.scores("m", 1)
    # class 1 sums its episodes first: (1 + 2) / (2 + 5) = 3/7; class 2: 1. Mean: (3/7 + 1) / 2
    assert class_miou[0] == pytest.approx(100 * (3 / 7 + 1) / 2)
    # FB-IoU over all episodes: fg (1 + 2 + 2) / (2 + 5 + 2) = 5/9, bg (6 + 2 + 6) / (7 + 5 + 6) = 14/18
    assert fb_iou[0] == pytest.approx(100 * (5 / 9 + 14 / 18) / 2)
    # pixels pooled: predicted foreground 1 + 3 (the ignored pixel left out) + 2, of it true 1 + 2 + 2; truth 2 + 4 + 2
    precision, recall = tally.precision_recall("m", 1)
    assert precision[0] == pytest.approx(5 / 6) and recall[0] == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="no episodes"):
        tally.scores("m", 5)
