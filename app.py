"""Few-shot segmentation demo: give a few supports and a query, watch the prediction improve step by step.

Run locally with `python app.py`; on a Hugging Face Space this file is the entry point.
"""
import functools
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, fields
from typing import Optional

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
import pandas as pd
import torch
from gradio import processing_utils
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder
from PIL import Image

import fss_demo
from fss_demo import examples, images, viz
from fss_demo.metrics import iou

# One thread: as fast for one request (0.18 s), and the server's own thread (uploads, downloads, the queue) keeps
# the second core. Two torch threads on a busy 2-core machine wait on each other: a 0.2 s request took 2-8 s.
torch.set_num_threads(int(os.environ.get("FSS_DEMO_THREADS", "1")))
log = logging.getLogger("fss_demo.app")

MAX_SUPPORTS = fss_demo.MAX_SUPPORTS  # the model takes at most this many
FIRST_SUPPORTS = 5  # shown at start; the rest behind "Add a support"
SHOW_SIDE = 360  # longest side of the pictures the app sends back
SLIDE_TILE = 240  # side of each picture in the downloadable picture of a run
# Requests waiting at most; more are refused at once ("Queue is full") rather than left waiting. At about 0.8 s per
# 5-shot request through Gradio on 2 cores (benchmarks/app_load.py), the 24th waits some 20 s: long, not a time-out.
# It takes in the burst of 20 that issue 10 tried, and 8 users x 3 requests (8 at once) with room to spare.
QUEUE_SIZE = 24

model = fss_demo.load_model()


# ---------------------------------------------------------------------------------------------------------------
# Image inputs that pass on the files as sent


def receive_files(component):
    """Make a gr.Image or gr.ImageEditor hand the handler paths to the files as sent, undecoded.

    Gradio decodes uploads before the handler runs: an unreadable file then fails there with a bare "Error", and
    its decoding drops the EXIF rotation and 16-bit depth that a browser keeps. Decoding with `fss_demo.images` in
    the handler gives one answer however an image arrives, and a message naming the slot when it cannot.
    (Set on the instance: Gradio writes a .pyi file next to any module that subclasses a component.)
    """
    if isinstance(component, gr.ImageEditor):  # called for the background and each painted layer
        def as_path(file, flatten_on_white=False):
            if file is None:
                return None
            if isinstance(file, FileData):
                return file.path
            # bytes: the browser sends its canvas (a PNG) through the editor's own upload route
            return processing_utils.save_bytes_to_cache(file, "canvas.png", component.GRADIO_CACHE)

        component.convert_and_format_image = as_path
    else:
        component.preprocess = lambda payload: None if payload is None else payload.path
    return component


# ---------------------------------------------------------------------------------------------------------------
# Reading what the person gave: every problem becomes a ValueError whose message names the slot


def background(editor):
    """Path (or array) of an editor value's photo; None if there is none."""
    return editor.get("background") if isinstance(editor, dict) else editor


def painted_mask(editor, size, what):
    """Union of what was painted on the editor's layers (bool, `size`); None if nothing was."""
    layers = [layer for layer in (editor.get("layers") or []) if layer is not None] if isinstance(editor, dict) else []
    painted = np.zeros(size, dtype=bool)
    for layer in layers:
        painted |= images.load_mask(layer, size=size, what=what)  # strokes are the opaque pixels
    return painted if painted.any() else None


def object_mask(editor, mask_file, size, what):
    """The object mask: an uploaded mask wins; otherwise whatever was painted on the editor (None if nothing)."""
    if mask_file is not None:
        return images.load_mask(mask_file, size=size, what=what)
    return painted_mask(editor, size, what)


def read_support(number, editor, mask_file):
    """(image, mask) of one support slot, or None if the slot is empty. Raises ValueError if it cannot be used."""
    photo = background(editor)
    if photo is None:
        if mask_file is not None:
            raise ValueError(f"Support {number} has a mask but no image.")
        return None
    image = images.load_image(photo, f"Support {number}'s image")
    mask = object_mask(editor, mask_file, image.shape[:2], f"Support {number}'s mask")
    if mask is None:
        raise ValueError(f"Support {number} has no mask: paint the object or upload a mask.")
    problem = images.support_mask_problem(mask)
    if problem:
        raise ValueError(f"Support {number}: {problem}.")
    return image, mask


def collect_supports(editors, mask_files):
    """[(image, mask, slot number)] of every usable support, and why each of the others was skipped."""
    supports, skipped = [], []
    for number, (editor, mask_file) in enumerate(zip(editors, mask_files), start=1):
        try:
            support = read_support(number, editor, mask_file)
        except ValueError as error:
            skipped.append(f"{str(error).rstrip('.')}. Skipped.")
            continue
        if support is not None:
            supports.append((*support, number))
    return supports, skipped


def read_truth(query_editor, mask_file, size):
    """The query's true mask (None if not given), and a note if it was given but cannot be read."""
    try:
        return object_mask(query_editor, mask_file, size, "The query's true mask"), None
    except ValueError as error:
        return None, f"{str(error).rstrip('.')}. Not scored."


# ---------------------------------------------------------------------------------------------------------------
# Running


@dataclass
class Episode:
    """What the measurements after a run and the order control need of it, kept per visitor in a gr.State. Masks
    only, not probability maps: a visitor's state stays a few megabytes."""

    query: np.ndarray
    supports: list               # [(image, mask, slot number)] in the order run
    truth: Optional[np.ndarray]  # the query's true mask, or None
    masks: list                  # the ConvLSTM's masks after supports 1..k
    or_masks: list               # the logical OR's
    admissions: list             # the admission gate's value per support (1 for the first)
    gate_on_object: list         # per step: the input gate's mean on the object predicted at that step

    @property
    def pairs(self):
        return [(image, mask) for image, mask, _ in self.supports]

    def ious(self, masks):
        return None if self.truth is None else [iou(mask, self.truth) for mask in masks]


def episode_of(query, supports, truth, seg):
    gate_on_object = [viz.gate_share_on_object(gates["input_gate"].mean(0), mask)[0]
                      for gates, mask in zip(seg.gates, seg.masks)]
    return Episode(query, supports, truth, seg.masks, seg.or_masks, seg.admissions, gate_on_object)


HIDDEN = gr.update(value=None, visible=False)  # a download button while there is nothing to download
MEASURING = "*Measuring what each support did…*"


@dataclass
class Answer:
    """What one run puts on the page: one field per output panel, named as in build_demo (its defaults clear it).
    A run fills the rows, the plot, the gates and the summary at once; `measure` fills the effects and the
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
    warnings: list = field(default_factory=list)  # not a panel: in the summary, and shown as pop-ups
    episode: Episode = None    # not a panel: kept in a gr.State for `measure` and `reorder`


PANELS = [f.name for f in fields(Answer) if f.name not in ("warnings", "episode")]
MEASURES = ["effects", "mask_download", "picture_download"]  # what `measure` fills
ORDER_PANELS = ["order", "order_pictures"]                  # what `reorder` fills


def panel_values(answer):
    return [getattr(answer, name) for name in PANELS]


def caption(k, ious):
    return f"{k} support{'s' if k > 1 else ''}" + (f": IoU {100 * ious[k - 1]:.0f}%" if ious else "")


def support_row(supports):
    return [(viz.overlay(image, mask, viz.SUPPORT_COLOR, max_side=SHOW_SIDE), f"support {number}")
            for image, mask, number in supports]


def prediction_row(query, masks, ious):
    """Gallery items: the query with the prediction after supports 1..k, for every k."""
    return [(viz.overlay(query, mask, max_side=SHOW_SIDE), caption(k, ious)) for k, mask in enumerate(masks, start=1)]


def iou_table(lstm_ious, or_ious):
    """The IoU curves as the browser draws them; None for a single step (a line needs two points)."""
    if len(lstm_ious) < 2:
        return None
    steps = [str(k) for k in range(1, len(lstm_ious) + 1)]  # categories: whole-number ticks only
    return pd.DataFrame({"supports given": steps * 2, "IoU (%)": [100 * v for v in lstm_ious + or_ious],
                         "method": ["ConvLSTM"] * len(steps) + ["logical OR"] * len(steps)})


def gate_picture(query, supports, seg):
    ranges, strips = viz.gate_ranges(seg.gates), []
    for k, ((image, mask, number), gates) in enumerate(zip(supports, seg.gates), start=1):
        inside, outside = viz.gate_share_on_object(gates["input_gate"].mean(0), seg.masks[k - 1])
        title = (f"Step {k} (support {number}): admission {seg.admissions[k - 1]:.2f}; input gate {inside:.2f} on the "
                 f"object, {outside:.2f} elsewhere")
        strips.append(viz.gate_strip(query, image, mask, gates, title=title, ranges=ranges, captions=k == 1))
    return viz.stack_rows(strips)


def summarize(supports, lstm_ious, or_ious, warnings):
    text = f"Ran {len(supports)} support(s): " + ", ".join(str(number) for _, _, number in supports) + "."
    if lstm_ious:
        percent = lambda values: ", ".join(f"{100 * v:.0f}%" for v in values)
        text += f" ConvLSTM IoU after each step: {percent(lstm_ious)}; logical OR: {percent(or_ious)}."
    return "\n\n".join([text] + [f"⚠ {warning}" for warning in warnings])


def segment_episode(editors, mask_files, query_editor, query_mask_file):
    """The Answer for the raw component values (file paths, or arrays). Raises ValueError with a readable message."""
    supports, warnings = collect_supports(editors, mask_files)
    if background(query_editor) is None:
        raise ValueError(" ".join(["Add a query image: the photo in which to find the object."] + warnings))
    query = images.load_image(background(query_editor), "The query image")
    if not supports:
        raise ValueError(" ".join(["Add at least one support: an image with the object painted on it "
                                   "(or a mask uploaded)."] + warnings))
    truth, note = read_truth(query_editor, query_mask_file, query.shape[:2])
    warnings += [note] if note else []
    seg = model.segment(query, [(image, mask) for image, mask, _ in supports], trace=True)
    episode = episode_of(query, supports, truth, seg)
    lstm_ious, or_ious = episode.ious(seg.masks), episode.ious(seg.or_masks)
    return Answer(
        supports=support_row(supports),
        convlstm=prediction_row(query, seg.masks, lstm_ious),
        logical_or=prediction_row(query, seg.or_masks, or_ious),
        iou_plot=iou_table(lstm_ious, or_ious) if truth is not None else None,  # drawn by the browser
        gates=gate_picture(query, supports, seg),
        summary=summarize(supports, lstm_ious, or_ious, warnings),
        effects=MEASURING,
        warnings=warnings,
        episode=episode)


# ---------------------------------------------------------------------------------------------------------------
# Measuring each support's effect (issue 11)


@dataclass
class SupportEffect:
    step: int
    number: int                   # the support's slot on the page (or its place in the API's list)
    admission: float              # how far the admission gate let it in (1 for the first support)
    gate_on_object: float         # the input gate's mean on the object predicted at its step (nan: none predicted)
    mask_change: Optional[float]  # 1 - IoU of the final mask and the final mask without it (None: only support)
    iou_effect: Optional[float]   # final IoU with it minus without it (None: no true mask, or only support)


def support_effects(episode):
    """Each support's effect, and the seconds the leave-one-out runs took: the ConvLSTM run again without each
    support in turn, on the support features cached by the run (one query pass and K runs of the small head)."""
    started = time.perf_counter()
    left_out = model.leave_one_out(episode.query, episode.pairs)
    seconds = time.perf_counter() - started
    final = episode.masks[-1]
    final_iou = None if episode.truth is None else iou(final, episode.truth)
    effects = []
    for k, ((_, _, number), probabilities) in enumerate(zip(episode.supports, left_out)):
        without = None if probabilities is None else probabilities > model.threshold
        effects.append(SupportEffect(
            step=k + 1, number=number, admission=episode.admissions[k], gate_on_object=episode.gate_on_object[k],
            mask_change=None if without is None else 1 - iou(final, without),
            iou_effect=None if without is None or final_iou is None else final_iou - iou(without, episode.truth)))
    return effects, seconds


def formatted(value, form):
    return "–" if value is None or np.isnan(value) else form.format(value)


def standout(effects):
    """A sentence on the support whose input gate is clearly the dimmest (under 80% of the others' median), with
    what leaving it out does; or that none is."""
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
    cost = (f"Leaving each support out took {seconds:.2f} s: one pass of the backbone over the query and {runs} "
            "runs of the small head, on the cached support features." if runs else
            "With one support there is nothing to leave out.")
    notes = [standout(effects)] + ([] if scored else ["Give the query's true mask to see each support's effect on "
                                                      "the IoU."]) + [cost]
    return "\n".join([header, rule] + rows) + "\n\n" + " ".join(note for note in notes if note)


def run_picture(episode):
    """The whole run as one picture, for a slide: the supports (red), the ConvLSTM row and the OR row (blue)."""
    lstm_ious, or_ious = episode.ious(episode.masks), episode.ious(episode.or_masks)
    return viz.picture_grid([
        ("Supports (mask in red)", support_row(episode.supports)),
        ("ConvLSTM: prediction after supports 1..k", prediction_row(episode.query, episode.masks, lstm_ious)),
        ("Logical OR of the 1-shot predictions of supports 1..k",
         prediction_row(episode.query, episode.or_masks, or_ious))], tile=SLIDE_TILE)


def mask_picture(mask):
    return mask.astype(np.uint8) * 255  # white on black: what image tools and this app read as a mask


def measure(episode):
    """The panels filled right after a run (MEASURES): each support's effect, and the two downloads."""
    effects, seconds = support_effects(episode)
    return [effects_table(effects, seconds, episode.truth is not None),
            gr.update(value=picture_file(mask_picture(episode.masks[-1]), "final_mask.png"), visible=True),
            gr.update(value=picture_file(run_picture(episode), "fss_run.png"), visible=True)]


# ---------------------------------------------------------------------------------------------------------------
# Order (issue 11): the ConvLSTM takes the supports one after another, so their order can matter; an OR cannot


def other_order(count, how, rng):
    """Indices of `count` supports reversed, or shuffled (never the given order)."""
    if how == "reversed":
        return list(range(count))[::-1]
    while True:
        order = [int(i) for i in rng.permutation(count)]
        if order != list(range(count)):
            return order


def reorder(episode, how, rng=None):
    """The same supports in another order: [a sentence on what changes, the final masks of both orders]."""
    if episode is None:
        raise ValueError("Press Run first: this runs the supports of the last run again, in another order.")
    count = len(episode.supports)
    if count < 2:
        raise ValueError("With one support there is no other order: add a support and press Run.")
    order = other_order(count, how, rng or np.random.default_rng())
    seg = model.segment(episode.query, [episode.pairs[i] for i in order])
    numbers = lambda indices: ", ".join(str(episode.supports[i][2]) for i in indices)
    given, other = numbers(range(count)), numbers(order)

    def change(before, after):
        return "is the same, pixel for pixel" if np.array_equal(before, after) else \
            f"changes by {100 * (1 - iou(before, after)):.1f}%"

    text = (f"**{how.capitalize()} order** (supports {other} instead of {given}): the ConvLSTM's final mask "
            f"{change(episode.masks[-1], seg.masks[-1])}")
    scores = episode.ious([episode.masks[-1], seg.masks[-1]])
    if scores:
        before, after = (f"{100 * score:.0f}%" for score in scores)
        text += f", and its IoU {f'stays at {before}' if before == after else f'goes from {before} to {after}'}"
    text += (f". The logical OR's final mask {change(episode.or_masks[-1], seg.or_masks[-1])}: an OR of the same "
             "1-shot masks does not depend on their order.")
    finals = (("ConvLSTM, given", episode.masks[-1]), (f"ConvLSTM, {how}", seg.masks[-1]),
              ("OR, given", episode.or_masks[-1]), (f"OR, {how}", seg.or_masks[-1]))
    pictures = [(viz.overlay(episode.query, mask, max_side=SHOW_SIDE), name) for name, mask in finals]
    return [text, pictures]


# ---------------------------------------------------------------------------------------------------------------
# The programmatic endpoint (issue 11): api_name="segment", also served as an MCP tool


def finite(value, digits=4):
    """A number for JSON: rounded; None for nan (JSON has no nan)."""
    return None if value is None or np.isnan(value) else round(float(value), digits)


def segment(query, supports, masks, query_mask=None):
    """Segment in the query the kind of object marked in the supports, which the ConvLSTM takes one at a time.

    Args:
        query: the photo in which to find the object.
        supports: 1 to 10 support photos, in the order the ConvLSTM takes them.
        masks: one mask per support, in the same order; white (or any nonzero value) marks the object.
        query_mask: optional; the query's true mask, to score every step (IoU).

    Returns:
        The ConvLSTM's masks after supports 1..k (PNG, white = object), the logical OR's masks, and per step the
        admission, the input gate on the object, the IoU and the effect of leaving that support out.
    """
    supports, masks = list(supports or []), list(masks or [])
    if query is None:
        raise ValueError("query: give the photo in which to find the object.")
    if not supports:
        raise ValueError("supports: give at least one support photo.")
    if len(masks) != len(supports):
        raise ValueError(f"masks: give one mask per support photo ({len(supports)} photo(s), {len(masks)} mask(s)).")
    if len(supports) > MAX_SUPPORTS:
        raise ValueError(f"supports: {len(supports)} given; at most {MAX_SUPPORTS} are taken.")
    query_image = images.load_image(query, "The query image")
    pairs = []
    for number, (image_file, mask_file) in enumerate(zip(supports, masks), start=1):
        image = images.load_image(image_file, f"Support {number}'s image")
        mask = images.load_mask(mask_file, size=image.shape[:2], what=f"Support {number}'s mask")
        problem = images.support_mask_problem(mask)
        if problem:
            raise ValueError(f"Support {number}: {problem}.")
        pairs.append((image, mask, number))
    truth = None if query_mask is None else \
        images.load_mask(query_mask, size=query_image.shape[:2], what="The query's true mask")
    started = time.perf_counter()
    seg = model.segment(query_image, [(image, mask) for image, mask, _ in pairs], trace=True)
    seconds = time.perf_counter() - started
    episode = episode_of(query_image, pairs, truth, seg)
    effects, leave_one_out_seconds = support_effects(episode)
    unscored = [None] * len(pairs)
    lstm_ious, or_ious = episode.ious(seg.masks) or unscored, episode.ious(seg.or_masks) or unscored
    steps = [{"step": e.step, "admission": finite(e.admission), "input_gate_on_object": finite(e.gate_on_object),
              "object_share": finite(mask.mean()), "iou": finite(lstm), "or_iou": finite(logical_or),
              "mask_change_without_it": finite(e.mask_change), "iou_effect": finite(e.iou_effect)}
             for e, mask, lstm, logical_or in zip(effects, seg.masks, lstm_ious, or_ious)]
    numbers = {"threshold": model.threshold, "query_size": list(query_image.shape[:2]), "steps": steps,
               "seconds": {"segment": round(seconds, 3), "leave_one_out": round(leave_one_out_seconds, 3)}}
    files = lambda found, name: [(picture_file(mask_picture(mask), f"{name}_{k}.png"), f"{name} after {k} support(s)")
                                 for k, mask in enumerate(found, start=1)]
    return files(seg.masks, "convlstm"), files(seg.or_masks, "or"), numbers


# ---------------------------------------------------------------------------------------------------------------
# Handlers: every problem reaches the person as a sentence


def readable_errors(function):
    """A ValueError (the person can fix it) becomes its message on the page, without a traceback in the log; any
    other error is logged, the person told, and the app keeps serving."""
    @functools.wraps(function)
    def handler(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception:
            log.exception("%s failed", function.__name__)
            raise gr.Error("Something went wrong while segmenting these images. Try other images, or fewer or "
                           "smaller ones.") from None
    return handler


def picture_file(picture, name="picture.jpg"):
    """A picture (H, W, 3), or a mask (H, W), as a file in Gradio's cache, named by its content and written once,
    whole; JPEG or PNG by `name`.

    Gradio rewrites the file of a returned array on every request, in place: someone fetching that same picture
    meanwhile (two people running the same example) can get it half-written. JPEG for the photos: encoded in a
    small fraction of the time of PNG or WebP (Gradio's default). PNG for downloads: masks must stay exact.
    """
    buffer = io.BytesIO()
    if name.endswith(".png"):
        Image.fromarray(picture).save(buffer, "PNG", compress_level=3)  # level 6 is twice as slow, 3% smaller
    else:
        Image.fromarray(picture).save(buffer, "JPEG", quality=90)
    folder = os.path.join(get_upload_folder(), hashlib.sha256(buffer.getvalue()).hexdigest())
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as staging:
            staging.write(buffer.getvalue())
        os.replace(staging.name, path)
    return path


def as_files(value):
    """A panel's value with every picture in it (in galleries' (picture, caption) pairs too) as a JPEG file."""
    if isinstance(value, np.ndarray):
        return picture_file(value)
    if isinstance(value, (list, tuple)):
        return type(value)(as_files(item) for item in value)
    return value


@readable_errors
def run(*values):
    """The page's Run: the panels of PANELS, then the episode (for `measure` and `reorder`)."""
    editors, mask_files = list(values[:MAX_SUPPORTS]), list(values[MAX_SUPPORTS:2 * MAX_SUPPORTS])
    query_editor, query_mask_file = values[2 * MAX_SUPPORTS:]
    answer = segment_episode(editors, mask_files, query_editor, query_mask_file)
    for warning in answer.warnings:
        gr.Warning(warning)
    return [as_files(value) for value in panel_values(answer)] + [answer.episode]


measure_run = readable_errors(measure)
run_segment = readable_errors(segment)


@readable_errors
def reorder_panels(episode, how):
    return as_files(reorder(episode, how))


# ---------------------------------------------------------------------------------------------------------------
# Bundled examples, and the page's events that run in the browser
#
# Gradio 6.31's page asks every ImageEditor that was ever an input or output of a server event for its value again
# at each later status update of any event, and an editor answers by fetching its pictures and uploading them anew.
# With six editors, a 5-shot Run spent most of its seconds re-sending pictures the server already had. So the
# editors are never inputs or outputs of a server event: loading an example, adding a support and clearing run in
# the browser (js=, no Python function), and Run first copies the editors, in the browser, into hidden twins that
# the server reads.


def cached_copy(path):
    """A bundled file copied into Gradio's upload folder: the browser can fetch it there, and send it back as an
    input (Gradio takes in only files from that folder)."""
    return processing_utils.save_file_to_cache(path, get_upload_folder())


def example_inputs(folder):
    """An example's values for the inputs, as file paths: photos into the editors, masks into the mask slots under
    them (where they show as they are and can be replaced or cleared), the query and its true mask; and the number
    of support columns to show, and the example's story."""
    with open(os.path.join(folder, "example.json")) as f:
        spec = json.load(f)
    file = lambda name: cached_copy(os.path.join(folder, name))
    editor = lambda name: {"background": file(name), "layers": [], "composite": None}
    supports = spec["supports"][:MAX_SUPPORTS]
    pad = [None] * (MAX_SUPPORTS - len(supports))
    truth = file(spec["query"]["mask"]) if spec["query"].get("mask") else None
    values = [editor(s["image"]) for s in supports] + pad + [file(s["mask"]) for s in supports] + pad + \
        [editor(spec["query"]["image"]), truth]
    return values, max(FIRST_SUPPORTS, len(supports)), spec.get("story", "")


def as_file_data(value):
    """File paths (in editor values too) as the FileData that the browser's components take."""
    if isinstance(value, dict):
        return {key: as_file_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_file_data(item) for item in value]
    if isinstance(value, str):
        return {"path": value, "orig_name": os.path.basename(value), "meta": {"_type": "gradio.FileData"}}
    return value


# Gives each FileData the address the browser fetches it from.
WITH_URLS_JS = """(value) => {
  const root = window.gradio_config.root.replace(/\\/+$/, "");
  const walk = (v) => Array.isArray(v) ? v.map(walk) : (v && typeof v === "object")
    ? (v.meta && v.meta._type === "gradio.FileData"
       ? {...v, url: `${root}/gradio_api/file=${v.path.split("/").map(encodeURIComponent).join("/")}`}
       : Object.fromEntries(Object.entries(v).map(([key, item]) => [key, walk(item)])))
    : v;
  return walk(value);
}"""


def browser_event(values, columns_shown):
    """A js= function for outputs [*values' components, *support columns, column count, "Add a support"]: puts in
    `values`, shows `columns_shown` support columns and re-enables adding. It takes the count shown now and
    updates only the columns that change (an updated column makes the browser re-send its editors' pictures);
    `undefined` leaves an output as it is."""
    add = {"__type__": "update", "value": "Add a support", "interactive": True}
    return f"""(count) => {{
  const columns = Array.from({{length: {MAX_SUPPORTS}}}, (_, i) =>
    (i < {columns_shown}) === (i < count) ? undefined : {{__type__: "update", visible: i < {columns_shown}}});
  return [...({WITH_URLS_JS})({json.dumps(values)}), ...columns, {columns_shown}, {json.dumps(add)}];
}}"""


ADD_SUPPORT_JS = f"""(count) => {{
  const shown = Math.min(count + 1, {MAX_SUPPORTS});
  const columns = Array.from({{length: {MAX_SUPPORTS}}}, (_, i) =>
    i === shown - 1 ? {{__type__: "update", visible: true}} : undefined);
  const add = shown === {MAX_SUPPORTS}
    ? {{__type__: "update", value: "{MAX_SUPPORTS} supports is the most this demo takes", interactive: false}}
    : undefined;
  return [...columns, shown, add];
}}"""

COPY_JS = "(...values) => values"  # Run: the editors' values (uploaded by the browser) into their hidden twins


def warm_up(url):
    """Right after start-up, the page's Run and the API once each on the first bundled example, through the served
    app: the first visitor then does not pay for first-call allocations and lazy imports in the model, the drawing
    and Gradio (the first Run through gradio_client took 1.6 s, later ones 0.5 s). Through the queue, so that a
    visitor who comes sooner waits behind them instead of sharing the model with them."""
    from gradio_client import Client, handle_file

    folders = list(examples.list_examples().values())
    if not folders:
        return
    values, _, _ = example_inputs(folders[0])
    sent = lambda value: handle_file(value) if isinstance(value, str) else \
        {key: sent(item) for key, item in value.items()} if isinstance(value, dict) else value
    try:
        client = Client(url, verbose=False, ssl_verify=False)
        client.predict(*[sent(value) for value in values], api_name="/run")
        editors, masks, (query, truth) = values[:MAX_SUPPORTS], values[MAX_SUPPORTS:2 * MAX_SUPPORTS], values[-2:]
        client.predict(query=sent(query["background"]), api_name="/segment", query_mask=sent(truth),
                       supports=[sent(editor["background"]) for editor in editors if editor],
                       masks=[sent(mask) for mask in masks if mask])
    except Exception:  # the app serves anyway
        log.exception("warm-up failed")


# ---------------------------------------------------------------------------------------------------------------
# The page

INTRO = """
# Few-shot segmentation, one support at a time
Mark an object on a few **support** photos, give a **query** photo, and the model finds that kind of object in the
query, even if it never saw it in training. Supports go through a **ConvLSTM** one after another (after A-MCG,
Hu et al., AAAI 2019), so you see the prediction **after each support**, next to the naive **logical OR** of the
supports' separate 1-shot predictions. Supports are shown with their mask in red, predictions in blue.

**How to:** pick an example below, or upload photos and paint the object with the brush (or upload a mask under
the photo: white or any nonzero value = object). Paint the true object on the query too (or upload its mask) if you
want each step scored (IoU).
"""

EFFECTS_HELP = """
**What each support did.** *Admission*: how far the model let the support in at all (1 = fully; the first support
is always let in). *Input gate on the object*: the input gate's mean over the object predicted at that step.
*Final mask change if left out*: the ConvLSTM run again without that support; 1 − IoU of the two final masks
(0% = the support changed nothing). *IoU effect*: final IoU with the support minus without it (negative: it hurt).
A bad support should show in both: a dim gate, and little effect or a harmful one.
"""

GATES_HELP = """
Each row is one step: the support it took in, then the mean over channels of each gate, laid over the query.
The **admission** is one number per support: how far the model lets it in at all, from how well it agrees with the
supports already in. It scales the input gate, and at 0 the step changes nothing (the notebooks check this by
forcing it open).
Bright means more open (the colours are stretched to the range the gates use in this run, shared by all steps;
the means are on a 0..1 scale): the **input gate** lets the new support's evidence into the memory, the **forget
gate** keeps what earlier supports left there, and the **output gate** decides what of the memory shapes this
step's prediction.
"""

ORDER_HELP = """
The ConvLSTM takes the supports one after another, so its answer can depend on their order; the logical OR of the
1-shot masks cannot. Run the supports of the last run again in another order (mask change: 1 − IoU of the two
final masks).
"""

# The per-support table: lines break between words only (not inside "support"), and each number stays whole.
CSS = """
#effects th, #effects td { word-break: normal; overflow-wrap: normal; }
#effects td { white-space: nowrap; }
"""

BRUSH = gr.Brush(colors=["#e61e1e"], default_color="#e61e1e", color_mode="fixed", default_size=24)


def photo_editor(label, height, show_label=True, elem_id=None, visible=True):
    return receive_files(gr.ImageEditor(label=label, show_label=show_label, type="filepath", brush=BRUSH, layers=False,
                                        transforms=(), format="png", height=height, sources=("upload", "clipboard"),
                                        elem_id=elem_id, visible=visible))


def mask_upload(label):
    return receive_files(gr.Image(label=label, type="filepath", format="png", height=150, sources=("upload",)))


def gallery(label, elem_id, columns=5, height=180):
    return gr.Gallery(label=label, columns=columns, height=height, object_fit="contain", elem_id=elem_id)


def build_demo():
    with gr.Blocks(title="Few-shot segmentation with a ConvLSTM") as demo:
        gr.Markdown(INTRO)
        example_folders = examples.list_examples()
        with gr.Row():
            example_buttons = [gr.Button(title, size="sm") for title in example_folders]
        story = gr.Markdown("")
        count = gr.Number(FIRST_SUPPORTS, visible=False)  # support columns shown; read by the browser's events
        editors, mask_files, columns = [], [], []
        with gr.Row(equal_height=False):
            for i in range(MAX_SUPPORTS):
                with gr.Column(visible=i < FIRST_SUPPORTS, min_width=220) as column:
                    gr.Markdown(f"**Support {i + 1}**")  # in a narrow editor the toolbar hides its label
                    editors.append(photo_editor(f"Support {i + 1}", 300, show_label=False))
                    mask_files.append(mask_upload(f"Support {i + 1}'s mask"))
                columns.append(column)
        with gr.Row():
            add = gr.Button("Add a support", size="sm")
            clear = gr.Button("Clear all", size="sm")
        panels = {}
        with gr.Row(equal_height=False):
            with gr.Column(min_width=300):
                query = photo_editor("Query", 360, elem_id="query")
                query_mask_file = mask_upload("Query's true mask (optional)")
                go = gr.Button("Run", variant="primary", elem_id="run")
                panels["mask_download"] = gr.DownloadButton("Download the final mask (PNG)", visible=False,
                                                            size="sm", elem_id="mask-download")
                panels["picture_download"] = gr.DownloadButton("Download the whole run as one picture (PNG)",
                                                               visible=False, size="sm", elem_id="picture-download")
            with gr.Column(scale=2):
                panels["summary"] = gr.Markdown("")
                panels["supports"] = gallery("Supports (mask in red)", "supports")
                panels["convlstm"] = gallery("ConvLSTM: prediction after supports 1..k", "convlstm")
                panels["logical_or"] = gallery("Logical OR of the 1-shot predictions of supports 1..k", "or")
                panels["iou_plot"] = gr.LinePlot(
                    x="supports given", y="IoU (%)", color="method", y_lim=[0, 100],
                    sort=[str(k) for k in range(1, MAX_SUPPORTS + 1)],
                    color_map={"ConvLSTM": "#1e64ff", "logical OR": "#737373"},
                    label="IoU after each step (needs the query's true mask)")
        with gr.Accordion("Inside the ConvLSTM: which support did it let in, and what did each one do?", open=True):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=440):
                    gr.Markdown(EFFECTS_HELP)
                    panels["effects"] = gr.Markdown("", elem_id="effects")
                with gr.Column():
                    gr.Markdown(GATES_HELP)
                    panels["gates"] = gr.Image(label="Gates per step", show_label=False,  # a label would cover
                                               elem_id="gates", buttons=["download", "fullscreen"])  # step 1's title
        with gr.Accordion("Does the order of the supports matter?", open=True):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=400):
                    gr.Markdown(ORDER_HELP)
                    with gr.Row():
                        reverse = gr.Button("Run them in reverse order", size="sm")
                        shuffle = gr.Button("Run them in a shuffled order", size="sm")
                    panels["order"] = gr.Markdown("", elem_id="order")
                with gr.Column(scale=2):
                    panels["order_pictures"] = gallery("Final masks: the given order and the other one",
                                                       "order-pictures", columns=4, height=240)
        assert sorted(panels) == sorted(PANELS), "every field of Answer needs a panel of the same name"
        episode = gr.State(None)  # the last run, for the measurements after it and the order control

        with gr.Column(visible=False):  # not on the page: the twins Run reads, and the programmatic endpoint
            twins = [photo_editor(f"Support {i + 1}", 300, visible=False) for i in range(MAX_SUPPORTS)]
            query_twin = photo_editor("Query", 360, visible=False)
            api_inputs = [receive_files(gr.Image(label="query", type="filepath")),
                          gr.File(label="supports", file_count="multiple"),
                          gr.File(label="masks", file_count="multiple"),
                          receive_files(gr.Image(label="query_mask", type="filepath"))]
            api_outputs = [gr.Gallery(label="convlstm_masks"), gr.Gallery(label="or_masks"), gr.JSON(label="numbers")]
            api_button = gr.Button("segment")

        inputs = editors + mask_files + [query, query_mask_file]
        outputs = lambda names: [panels[name] for name in names]
        model_event = dict(concurrency_limit=1, concurrency_id="model")  # one model, one request at a time
        page_only = dict(api_visibility="private")  # serves the page only: not on the API page, not an MCP tool

        # The loading animation on one panel per event, not on every output: each animated panel is repainted
        # every frame, and on 2 cores the browser's painting is much of the wait for an answer.
        go.click(None, editors + [query], twins + [query_twin], js=COPY_JS).then(
            run, twins + mask_files + [query_twin, query_mask_file], outputs(PANELS) + [episode],
            show_progress_on=panels["convlstm"], api_name="run", api_visibility="undocumented",  # for the tests
            **model_event
        ).success(measure_run, episode, outputs(MEASURES), show_progress_on=panels["effects"], **model_event,
                  **page_only)
        for button, how in ((reverse, "reversed"), (shuffle, "shuffled")):
            button.click(functools.partial(reorder_panels, how=how), episode, outputs(ORDER_PANELS),
                         show_progress_on=panels["order"], **model_event, **page_only)
        api_button.click(run_segment, api_inputs, api_outputs, api_name="segment", **model_event)

        add.click(None, count, columns + [count, add], js=ADD_SUPPORT_JS)
        cleared = [None] * len(inputs) + panel_values(Answer()) + [""]
        clear.click(None, count, inputs + outputs(PANELS) + [story] + columns + [count, add],
                    js=browser_event(cleared, FIRST_SUPPORTS)
                    ).then(lambda: None, None, episode, queue=False, **page_only)  # and forget the last run
        for button, folder in zip(example_buttons, example_folders.values()):
            values, columns_shown, example_story = example_inputs(folder)
            button.click(None, count, inputs + [story] + columns + [count, add],
                         js=browser_event(as_file_data(values) + [example_story], columns_shown))
    return demo


demo = build_demo()
demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)

if __name__ == "__main__":
    demo.launch(max_file_size="15mb", server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), css=CSS,
                mcp_server=True, prevent_thread_lock=True)
    warm_up(demo.local_url)  # the page is served meanwhile
    demo.block_thread()
