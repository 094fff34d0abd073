"""The page: its components, and which event fills which panel."""
import functools
import json
import pathlib

import gradio as gr

from fss_demo import examples

from . import handlers, text
from .gradio_fixes import as_file_data, cached_copy, fix_mcp_tools, receive_files
from .inputs import FIRST_SHOWN, SLOTS, Inputs
from .panels import MEASURES, ORDER_PANELS, PANELS, Answer

BROWSER_JS = (pathlib.Path(__file__).parent / "browser.js").read_text()
BRUSH = gr.Brush(colors=["#e61e1e"], default_color="#e61e1e", color_mode="fixed", default_size=24)


def photo_editor(label, height, show_label=True, elem_id=None, visible=True):
    return receive_files(gr.ImageEditor(label=label, show_label=show_label, type="filepath", brush=BRUSH, layers=False,
                                        transforms=(), format="png", height=height, sources=("upload", "clipboard"),
                                        elem_id=elem_id, elem_classes=["photo-editor"], visible=visible))


def mask_upload(label, elem_id=None):
    return receive_files(gr.Image(label=label, type="filepath", format="png", height=150, sources=("upload",),
                                  elem_id=elem_id))


def gallery(label, elem_id, columns=5, height=180):
    return gr.Gallery(label=label, columns=columns, height=height, object_fit="contain", elem_id=elem_id)


def show_in_browser(values, shown):
    """js= for outputs [*values' components, *support columns, column count, "Add a support"] (browser.js)."""
    return f"(count) => window.fssDemo.show(count, {json.dumps(values)}, {shown}, {SLOTS})"


def example_event(example):
    """js= that puts an example on the page: its files copied where the browser can fetch them, its story."""
    inputs = Inputs.of_example(example, cached_copy)
    return show_in_browser(as_file_data(inputs.values()) + [example.story], max(FIRST_SHOWN, len(example.supports)))


def build_demo():
    fix_mcp_tools()
    with gr.Blocks(title="Few-shot segmentation with a ConvLSTM") as demo:
        gr.Markdown(text.INTRO)
        bundled = examples.list_examples()
        with gr.Row():
            example_buttons = [gr.Button(example.title, size="sm") for example in bundled]
        story = gr.Markdown("")
        count = gr.Number(FIRST_SHOWN, visible=False)  # support columns shown; read by the browser's events
        editors, mask_files, columns = [], [], []
        with gr.Row(equal_height=False):
            for i in range(SLOTS):
                with gr.Column(visible=i < FIRST_SHOWN, min_width=220) as column:
                    gr.Markdown(f"**Support {i + 1}**")  # in a narrow editor the toolbar hides its label
                    editors.append(photo_editor(f"Support {i + 1}", 300, show_label=False,
                                                elem_id=f"support-editor-{i + 1}"))
                    mask_files.append(mask_upload(f"Support {i + 1}'s mask", elem_id=f"support-mask-{i + 1}"))
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
                    sort=[str(k) for k in range(1, SLOTS + 1)],
                    color_map={"ConvLSTM": "#1e64ff", "logical OR": "#737373"},
                    label="IoU after each step (needs the query's true mask)")
        with gr.Accordion("Inside the ConvLSTM: which support did it let in, and what did each one do?", open=True):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=440):
                    gr.Markdown(text.EFFECTS_HELP)
                    panels["effects"] = gr.Markdown("", elem_id="effects")
                with gr.Column():
                    gr.Markdown(text.gates_help(handlers.model.config))
                    panels["gates"] = gr.Image(label="Gates per step", show_label=False,  # a label would cover
                                               elem_id="gates", buttons=["download", "fullscreen"])  # step 1's title
        with gr.Accordion("Does the order of the supports matter?", open=True):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=400):
                    gr.Markdown(text.ORDER_HELP)
                    with gr.Row():
                        reverse = gr.Button("Run them in reverse order", size="sm")
                        shuffle = gr.Button("Run them in a shuffled order", size="sm")
                    panels["order"] = gr.Markdown("", elem_id="order")
                with gr.Column(scale=2):
                    panels["order_pictures"] = gallery("Final masks: the given order and the other one",
                                                       "order-pictures", columns=4, height=240)
        assert sorted(panels) == sorted(PANELS), "every field of Answer needs a panel of the same name"
        page_run = gr.State(None)  # the last run, for the measurements after it and the order control

        with gr.Column(visible=False):  # not on the page: the twins Run reads (gradio_fixes, item 4), and the API
            twins = [photo_editor(f"Support {i + 1}", 300, visible=False) for i in range(SLOTS)]
            query_twin = photo_editor("Query", 360, visible=False)
            api_inputs = [receive_files(gr.Image(label="query", type="filepath")),
                          gr.File(label="supports", file_count="multiple"),
                          gr.File(label="masks", file_count="multiple"),
                          receive_files(gr.Image(label="query_mask", type="filepath"))]
            api_outputs = [gr.Gallery(label="convlstm_masks"), gr.Gallery(label="or_masks"), gr.JSON(label="numbers")]
            api_button = gr.Button("segment")

        page = Inputs(editors, mask_files, query, query_mask_file)
        read_by_run = Inputs(twins, mask_files, query_twin, query_mask_file)
        outputs = lambda names: [panels[name] for name in names]
        model_event = dict(concurrency_limit=1, concurrency_id="model")  # one model, one request at a time
        page_only = dict(api_visibility="private")  # serves the page only: not on the API page, not an MCP tool

        # The loading animation on one panel per event, not on every output: each animated panel is repainted
        # every frame, and on 2 cores the browser's painting is much of the wait for an answer.
        copy = f"(...values) => window.fssDemo.copy({json.dumps([e.elem_id for e in editors + [query]])}, values)"
        go.click(None, editors + [query], twins + [query_twin], js=copy
                 ).then(handlers.run, read_by_run.values(), outputs(PANELS) + [page_run],
                        show_progress_on=panels["convlstm"], api_name="run", api_visibility="undocumented",  # tests
                        **model_event
                 ).success(handlers.measure, page_run, outputs(MEASURES), show_progress_on=panels["effects"],
                           **model_event, **page_only)
        for button, how in ((reverse, "reversed"), (shuffle, "shuffled")):
            button.click(functools.partial(handlers.reorder, how=how), page_run, outputs(ORDER_PANELS),
                         show_progress_on=panels["order"], **model_event, **page_only)
        api_button.click(handlers.segment, api_inputs, api_outputs, api_name="segment", **model_event)

        for editor in editors + [query]:
            editor.clear(None, js=f"() => window.fssDemo.forget({json.dumps(editor.elem_id)})")
        add.click(None, count, columns + [count, add], js=f"(count) => window.fssDemo.addSupport(count, {SLOTS})")
        cleared = [None] * len(page.values()) + [getattr(Answer(), name) for name in PANELS] + [""]
        clear.click(None, count, page.values() + outputs(PANELS) + [story] + columns + [count, add],
                    js=show_in_browser(cleared, FIRST_SHOWN)
                    ).then(lambda: None, None, page_run, queue=False, **page_only)  # and forget the last run
        for button, example in zip(example_buttons, bundled):
            button.click(None, count, page.values() + [story] + columns + [count, add], js=example_event(example))
    return demo
