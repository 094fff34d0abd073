"""What each support did, and what their order does: the measurements the app shows beside its pictures, as plain
functions of a model and one run (`Episode`)."""
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .metrics import iou
from .viz import gate_share_on_object


@dataclass
class Episode:
    """One run of the model, as the measurements after it need it: masks only, not probability maps (the app keeps
    one per visitor)."""

    query: np.ndarray
    supports: list               # [(image, mask)] in the order run
    numbers: list                # each support's number as the person knows it (its slot, or place in a list)
    truth: Optional[np.ndarray]  # the query's true mask, or None
    masks: list                  # the ConvLSTM's masks after supports 1..k
    or_masks: list               # the logical OR's
    admissions: list             # the admission gate's value per support (1 for the one the last run started from)
    gate_on_object: list         # per support: the input gate's mean on the object of `gate_masks` (nan: none)
    order: Optional[list] = None  # the supports' numbers in the order the final mask's run took them (None: as run)

    @classmethod
    def run(cls, model, query, supports, numbers=None, truth=None):
        """Segment (with the gates traced) and keep what the measurements need: (Episode, Segmentation)."""
        seg = model.segment(query, supports, trace=True)
        gate_on_object = [gate_share_on_object(gates["input_gate"].mean(0), mask)[0]
                          for gates, mask in zip(seg.gates, gate_masks(seg))]
        numbers = list(numbers or range(1, len(supports) + 1))
        return cls(query, list(supports), numbers, truth, seg.masks, seg.or_masks, seg.admissions,
                   gate_on_object, [numbers[i - 1] for i in seg.order]), seg

    def started_again(self):
        """A sentence when the final mask's run started from another support than the first (the later supports
        kept support 1 out, ModelConfig.rejudge_first); else ""."""
        if not self.order or self.order[0] == self.numbers[0]:
            return ""
        first, others = self.numbers[0], self.numbers[1:]
        return (f"The later supports disagreed with support {first} (on average they let it in at under 0.5), so for "
                f"the final mask the ConvLSTM started from support {self.order[0]} instead (order "
                f"{', '.join(map(str, self.order))}); in that run support {first} was let in at "
                f"{self.admissions[0]:.2f}. The masks after supports {first} and {others[0]} still began with support "
                f"{first}: two supports cannot tell which one is wrong.")

    def ious(self, masks):
        return None if self.truth is None else [iou(mask, self.truth) for mask in masks]


def gate_masks(seg):
    """The mask each support's input gate is scored against (its "object"): the answer after that support, or, when
    the final mask's run started from another support (`Segmentation.order`), whose gates those are, that final
    mask: the answers at that run's own earlier steps are not kept."""
    return seg.masks if seg.order == sorted(seg.order) else [seg.masks[-1]] * len(seg.masks)


@dataclass
class SupportEffect:
    step: int
    number: int                   # the support's number (see Episode.numbers)
    admission: float              # how far the admission gate let it in (1 for the support a run starts from)
    gate_on_object: float         # the input gate's mean on the object of `gate_masks` (nan: none predicted)
    mask_change: Optional[float]  # 1 - IoU of the final mask and the final mask without it (None: only support)
    iou_effect: Optional[float]   # final IoU with it minus without it (None: no true mask, or only support)


def support_effects(model, episode):
    """Each support's effect, and the seconds the leave-one-out runs took: the ConvLSTM run again without each
    support in turn, on the query's and supports' features cached by the run (K runs of the small head)."""
    started = time.perf_counter()
    left_out = model.leave_one_out(episode.query, episode.supports)
    seconds = time.perf_counter() - started
    final = episode.masks[-1]
    final_iou = None if episode.truth is None else iou(final, episode.truth)
    effects = []
    for k, (number, probabilities) in enumerate(zip(episode.numbers, left_out)):
        without = None if probabilities is None else probabilities > model.threshold
        effects.append(SupportEffect(
            step=k + 1, number=number, admission=episode.admissions[k], gate_on_object=episode.gate_on_object[k],
            mask_change=None if without is None else 1 - iou(final, without),
            iou_effect=None if without is None or final_iou is None else final_iou - iou(without, episode.truth)))
    return effects, seconds


def standout(effects):
    """A sentence on the support whose input gate is clearly the dimmest (under 80% of the others' median), with
    what leaving it out does; or that none is; "" with fewer than two measured supports."""
    measured = [e for e in effects if e.mask_change is not None and not np.isnan(e.gate_on_object)]
    if len(measured) < 2:
        return ""
    dim = min(measured, key=lambda e: e.gate_on_object)
    others = float(np.median([e.gate_on_object for e in measured if e is not dim]))
    if dim.gate_on_object > 0.8 * others:
        gates = [e.gate_on_object for e in measured]
        return f"No support's input gate stands out ({min(gates):.2f} to {max(gates):.2f} on the object)."
    text = (f"Support {dim.number} stands out: input gate {dim.gate_on_object:.2f} on the object against {others:.2f} "
            f"for the others (median), admission {dim.admission:.2f}; leaving it out ")
    if dim.iou_effect is None:
        return text + f"changes the final mask by {100 * dim.mask_change:.1f}%."
    verb = "raises" if dim.iou_effect < 0 else "lowers"
    return text + f"{verb} the final IoU by {abs(100 * dim.iou_effect):.1f} points."


def other_order(count, how, rng):
    """Indices of `count` supports reversed, or shuffled (never the given order)."""
    if how == "reversed":
        return list(range(count))[::-1]
    while True:
        order = [int(i) for i in rng.permutation(count)]
        if order != list(range(count)):
            return order


@dataclass
class OrderChange:
    text: str     # what changes, in a sentence or two (markdown)
    finals: list  # [(name, final mask)]: the ConvLSTM's and the OR's, given order and the other one


def reorder(model, episode, how, rng=None):
    """The same supports in another order ("reversed" or "shuffled"): what changes. The ConvLSTM takes them one
    after another, so its answer may change; an OR of the same 1-shot masks cannot."""
    if episode is None:
        raise ValueError("Press Run first: this runs the supports of the last run again, in another order.")
    count = len(episode.supports)
    if count < 2:
        raise ValueError("With one support there is no other order: add a support and press Run.")
    order = other_order(count, how, rng or np.random.default_rng())
    seg = model.segment(episode.query, [episode.supports[i] for i in order])
    numbers = lambda indices: ", ".join(str(episode.numbers[i]) for i in indices)

    def change(before, after):
        return "is the same, pixel for pixel" if np.array_equal(before, after) else \
            f"changes by {100 * (1 - iou(before, after)):.1f}%"

    text = (f"**{how.capitalize()} order** (supports {numbers(order)} instead of {numbers(range(count))}): the "
            f"ConvLSTM's final mask {change(episode.masks[-1], seg.masks[-1])}")
    scores = episode.ious([episode.masks[-1], seg.masks[-1]])
    if scores:
        before, after = (f"{100 * score:.0f}%" for score in scores)
        text += f", and its IoU {f'stays at {before}' if before == after else f'goes from {before} to {after}'}"
    text += (f". The logical OR's final mask {change(episode.or_masks[-1], seg.or_masks[-1])}: an OR of the same "
             "1-shot masks does not depend on their order.")
    return OrderChange(text, [("ConvLSTM, given", episode.masks[-1]), (f"ConvLSTM, {how}", seg.masks[-1]),
                              ("OR, given", episode.or_masks[-1]), (f"OR, {how}", seg.or_masks[-1])])
