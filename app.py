"""Few-shot segmentation demo: give a few supports and a query, watch the prediction improve step by step.

Run locally with `python app.py`; on a Hugging Face Space this file is the entry point.
"""
import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass, field, fields

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
class Answer:
    """What one run puts on the page: one field per output panel, named as in build_demo (its defaults clear it)."""

    supports: list = None      # gallery: each support used, its mask in red
    convlstm: list = None      # gallery: the ConvLSTM's prediction after supports 1..k
    logical_or: list = None    # gallery: logical OR of the 1-shot predictions of supports 1..k
    iou_plot: pd.DataFrame = None  # IoU after each step (needs the query's true mask)
    gates: np.ndarray = None   # the gate picture, one row per step
    summary: str = ""          # what ran, the scores, and what was skipped and why
    warnings: list = field(default_factory=list)  # not a panel: in the summary, and shown as pop-ups


PANELS = [f.name for f in fields(Answer) if f.name != "warnings"]


def panel_values(answer):
    return [getattr(answer, name) for name in PANELS]


def caption(k, ious):
    return f"{k} support{'s' if k > 1 else ''}" + (f": IoU {100 * ious[k - 1]:.0f}%" if ious else "")


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
        title = f"Step {k} (support {number}): input gate {inside:.2f} on the predicted object, {outside:.2f} elsewhere"
        strips.append(viz.gate_strip(query, image, mask, gates, title=title, ranges=ranges, captions=k == 1))
    return viz.stack_rows(strips)


def summarize(supports, lstm_ious, or_ious, warnings):
    text = f"Ran {len(supports)} support(s): " + ", ".join(str(number) for _, _, number in supports) + "."
    if lstm_ious:
        percent = lambda values: ", ".join(f"{100 * v:.0f}%" for v in values)
        text += f" ConvLSTM IoU after each step: {percent(lstm_ious)}; logical OR: {percent(or_ious)}."
    return "\n\n".join([text] + [f"⚠ {warning}" for warning in warnings])


def segment_episode(editors, mask_files, query_editor, query_mask_file, progress=None):
    """The Answer for the raw component values (file paths, or arrays). Raises ValueError with a readable message."""
    step = progress or (lambda *a, **k: None)
    step(0.05, desc="Reading the images")
    supports, warnings = collect_supports(editors, mask_files)
    if background(query_editor) is None:
        raise ValueError(" ".join(["Add a query image: the photo in which to find the object."] + warnings))
    query = images.load_image(background(query_editor), "The query image")
    if not supports:
        raise ValueError(" ".join(["Add at least one support: an image with the object painted on it "
                                   "(or a mask uploaded)."] + warnings))
    truth, note = read_truth(query_editor, query_mask_file, query.shape[:2])
    warnings += [note] if note else []
    step(0.3, desc=f"Segmenting with {len(supports)} support(s)")
    seg = model.segment(query, [(image, mask) for image, mask, _ in supports], trace=True)
    step(0.8, desc="Drawing")
    lstm_ious = [iou(m, truth) for m in seg.masks] if truth is not None else None
    or_ious = [iou(m, truth) for m in seg.or_masks] if truth is not None else None
    return Answer(
        supports=[(viz.overlay(image, mask, viz.SUPPORT_COLOR, max_side=SHOW_SIDE), f"support {number}")
                  for image, mask, number in supports],
        convlstm=prediction_row(query, seg.masks, lstm_ious),
        logical_or=prediction_row(query, seg.or_masks, or_ious),
        iou_plot=iou_table(lstm_ious, or_ious) if truth is not None else None,  # drawn by the browser
        gates=gate_picture(query, supports, seg),
        summary=summarize(supports, lstm_ious, or_ious, warnings),
        warnings=warnings)


def jpeg_file(picture):
    """A picture (H, W, 3) as a JPEG file in Gradio's cache, named by its content and written once, whole.

    Gradio rewrites the file of a returned array on every request, in place: someone fetching that same picture
    meanwhile (two people running the same example) can get it half-written. JPEG: encoded in a small fraction of
    the time of PNG or WebP (Gradio's default), and these are photos.
    """
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=90)
    folder = os.path.join(get_upload_folder(), hashlib.sha256(buffer.getvalue()).hexdigest())
    path = os.path.join(folder, "picture.jpg")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as staging:
            staging.write(buffer.getvalue())
        os.replace(staging.name, path)
    return path


def as_files(value):
    """A panel's value with every picture in it (in galleries' (picture, caption) pairs too) as a JPEG file."""
    if isinstance(value, np.ndarray):
        return jpeg_file(value)
    if isinstance(value, (list, tuple)):
        return type(value)(as_files(item) for item in value)
    return value


def run(*values, progress=gr.Progress()):
    editors, mask_files = list(values[:MAX_SUPPORTS]), list(values[MAX_SUPPORTS:2 * MAX_SUPPORTS])
    query_editor, query_mask_file = values[2 * MAX_SUPPORTS:]
    try:
        answer = segment_episode(editors, mask_files, query_editor, query_mask_file, progress)
    except ValueError as error:  # the person can fix it: say what, without a traceback in the log
        raise gr.Error(str(error), print_exception=False) from None
    except Exception:  # a bug must not take the app down: say so, log it, keep serving
        log.exception("segmentation failed")
        raise gr.Error("Something went wrong while segmenting these images. Try other images, or fewer or smaller ones.") from None
    for warning in answer.warnings:
        gr.Warning(warning)
    return [as_files(value) for value in panel_values(answer)]


# ---------------------------------------------------------------------------------------------------------------
# Bundled examples


def column_updates(count):
    return [gr.update(visible=i < count) for i in range(MAX_SUPPORTS)]


def example_values(folder):
    """Values for the inputs from a bundled example: photos into the editors, masks into the mask slots under them
    (where they show as they are and can be replaced or cleared); then the columns to show, their count, the story."""
    example = examples.load_example(folder)
    as_picture = lambda mask: mask.astype(np.uint8) * 255
    as_editor = lambda image: {"background": image, "layers": [], "composite": None}
    editors, masks = [None] * MAX_SUPPORTS, [None] * MAX_SUPPORTS
    for i, (image, mask) in enumerate(example.supports[:MAX_SUPPORTS]):
        editors[i], masks[i] = as_editor(image), as_picture(mask)
    truth = None if example.truth is None else as_picture(example.truth)
    shown = max(FIRST_SUPPORTS, min(len(example.supports), MAX_SUPPORTS))
    return editors + masks + [as_editor(example.query), truth] + column_updates(shown) + [shown, example.story]


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

GATES_HELP = """
Each row is one step: the support it took in, then the mean over channels of each gate, laid over the query.
At every step the ConvLSTM decides how much of the new support to let in. Bright means more open (the colours
are stretched to the range the gates use in this run, shared by all steps; the means are on a 0..1 scale):
the **input gate** lets the new support's evidence into the memory, the **forget gate** keeps what earlier supports
left there, and the **output gate** decides what of the memory shapes this step's prediction. If the model distrusts
a support, one would expect a dimmer input gate at that step; `notebooks/03_bad_support.ipynb` measures whether it is so.
"""

BRUSH = gr.Brush(colors=["#e61e1e"], default_color="#e61e1e", color_mode="fixed", default_size=24)


def photo_editor(label, height, show_label=True, elem_id=None):
    return receive_files(gr.ImageEditor(label=label, show_label=show_label, type="filepath", brush=BRUSH, layers=False,
                                        transforms=(), format="png", height=height, sources=("upload", "clipboard"),
                                        elem_id=elem_id))


def mask_upload(label):
    return receive_files(gr.Image(label=label, type="filepath", format="png", height=150, sources=("upload",)))


def gallery(label, elem_id):
    return gr.Gallery(label=label, columns=5, height=180, object_fit="contain", elem_id=elem_id)


def build_demo():
    with gr.Blocks(title="Few-shot segmentation with a ConvLSTM") as demo:
        gr.Markdown(INTRO)
        example_folders = examples.list_examples()
        with gr.Row():
            example_buttons = [gr.Button(title, size="sm") for title in example_folders]
        story = gr.Markdown("")
        shown = gr.State(FIRST_SUPPORTS)
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
                go = gr.Button("Run", variant="primary")
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
        with gr.Accordion("Inside the ConvLSTM: which support did it let in?", open=False):
            gr.Markdown(GATES_HELP)
            panels["gates"] = gr.Image(label="Gates per step", show_label=False,  # a label would cover step 1's title
                                       elem_id="gates", buttons=["download", "fullscreen"])
        assert sorted(panels) == sorted(PANELS), "every field of Answer needs a panel of the same name"

        inputs = editors + mask_files + [query, query_mask_file]
        outputs = [panels[name] for name in PANELS]
        go.click(run, inputs, outputs, concurrency_limit=1, concurrency_id="model")

        def add_support(count):
            count = min(count + 1, MAX_SUPPORTS)
            if count == MAX_SUPPORTS:
                gr.Info(f"{MAX_SUPPORTS} supports is the most this demo takes.")
            return column_updates(count) + [count]

        add.click(add_support, shown, columns + [shown], queue=False)

        def clear_all():
            return [None] * len(inputs) + panel_values(Answer()) + column_updates(FIRST_SUPPORTS) + [FIRST_SUPPORTS, ""]

        clear.click(clear_all, None, inputs + outputs + columns + [shown, story], queue=False)
        for button, folder in zip(example_buttons, example_folders.values()):
            button.click(lambda folder=folder: example_values(folder), None, inputs + columns + [shown, story])
    return demo


demo = build_demo()
demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)

if __name__ == "__main__":
    demo.launch(max_file_size="15mb", server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
