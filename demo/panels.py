"""How one run is drawn on the page: `Answer` has one field per output panel, and the functions here fill them from
a run (`fss_demo.analysis.Episode`) as pictures, tables and sentences."""
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from fss_demo import viz
from fss_demo.analysis import Episode, gate_masks, standout

SHOW_SIDE = 360   # longest side of the pictures the app sends back
SLIDE_TILE = 240  # side of each picture in the downloadable picture of a run
HIDDEN = {"__type__": "update", "value": None, "visible": False}  # a download button with nothing to download
MEASURING = "*Measuring what each support did…*"


@dataclass
class Answer:
    """What one run puts on the page: one field per output panel, named as in layout.build_demo (its defaults clear
    it). Run fills the rows, the plot, the gates and the summary at once; `measure` fills the effects and the
    downloads right after (so that the rows are not kept waiting), `reorder` the order panels."""

    supports: list = None      # gallery: each support used, its mask in red
    convlstm: list = None      # gallery: the ConvLSTM's prediction after supports 1..k
    logical_or: list = None    # gallery: logical OR of the 1-shot predictions of supports 1..k
    iou_plot: pd.DataFrame = None  # IoU after each step (needs the query's true mask)
    gates: np.ndarray = None   # the gate picture, one row per step
    summary: str = ""          # what ran, the scores, and what was skipped and why
    effects: str = ""          # per support: admission, input gate, and the effect of leaving it out
    mask_download: dict = field(default_factory=lambda: dict(HIDDEN))     # the final mask, PNG
    picture_download: dict = field(default_factory=lambda: dict(HIDDEN))  # the whole run as one picture, PNG
    order: str = ""            # what running the same supports in another order changes
    order_pictures: list = None  # gallery: final masks in the given order and in the other one


PANELS = [f.name for f in fields(Answer)]
MEASURES = ["effects", "mask_download", "picture_download"]  # what `measure` fills
ORDER_PANELS = ["order", "order_pictures"]                  # what `reorder` fills


@dataclass
class PageRun:
    """A run of the page: the episode (kept per visitor for `measure` and `reorder`), the query's own size (for
    the downloaded mask) and why some supports were skipped."""
    episode: Episode
    size: tuple
    warnings: list


def caption(k, ious):
    return f"{k} support{'s' if k > 1 else ''}" + (f": IoU {100 * ious[k - 1]:.0f}%" if ious else "")


def support_row(episode):
    return [(viz.overlay(image, mask, viz.SUPPORT_COLOR, max_side=SHOW_SIDE), f"support {number}")
            for (image, mask), number in zip(episode.supports, episode.numbers)]


def prediction_row(query, masks, ious):
    """Gallery items: the query with the prediction after supports 1..k, for every k."""
    return [(viz.overlay(query, mask, max_side=SHOW_SIDE), caption(k, ious)) for k, mask in enumerate(masks, start=1)]


def iou_table(lstm_ious, or_ious):
    """The IoU curves as the browser draws them; None for a single step (a line needs two points) or no scores."""
    if not lstm_ious or len(lstm_ious) < 2:
        return None
    steps = [str(k) for k in range(1, len(lstm_ious) + 1)]  # categories: whole-number ticks only
    return pd.DataFrame({"supports given": steps * 2, "IoU (%)": [100 * v for v in lstm_ious + or_ious],
                         "method": ["ConvLSTM"] * len(steps) + ["logical OR"] * len(steps)})


def gate_picture(episode, seg):
    ranges, strips = viz.gate_ranges(seg.gates), []
    objects = gate_masks(seg)
    for k, ((image, mask), number, gates) in enumerate(zip(episode.supports, episode.numbers, seg.gates), start=1):
        inside, outside = viz.gate_share_on_object(gates["input_gate"].mean(0), objects[k - 1])
        # rows stay in the order given; after a new start (ModelConfig.rejudge_first) the gates are those of the run
        # behind the final mask, and the title says at which of its steps each support went in
        step = f"Step {k} (support {number})" if seg.order == sorted(seg.order) else \
            f"Support {number} (step {seg.order.index(k) + 1} of the run behind the final mask)"
        title = (f"{step}: admission {seg.admissions[k - 1]:.2f}; input gate {formatted(inside, '{:.2f}')} on the "
                 f"object, {formatted(outside, '{:.2f}')} elsewhere")
        strips.append(viz.gate_strip(episode.query, image, mask, gates, title=title, ranges=ranges, captions=k == 1))
    return viz.stack_rows(strips)


def summarize(episode, warnings):
    text = f"Ran {len(episode.supports)} support(s): " + ", ".join(str(number) for number in episode.numbers) + "."
    lstm_ious, or_ious = episode.ious(episode.masks), episode.ious(episode.or_masks)
    if lstm_ious:
        percent = lambda values: ", ".join(f"{100 * v:.0f}%" for v in values)
        text += f" ConvLSTM IoU after each step: {percent(lstm_ious)}; logical OR: {percent(or_ious)}."
    return "\n\n".join([text] + [line for line in [episode.started_again()] if line]
                       + [f"⚠ {warning}" for warning in warnings])


def run_answer(run, seg):
    """The Answer of a run: everything but the measurements after it."""
    episode = run.episode
    lstm_ious, or_ious = episode.ious(episode.masks), episode.ious(episode.or_masks)
    return Answer(
        supports=support_row(episode),
        convlstm=prediction_row(episode.query, episode.masks, lstm_ious),
        logical_or=prediction_row(episode.query, episode.or_masks, or_ious),
        iou_plot=iou_table(lstm_ious, or_ious),  # drawn by the browser
        gates=gate_picture(episode, seg),
        summary=summarize(episode, run.warnings),
        effects=MEASURING)


def formatted(value, form):
    return "–" if value is None or np.isnan(value) else form.format(value)


def effects_table(effects, seconds, scored):
    """The per-support panel: a table (with the IoU effect if `scored`: the true mask was given), a sentence on
    the support that stands out, and what it cost."""
    header = "| step | support | admission | input gate on the object | final mask change if left out |"
    rule = "|---:|---:|---:|---:|---:|"
    if scored:
        header, rule = header + " IoU effect |", rule + "---:|"
    rows = []
    for e in effects:
        row = (f"| {e.step} | {e.number} | {e.admission:.2f} | {formatted(e.gate_on_object, '{:.2f}')} | "
               f"{formatted(None if e.mask_change is None else 100 * e.mask_change, '{:.1f}%')} |")
        if scored:
            row += f" {formatted(None if e.iou_effect is None else 100 * e.iou_effect, '{:+.1f} points')} |"
        rows.append(row)
    runs = sum(e.mask_change is not None for e in effects)
    cost = (f"Leaving each support out took {seconds:.2f} s: {runs} runs of the small head, on the query's and "
            "supports' cached features." if runs else
            "With one support there is nothing to leave out.")
    notes = [standout(effects)] + ([] if scored else ["Give the query's true mask to see each support's effect on "
                                                      "the IoU."]) + [cost]
    return "\n".join([header, rule] + rows) + "\n\n" + " ".join(note for note in notes if note)


def run_picture(episode):
    """The whole run as one picture, for a slide: the supports (red), the ConvLSTM row and the OR row (blue)."""
    lstm_ious, or_ious = episode.ious(episode.masks), episode.ious(episode.or_masks)
    return viz.picture_grid([
        ("Supports (mask in red)", support_row(episode)),
        ("ConvLSTM: prediction after supports 1..k", prediction_row(episode.query, episode.masks, lstm_ious)),
        ("Logical OR of the 1-shot predictions of supports 1..k",
         prediction_row(episode.query, episode.or_masks, or_ious))], tile=SLIDE_TILE)


def order_pictures(episode, change):
    return [(viz.overlay(episode.query, mask, max_side=SHOW_SIDE), name) for name, mask in change.finals]
