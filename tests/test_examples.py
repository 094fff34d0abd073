"""The bundled examples tell the story the app and the notebooks tell, with the bundled weights."""
import numpy as np
import pytest

import fss_demo
from fss_demo.examples import load_example
from fss_demo.metrics import iou

from .helpers import configured


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
    # Letting it in fully costs the last steps, and the good supports after it do not make up for it: the gate is
    # what kept it out. (Steps 2 and 3 are not asserted: some models lose there, others do not. fss-demo 0.13 gains
    # there when it is forced in, 79.1 and 87.3 against 74.8 and 86.2: a support let in also turns up self-support,
    # which on this query finds more of the flower; with self-support off it loses 4.1 at step 2, gains 1.6 at 3.)
    assert all(after(forced, step) < after(seg, step) for step in (4, 5))
    # at least half a point at the end: good supports after it make up for part of the damage, never all of it
    assert after(forced, 5) < after(seg, 5) - 0.005
    # the OR takes it in, and for good (step 2 loses 3.7 points at fss-demo 0.13's threshold, 0.50; 8 at 0.40)
    assert iou(seg.or_masks[1], example.truth) < iou(seg.or_masks[0], example.truth) - 0.03
    assert iou(seg.or_masks[-1], example.truth) < after(seg, 5) - 0.1


def test_good_supports_are_let_in(bundled):
    example = load_example("good")
    seg = bundled.segment(example.query, example.supports)
    assert min(seg.admissions) > 0.9
    assert iou(seg.masks[-1], example.truth) > iou(seg.masks[0], example.truth)


def test_a_misplaced_first_support_is_outvoted_by_the_later_ones_and_an_ablation_agrees(bundled):
    """The bad-support example with its misplaced support first: nothing came before it to judge it by, so the
    later supports re-judge it (ModelConfig.rejudge_first). The run starts again from another support and keeps the
    misplaced one out, and its answer is nearly that of leaving it out; without re-judging, the good supports are
    kept out as disagreeing with it."""
    example = load_example("bad_support")
    good = example.supports[:1] + example.supports[2:]
    misplaced_first = example.supports[1:2] + good
    assert bundled.config.rejudge_first
    seg = bundled.segment(example.query, misplaced_first)
    assert seg.order[0] != 1 and sorted(seg.order) == [1, 2, 3, 4, 5]
    assert seg.admissions[0] < 0.5 and min(seg.admissions[1:]) > 0.9
    final = lambda s: iou(s.masks[-1], example.truth)
    without = bundled.segment(example.query, good)
    assert final(seg) > final(without) - 0.02
    with configured(bundled, rejudge_first=False):
        never_judged = bundled.segment(example.query, misplaced_first)
    assert never_judged.order == [1, 2, 3, 4, 5]
    # kept out as disagreeing with it: step 3 gains nothing, and the final answer stays below the re-judged one
    assert iou(never_judged.masks[2], example.truth) < iou(seg.masks[2], example.truth) - 0.2
    assert final(never_judged) < final(seg) - 0.02
    # the first two steps cannot tell which support is the bad one: they are the same either way
    for step in (0, 1):
        np.testing.assert_array_equal(seg.masks[step], never_judged.masks[step])
