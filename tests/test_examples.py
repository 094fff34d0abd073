"""The bundled examples tell the story the app and the notebooks tell, with the bundled weights."""
import pytest

import fss_demo
from fss_demo.examples import load_example
from fss_demo.metrics import iou


@pytest.fixture(scope="module")
def bundled():
    return fss_demo.load_model()


def test_the_admission_gate_lets_the_misplaced_support_in_far_less_and_an_ablation_agrees(bundled):
    example = load_example("bad_support")
    seg = bundled.segment(example.query, example.supports)
    others = seg.admissions[:1] + seg.admissions[2:]
    assert seg.admissions[1] < min(others) - 0.3  # support 2's mask lies on the background
    forced = bundled.segment(example.query, example.supports, open_gates=[2])
    after = lambda s, step: iou(s.masks[step - 1], example.truth)
    # Letting it in fully costs every later step, and the good supports after it do not make up for it: the gate is
    # what kept it out. (Step 2 itself is not asserted: some trained models already lose there, others do not.)
    assert all(after(forced, step) < after(seg, step) for step in (3, 4, 5))
    # at least half a point at the end: good supports after it make up for part of the damage, never all of it
    assert after(forced, 5) < after(seg, 5) - 0.005
    # the OR takes it in, and for good
    assert iou(seg.or_masks[1], example.truth) < iou(seg.or_masks[0], example.truth) - 0.05
    assert iou(seg.or_masks[-1], example.truth) < after(seg, 5) - 0.1


def test_good_supports_are_let_in(bundled):
    example = load_example("good")
    seg = bundled.segment(example.query, example.supports)
    assert min(seg.admissions) > 0.9
    assert iou(seg.masks[-1], example.truth) > iou(seg.masks[0], example.truth)
