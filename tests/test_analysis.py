"""What each support did and what their order does (fss_demo.analysis), without Gradio, on the bundled example with a
misleading support 2 and the bundled weights: only what must hold for any weights."""
import dataclasses

import numpy as np
import pytest

import fss_demo
from fss_demo import analysis
from fss_demo.examples import load_example
from fss_demo.metrics import iou


@pytest.fixture(scope="module")
def bundled():
    return fss_demo.load_model()


@pytest.fixture(scope="module")
def episode(bundled):
    example = load_example("bad_support")
    return analysis.Episode.run(bundled, example.query, example.supports, truth=example.truth)[0]


def test_each_supports_effect_is_measured(bundled, episode):
    effects, seconds = analysis.support_effects(bundled, episode)
    assert [e.number for e in effects] == [1, 2, 3, 4, 5] and seconds > 0
    assert effects[0].admission == 1.0 and all(0 <= e.admission <= 1 for e in effects)
    assert all(0 <= e.gate_on_object <= 1 and 0 <= e.mask_change <= 1 for e in effects)
    # leaving out the last support gives the answer after the others: any weights
    final, before = episode.masks[-1], episode.masks[-2]
    assert effects[-1].mask_change == pytest.approx(1 - iou(final, before), abs=1e-9)
    assert effects[-1].iou_effect == pytest.approx(iou(final, episode.truth) - iou(before, episode.truth), abs=1e-9)


def test_without_a_true_mask_there_is_no_iou_effect(bundled, episode):
    effects, _ = analysis.support_effects(bundled, dataclasses.replace(episode, truth=None))
    assert all(e.iou_effect is None for e in effects) and all(e.mask_change is not None for e in effects)


def test_with_one_support_there_is_nothing_to_leave_out(bundled, episode):
    one = dataclasses.replace(episode, supports=episode.supports[:1], numbers=episode.numbers[:1],
                              masks=episode.masks[:1], or_masks=episode.or_masks[:1],
                              admissions=episode.admissions[:1], gate_on_object=episode.gate_on_object[:1])
    effects, _ = analysis.support_effects(bundled, one)
    assert effects[0].mask_change is None and effects[0].iou_effect is None
    assert analysis.standout(effects) == ""


def effect(number, gate, mask_change, iou_effect=None, admission=1.0):
    return analysis.SupportEffect(number, number, admission, gate, mask_change, iou_effect)


def test_a_support_with_a_dim_gate_is_named_with_what_leaving_it_out_does():
    bad = [effect(1, 0.55, 0.04, 0.01), effect(2, 0.10, 0.02, -0.03, admission=0.2), effect(3, 0.50, 0.05, 0.02)]
    assert analysis.standout(bad) == ("Support 2 stands out: input gate 0.10 on the object against 0.53 for the "
                                      "others (median), admission 0.20; leaving it out raises the final IoU by 3.0 "
                                      "points.")
    kept_out = [effect(1, 0.55, 0.04), effect(2, 0.02, 0.001, admission=0.03), effect(3, 0.50, 0.05)]
    assert analysis.standout(kept_out).endswith("admission 0.03; leaving it out changes the final mask by 0.1%.")
    alike = [effect(1, 0.55, 0.04, 0.01), effect(2, 0.51, 0.02, -0.03), effect(3, 0.50, 0.05, 0.02)]
    assert analysis.standout(alike) == "No support's input gate stands out (0.50 to 0.55 on the object)."


def test_another_order_changes_the_convlstm_and_never_the_or(bundled, episode):
    change = analysis.reorder(bundled, episode, "reversed")
    assert change.text.startswith("**Reversed order** (supports 5, 4, 3, 2, 1 instead of 1, 2, 3, 4, 5): the "
                                  "ConvLSTM's final mask ")
    assert change.text.endswith("The logical OR's final mask is the same, pixel for pixel: an OR of the same 1-shot "
                                "masks does not depend on their order.")
    reversed_mask = bundled.segment(episode.query, episode.supports[::-1]).masks[-1]
    before, after = (f"{100 * score:.0f}%" for score in episode.ious([episode.masks[-1], reversed_mask]))
    assert (f"its IoU stays at {before}" if before == after else f"its IoU goes from {before} to {after}") in change.text
    assert [name for name, _ in change.finals] == ["ConvLSTM, given", "ConvLSTM, reversed", "OR, given", "OR, reversed"]
    np.testing.assert_array_equal(change.finals[2][1], change.finals[3][1])  # the OR's final masks are the same
    change = analysis.reorder(bundled, episode, "shuffled", np.random.default_rng(0))
    order = change.text.split("(supports ")[1].split(" instead")[0]
    assert sorted(order.split(", ")) == ["1", "2", "3", "4", "5"] and order != "1, 2, 3, 4, 5"


def test_the_order_control_explains_what_it_needs(bundled, episode):
    with pytest.raises(ValueError, match="^Press Run first: this runs the supports of the last run again"):
        analysis.reorder(bundled, None, "reversed")
    one = dataclasses.replace(episode, supports=episode.supports[:1], numbers=episode.numbers[:1],
                              masks=episode.masks[:1], or_masks=episode.or_masks[:1])
    with pytest.raises(ValueError, match="^With one support there is no other order: add a support and press Run.$"):
        analysis.reorder(bundled, one, "shuffled")


def test_after_a_new_start_each_support_s_gate_is_scored_on_the_mask_its_run_made():
    """Segmentation.gates are the final mask's run's; when that run started from another support, the answers at its
    own earlier steps are not kept, so every support's gate is scored on the final mask, not on the answer after it
    in the order given (which that run did not make)."""
    from types import SimpleNamespace

    from fss_demo.analysis import gate_masks

    masks = [np.full((2, 2), k) for k in range(3)]
    assert gate_masks(SimpleNamespace(masks=masks, order=[1, 2, 3])) is masks
    assert [m[0, 0] for m in gate_masks(SimpleNamespace(masks=masks, order=[3, 1, 2]))] == [2, 2, 2]
