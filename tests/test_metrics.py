"""The scores against numbers worked out by hand."""
import json

import numpy as np
import pytest
import torch

from fss_demo.evaluate import METHODS, best_thresholds_per_shots, read_tuned_thresholds, report
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


def test_the_bootstrap_interval_of_a_difference_brackets_it_and_straddles_zero_only_for_a_tie():
    """Twenty episodes of two classes, 8 pixels each, truth 4 pixels. 'good' finds 3 of them every time; 'same' is
    'good' again; 'tied' finds 4 or 2 in turn (3 of 4 pooled, as 'good'); 'worse' finds 3 or 1 in turn."""
    methods = ("good", "same", "tied", "worse")
    tally = Tally({method: [0.5] for method in methods})
    truth = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    found = lambda n: torch.tensor([.9] * n + [.1] * (8 - n))
    for episode in range(20):
        turn = episode % 4 < 2  # alternates within each class
        for method, n in zip(methods, (3, 3, 4 if turn else 2, 3 if turn else 1)):
            tally.add(method, 5, episode % 2, found(n), truth)
    assert tally.difference_interval(("good", 5), ("same", 5), 0) == (0.0, 0.0)
    low, high = tally.difference_interval(("good", 5), ("tied", 5), 0)
    assert low < 0 < high  # class mIoU 75 both: a tie, whatever the draw
    low, high = tally.difference_interval(("good", 5), ("worse", 5), 0)
    assert 0 < low < 25 < high  # 75 against 50
    tally.add("same", 5, 0, found(3), truth)  # one episode more: no longer paired
    with pytest.raises(ValueError, match="same episodes"):
        tally.difference_interval(("good", 5), ("same", 5), 0)


def test_each_baseline_gets_its_best_threshold_per_shot_count():
    """An 'or' whose right threshold rises with the shots: at 1 shot the object scores 0.6 and the background 0.2,
    at 2 shots the background has risen to 0.7 and the object to 0.9. Two sets agree, so the choice is 0.2-0.55 at
    1 shot and 0.7-0.85 at 2, each the lowest such grid point (argmax takes the first best)."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    tallies = []
    for _ in range(2):
        tally = Tally({method: grid for method in METHODS})
        truth = torch.tensor([1, 1, 0, 0])
        for method in METHODS:
            tally.add(method, 1, 1, torch.tensor([.6, .6, .2, .2]), truth)
            tally.add(method, 2, 1, torch.tensor([.9, .9, .7, .7]), truth)
        tallies.append(tally)
    tuned = best_thresholds_per_shots(tallies, (1, 2), "or")
    assert tuned == {1: 0.2, 2: 0.7}
    scores = report(tallies[0], (1, 2), {"convlstm": 0.5, "or": 0.5, "mean": 0.5, "prototype": 0.5},
                    {"or": tuned})
    assert {k: v["class_miou"] for k, v in scores["tuned"]["or"].items()} == {"1": 100.0, "2": 100.0}
    assert scores["or"]["2"]["class_miou"] == 50.0  # at the shared 0.5 the background is taken too
    assert scores["intervals"]["convlstm_2_minus_tuned_or_2"] == [-50.0, -50.0]  # the ConvLSTM here is the OR at 0.5


def test_tuned_thresholds_are_read_only_whole_and_on_the_grid(tmp_path):
    path = tmp_path / "validation.json"
    good = {"seed": 1, "episodes": 300, "tuned_thresholds": {"or": {"1": 0.5, "5": 0.8}, "mean": {"1": 0.5, "5": 0.35}}}
    path.write_text(json.dumps(good))
    tuned, where = read_tuned_thresholds(str(path), [1, 5])
    assert tuned == {"or": {1: 0.5, 5: 0.8}, "mean": {1: 0.5, 5: 0.35}} and where["seed"] == 1
    with pytest.raises(ValueError, match=r"miss shot counts \[3\]"):
        read_tuned_thresholds(str(path), [1, 3, 5])
    path.write_text(json.dumps({**good, "tuned_thresholds": {"or": {"1": 0.5, "5": 0.83}}}))
    with pytest.raises(ValueError, match=r"off the grid \[0.83\]"):
        read_tuned_thresholds(str(path), [1, 5])
    path.write_text(json.dumps({"seed": 1, "episodes": 300}))
    with pytest.raises(ValueError, match="make it with evaluate --choose-threshold"):
        read_tuned_thresholds(str(path), [1, 5])
