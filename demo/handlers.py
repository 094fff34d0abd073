"""What each event of the page computes, and the /segment endpoint (also an MCP tool). Every problem reaches the
person as a sentence: a ValueError's message, shown by Gradio as an error, or a warning when the run goes on."""
import functools
import logging
import time

import gradio as gr
import numpy as np

import fss_demo
from fss_demo import analysis, examples, images

from .gradio_fixes import as_files, picture_file
from .inputs import Inputs
from .panels import PANELS, PageRun, effects_table, order_pictures, run_answer, run_picture

log = logging.getLogger("fss_demo.app")
model = fss_demo.load_model()


# ---------------------------------------------------------------------------------------------------------------
# Reading what the person gave on the page


def background(editor):
    """Path (or array) of an editor value's photo; None if there is none."""
    return editor.get("background") if isinstance(editor, dict) else editor


def painted_mask(editor, what):
    """Union of what was painted on the editor's layers (bool, the first layer's size); None if nothing was."""
    layers = [layer for layer in (editor.get("layers") or []) if layer is not None] if isinstance(editor, dict) else []
    painted = None
    for layer in layers:  # strokes are the opaque pixels
        strokes = images.load_mask(layer, size=None if painted is None else painted.shape, what=what)
        painted = strokes if painted is None else painted | strokes
    return painted if painted is not None and painted.any() else None


def read_support(number, editor, mask_file):
    """(image, mask) of one support slot, or None if the slot is empty. An uploaded mask wins over painting."""
    photo = background(editor)
    if photo is None:
        if mask_file is not None:
            raise ValueError(f"Support {number} has a mask but no image.")
        return None
    mask = mask_file if mask_file is not None else painted_mask(editor, f"Support {number}'s mask")
    return images.load_support(photo, mask, number)


def collect_supports(inputs):
    """[(image, mask)] and their slot numbers of every usable support, and why each of the others was skipped."""
    supports, numbers, skipped = [], [], []
    for number, (editor, mask_file) in enumerate(zip(inputs.editors, inputs.masks), start=1):
        try:
            support = read_support(number, editor, mask_file)
        except ValueError as error:
            skipped.append(f"{str(error).rstrip('.')}. Skipped.")
            continue
        if support is not None:
            supports.append(support)
            numbers.append(number)
    return supports, numbers, skipped


def read_truth(inputs, size):
    """The query's true mask (None if not given), and a note if it was given but cannot be read."""
    what = "The query's true mask"
    try:
        mask = inputs.query_mask if inputs.query_mask is not None else painted_mask(inputs.query, what)
        return (None if mask is None else images.load_mask(mask, size=size, what=what)), None
    except ValueError as error:
        return None, f"{str(error).rstrip('.')}. Not scored."


def run_page(inputs):
    """(PageRun, Answer) for the page's inputs. Raises ValueError with a readable message."""
    supports, numbers, warnings = collect_supports(inputs)
    if background(inputs.query) is None:
        raise ValueError(" ".join(["Add a query image: the photo in which to find the object."] + warnings))
    query, size = images.load_image_with_size(background(inputs.query), "The query image")
    if not supports:
        raise ValueError(" ".join(["Add at least one support: an image with the object painted on it "
                                   "(or a mask uploaded)."] + warnings))
    truth, note = read_truth(inputs, query.shape[:2])
    warnings += [note] if note else []
    episode, seg = analysis.Episode.run(model, query, supports, numbers, truth)
    run = PageRun(episode, size, warnings)
    return run, run_answer(run, seg)


# ---------------------------------------------------------------------------------------------------------------
# The page's events


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


@readable_errors
def run(*values):
    """Run: the panels of PANELS, then the PageRun (kept for `measure` and `reorder`)."""
    page_run, answer = run_page(Inputs.from_values(values))
    for warning in page_run.warnings:
        gr.Warning(warning)
    return [as_files(getattr(answer, name)) for name in PANELS] + [page_run]


@readable_errors
def measure(page_run):
    """The panels filled right after a run (MEASURES): each support's effect, and the two downloads."""
    episode = page_run.episode
    effects, seconds = analysis.support_effects(model, episode)
    shown = lambda path: gr.update(value=path, visible=True)
    return [effects_table(effects, seconds, episode.truth is not None),
            shown(picture_file(images.mask_picture(episode.masks[-1], page_run.size), "final_mask.png")),
            shown(picture_file(run_picture(episode), "fss_run.png"))]


@readable_errors
def reorder(page_run, how):
    change = analysis.reorder(model, page_run and page_run.episode, how)
    return as_files([change.text, order_pictures(page_run.episode, change)])


# ---------------------------------------------------------------------------------------------------------------
# The programmatic endpoint: api_name="segment", also served as an MCP tool


def finite(value, digits=4):
    """A number for JSON: rounded; None for nan (JSON has no nan)."""
    return None if value is None or np.isnan(value) else round(float(value), digits)


@readable_errors
def segment(query, supports, masks, query_mask=None):
    """Segment in the query the kind of object marked in the supports, which a ConvLSTM takes one at a time.

    Files: through gradio_client, local files (handle_file); through MCP, data: URLs or public http(s) URLs.

    Args:
        query: The photo in which to find the object.
        supports: 1 to 10 support photos, in the order the ConvLSTM takes them.
        masks: One mask per support photo, in the same order; white (or 1 in a 0/1 mask) marks the object.
        query_mask: Optional. The query's true mask, to score every step (IoU).

    Returns:
        convlstm_masks: the ConvLSTM's mask after supports 1..k (PNG at the query's size, white = object)
        or_masks: the logical OR of the 1-shot masks of supports 1..k (PNG)
        numbers: per step IoU; per support admission, input gate, effect of leaving it out; the order they ran in
    """
    supports, masks = list(supports or []), list(masks or [])
    if query is None:
        raise ValueError("query: give the photo in which to find the object.")
    images.check_support_count(len(supports))
    if len(masks) != len(supports):
        raise ValueError(f"masks: give one mask per support photo ({len(supports)} photo(s), {len(masks)} mask(s)).")
    query_image, size = images.load_image_with_size(query, "The query image")
    pairs = [images.load_support(image, mask, number) for number, (image, mask) in enumerate(zip(supports, masks), 1)]
    truth = None if query_mask is None else \
        images.load_mask(query_mask, size=query_image.shape[:2], what="The query's true mask")
    started = time.perf_counter()
    episode, _ = analysis.Episode.run(model, query_image, pairs, truth=truth)
    seconds = time.perf_counter() - started
    effects, leave_one_out_seconds = analysis.support_effects(model, episode)
    unscored = [None] * len(pairs)
    lstm_ious, or_ious = episode.ious(episode.masks) or unscored, episode.ious(episode.or_masks) or unscored
    steps = [{"step": e.step, "admission": finite(e.admission), "input_gate_on_object": finite(e.gate_on_object),
              "object_share": finite(mask.mean()), "iou": finite(lstm), "or_iou": finite(logical_or),
              "mask_change_without_it": finite(e.mask_change), "iou_effect": finite(e.iou_effect)}
             for e, mask, lstm, logical_or in zip(effects, episode.masks, lstm_ious, or_ious)]
    numbers = {"threshold": model.threshold, "query_size": list(size), "steps": steps, "order": episode.order,
               "seconds": {"segment": round(seconds, 3), "leave_one_out": round(leave_one_out_seconds, 3)}}
    files = lambda found, name: [(picture_file(images.mask_picture(mask, size), f"{name}_{k}.png"),
                                  f"{name} after {k} support(s)") for k, mask in enumerate(found, start=1)]
    return files(episode.masks, "convlstm"), files(episode.or_masks, "or"), numbers


# ---------------------------------------------------------------------------------------------------------------
# Warm-up


def warm_up(url):
    """Right after start-up, the page's Run and the API once each on the first bundled example, through the served
    app: the first visitor then does not pay for first-call allocations and lazy imports in the model, the drawing
    and Gradio (the first Run through gradio_client took 1.6 s, later ones 0.5 s). Through the queue, so that a
    visitor who comes sooner waits behind them instead of sharing the model with them."""
    from gradio_client import Client, handle_file

    bundled = examples.list_examples()
    if not bundled:
        return
    example = bundled[0]
    try:
        client = Client(url, verbose=False, ssl_verify=False)
        client.predict(*Inputs.of_example(example, handle_file).values(), api_name="/run")
        client.predict(query=handle_file(example.query), supports=[handle_file(image) for image, _ in example.supports],
                       masks=[handle_file(mask) for _, mask in example.supports],
                       query_mask=handle_file(example.truth) if example.truth else None, api_name="/segment")
    except Exception:  # the app serves anyway
        log.exception("warm-up failed")

