"""Few-shot segmentation demo: give a few supports and a query, watch the prediction improve step by step.

Run locally with `python app.py`; on a Hugging Face Space this file is the entry point.
"""
import json
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
import torch

import fss_demo
from fss_demo import images, viz

torch.set_num_threads(int(os.environ.get("FSS_DEMO_THREADS", "2")))
log = logging.getLogger("fss_demo.app")

MAX_SUPPORTS = 10
FIRST_SUPPORTS = 5  # shown at start; the rest behind "Add a support"
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
SHOW_SIDE = 360  # side of the pictures the app sends back

model = fss_demo.load_model()


# ---------------------------------------------------------------------------------------------------------------
# Reading what the person gave


def editor_image(value):
    """The photo of an ImageEditor value (None if there is none)."""
    if value is None:
        return None
    background = value.get("background") if isinstance(value, dict) else value
    if background is None:
        return None
    return images.load_image(background)


def editor_mask(value, uploaded_mask, size, what):
    """The object mask: an uploaded mask wins; otherwise whatever was painted on the editor's layers."""
    if uploaded_mask is not None:  # white = object; the threshold ignores JPEG noise in the black
        return images.load_mask(np.asarray(uploaded_mask) > 127, size=size, what=what)
    layers = (value.get("layers") or []) if isinstance(value, dict) else []
    painted = np.zeros(size, dtype=bool)
    for layer in layers:
        if layer is None:
            continue
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[2] == 4:
            strokes = layer[..., 3] > 0  # painted pixels are the opaque ones
        else:
            strokes = layer.any(axis=2) if layer.ndim == 3 else layer > 0
        painted |= images.load_mask(strokes, size=size, what=what)
    return painted if painted.any() else None


def collect_supports(editors, uploads):
    """[(image, mask, slot number)] for every usable support, and the warnings for those skipped."""
    supports, warnings = [], []
    for number, (value, upload) in enumerate(zip(editors, uploads), start=1):
        image = editor_image(value)
        if image is None:
            if upload is not None:
                warnings.append(f"Support {number} has a mask but no image: skipped.")
            continue
        mask = editor_mask(value, upload, image.shape[:2], f"support {number} mask")
        if mask is None or not mask.any():
            warnings.append(f"Support {number} has no mask: paint the object or upload a mask. Skipped.")
            continue
        if mask.mean() > 0.995:
            warnings.append(f"Support {number}'s mask covers the whole image: mark only the object. Skipped.")
            continue
        supports.append((image, mask, number))
    return supports, warnings


# ---------------------------------------------------------------------------------------------------------------
# Running


def segment_episode(editors, uploads, query_value, query_upload, progress=None):
    """Everything the page shows, from the raw component values. Raises ValueError with a readable message."""
    step = progress or (lambda *a, **k: None)
    step(0.05, desc="Reading the images")
    query = editor_image(query_value)
    if query is None:
        raise ValueError("Add a query image: the photo in which to find the object.")
    supports, warnings = collect_supports(editors, uploads)
    if not supports:
        raise ValueError("Add at least one support: an image with the object painted on it (or a mask uploaded).")
    truth = editor_mask(query_value, query_upload, query.shape[:2], "query mask")
    step(0.3, desc=f"Segmenting with {len(supports)} support(s)")
    seg = model.segment(query, [(image, mask) for image, mask, _ in supports], trace=True)
    step(0.8, desc="Drawing")

    support_view = [(viz.overlay(image, mask, viz.SUPPORT_COLOR, max_side=SHOW_SIDE), f"support {n}")
                    for (image, mask, n) in supports]
    lstm_ious = [viz.iou(m, truth) for m in seg.masks] if truth is not None else None
    or_ious = [viz.iou(m, truth) for m in seg.or_masks] if truth is not None else None

    def row(masks, ious):
        return [(viz.overlay(query, m, max_side=SHOW_SIDE),
                 f"{k} support{'s' if k > 1 else ''}" + (f": IoU {100 * ious[k - 1]:.0f}%" if ious else ""))
                for k, m in enumerate(masks, start=1)]

    lstm_view, or_view = row(seg.masks, lstm_ious), row(seg.or_masks, or_ious)
    plot = None
    if truth is not None:
        import matplotlib.pyplot as plt

        plot = viz.plot_step_iou(lstm_ious, or_ious)
        plt.close(plot)
    strips, ranges = [], viz.gate_ranges(seg.gates)
    for k, ((image, mask, n), gates) in enumerate(zip(supports, seg.gates), start=1):
        inside, outside = viz.gate_share_on_object(gates["input_gate"].mean(0), seg.masks[k - 1])
        title = f"Step {k} (support {n}): input gate {inside:.2f} on the predicted object, {outside:.2f} elsewhere"
        strips.append(viz.gate_strip(query, image, mask, gates, title=title, ranges=ranges))
    gate_view = viz.stack_rows(strips)
    summary = f"Ran {len(supports)} support(s): " + ", ".join(str(n) for _, _, n in supports) + "."
    if truth is not None:
        percent = lambda values: ", ".join(f"{100 * v:.0f}%" for v in values)
        summary += f" ConvLSTM IoU after each step: {percent(lstm_ious)}; logical OR: {percent(or_ious)}."
    step(1.0, desc="Done")
    return support_view, lstm_view, or_view, plot, gate_view, summary, warnings


def run(*values, progress=gr.Progress()):
    editors = list(values[:MAX_SUPPORTS])
    uploads = list(values[MAX_SUPPORTS:2 * MAX_SUPPORTS])
    query_value, query_upload = values[2 * MAX_SUPPORTS:]
    try:
        *outputs, warnings = segment_episode(editors, uploads, query_value, query_upload, progress)
    except ValueError as error:
        raise gr.Error(str(error)) from None
    except Exception:  # a bug must not take the app down: say so, log it, keep serving
        log.exception("segmentation failed")
        raise gr.Error("Something went wrong while segmenting these images. Try other images, or fewer or smaller ones.") from None
    for warning in warnings:
        gr.Warning(warning)
    return outputs


# ---------------------------------------------------------------------------------------------------------------
# Bundled examples


def list_examples():
    """{title: folder} of the examples shipped in examples/ (each has an example.json)."""
    found = {}
    if os.path.isdir(EXAMPLES_DIR):
        for name in sorted(os.listdir(EXAMPLES_DIR)):
            path = os.path.join(EXAMPLES_DIR, name, "example.json")
            if os.path.isfile(path):
                with open(path) as f:
                    found[json.load(f)["title"]] = os.path.join(EXAMPLES_DIR, name)
    return found


def load_example(folder):
    """Values for every input component, from an example folder: photos into the editors, masks into the
    mask slots under them (where they show as they are and can be replaced or cleared)."""
    with open(os.path.join(folder, "example.json")) as f:
        spec = json.load(f)
    path = lambda name: os.path.join(folder, name)
    editors, uploads = [None] * MAX_SUPPORTS, [None] * MAX_SUPPORTS
    for i, support in enumerate(spec["supports"]):
        editors[i] = images.load_image(path(support["image"]))
        uploads[i] = images.load_mask(path(support["mask"]), size=editors[i].shape[:2]).astype(np.uint8) * 255
    query = images.load_image(path(spec["query"]["image"]))
    query_mask = spec["query"].get("mask")
    query_upload = images.load_mask(path(query_mask), size=query.shape[:2]).astype(np.uint8) * 255 if query_mask else None
    shown = max(FIRST_SUPPORTS, len(spec["supports"]))
    columns = [gr.update(visible=i < shown) for i in range(MAX_SUPPORTS)]
    return editors + uploads + [query, query_upload] + columns + [shown, spec.get("story", "")]


# ---------------------------------------------------------------------------------------------------------------
# The page

INTRO = """
# Few-shot segmentation, one support at a time
Mark an object on a few **support** photos, give a **query** photo, and the model finds that kind of object in the
query, even if it never saw it in training. Supports go through a **ConvLSTM** one after another (after A-MCG,
Hu et al., AAAI 2019), so you see the prediction **after each support**, next to the naive **logical OR** of the
supports' separate 1-shot predictions. Supports are shown with their mask in red, predictions in blue.

**How to:** pick an example below, or upload photos and paint the object with the brush (or upload a mask).
Paint the true object on the query too if you want each step scored (IoU).
"""

GATES_HELP = """
At every step the ConvLSTM decides how much of the new support to let in. Bright means more open (the colours
are stretched to the range the gates use in this run, shared by all steps; the means are on a 0..1 scale):
the **input gate** lets the new support's evidence into the memory, the **forget gate** keeps what earlier supports
left there, and the **output gate** decides what of the memory shapes this step's prediction. If the model distrusts
a support, one would expect a dimmer input gate at that step; `notebooks/03_bad_support.ipynb` measures whether it is so.
"""

BRUSH = gr.Brush(colors=["#e61e1e"], default_color="#e61e1e", color_mode="fixed", default_size=24)


def build_demo():
    with gr.Blocks(title="Few-shot segmentation with a ConvLSTM") as demo:
        gr.Markdown(INTRO)
        examples = list_examples()
        with gr.Row():
            example_buttons = [gr.Button(title, size="sm") for title in examples]
        story = gr.Markdown("")
        shown = gr.State(FIRST_SUPPORTS)
        editors, uploads, columns = [], [], []
        with gr.Row(equal_height=False):
            for i in range(MAX_SUPPORTS):
                with gr.Column(visible=i < FIRST_SUPPORTS, min_width=220) as column:
                    editors.append(gr.ImageEditor(label=f"Support {i + 1}: paint the object", type="numpy",
                                                  image_mode="RGB", brush=BRUSH, layers=False, transforms=(),
                                                  format="png", height=300, sources=("upload", "clipboard")))
                    uploads.append(gr.Image(label="…or its mask (white = object)", type="numpy", height=150,
                                            image_mode="L", sources=("upload",)))
                columns.append(column)
        with gr.Row():
            add = gr.Button("Add a support", size="sm")
            clear = gr.Button("Clear all", size="sm")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=300):
                query = gr.ImageEditor(label="Query: the photo to segment (optional: paint its true object to score)",
                                       type="numpy", image_mode="RGB", brush=BRUSH, layers=False, transforms=(),
                                       format="png", height=360, sources=("upload", "clipboard"))
                query_upload = gr.Image(label="…its true mask (optional)", type="numpy", height=150,
                                        image_mode="L", sources=("upload",))
                go = gr.Button("Run", variant="primary")
            with gr.Column(scale=2):
                summary = gr.Markdown("")
                support_gallery = gr.Gallery(label="Supports (mask in red)", columns=5, height=230,
                                             object_fit="contain", elem_id="supports")
                lstm_gallery = gr.Gallery(label="ConvLSTM: prediction after supports 1..k", columns=5, height=230,
                                          object_fit="contain", elem_id="convlstm")
                or_gallery = gr.Gallery(label="Logical OR of the 1-shot predictions of supports 1..k", columns=5,
                                        height=230, object_fit="contain", elem_id="or")
                iou_plot = gr.Plot(label="IoU after each step (needs the query's true mask)")
        with gr.Accordion("Inside the ConvLSTM: which support did it let in?", open=False):
            gr.Markdown(GATES_HELP)
            gate_image = gr.Image(label="Gates per step (channel mean over the query; bright = open)",
                                    elem_id="gates", buttons=["download", "fullscreen"])

        inputs = editors + uploads + [query, query_upload]
        outputs = [support_gallery, lstm_gallery, or_gallery, iou_plot, gate_image, summary]
        go.click(run, inputs, outputs, concurrency_limit=1, concurrency_id="model")

        def add_support(count):
            count = min(count + 1, MAX_SUPPORTS)
            if count == MAX_SUPPORTS:
                gr.Info(f"{MAX_SUPPORTS} supports is the most this demo takes.")
            return [gr.update(visible=i < count) for i in range(MAX_SUPPORTS)] + [count]

        add.click(add_support, shown, columns + [shown], queue=False)

        def clear_all():
            return [None] * len(inputs) + [gr.update(visible=i < FIRST_SUPPORTS) for i in range(MAX_SUPPORTS)] + \
                   [FIRST_SUPPORTS, "", [], [], [], None, None, ""]

        clear.click(clear_all, None, inputs + columns + [shown, story] + outputs, queue=False)
        for button, folder in zip(example_buttons, examples.values()):
            button.click(lambda folder=folder: load_example(folder), None, inputs + columns + [shown, story])
    return demo


demo = build_demo()
demo.queue(default_concurrency_limit=1, max_size=16)

if __name__ == "__main__":
    demo.launch(max_file_size="15mb", server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
