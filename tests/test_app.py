"""The app's handlers in-process, on files as Gradio hands them over (paths), with the bundled weights: nothing here
depends on the numbers of a particular weights file, only on what must hold for any. (The launched app, through
gradio_client and a browser: test_app_live.py; the measurements themselves: test_analysis.py.)"""
import dataclasses
import os

import gradio as gr
import numpy as np
import pytest
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData, ImageData
from gradio.utils import get_upload_folder
from PIL import Image

from demo import gradio_fixes, handlers, layout, panels, text
from demo.inputs import FIRST_SHOWN, SLOTS, Inputs
from fss_demo import analysis, examples, images, viz

BAD_FILES = {  # file name -> contents that no image reader accepts
    "text.jpg": b"this is not a picture",
    "empty.png": b"",
}


@pytest.fixture
def save(tmp_path):
    """save(name, array, PIL image or bytes) -> path of a file in tmp_path."""
    def save(name, content, **options):
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            image = content if isinstance(content, Image.Image) else Image.fromarray(content)
            image.save(path, **options)
        return str(path)
    return save


def painted(save, name, image, mask=None):
    """An editor value as the browser sends it: the photo, and a transparent layer with the strokes."""
    layer = np.zeros(image.shape[:2] + (4,), np.uint8)
    if mask is not None:
        layer[mask] = (230, 30, 30, 255)
    return {"background": save(f"{name}.png", image), "layers": [save(f"{name}_layer.png", layer)], "composite": None}


def photo(save, name, image):
    return {"background": save(f"{name}.png", image), "layers": [], "composite": None}


def call(supports, query, mask_files=None, query_mask_file=None):
    """The Answer of the page's Run on these editor values, with the run's warnings as `answer.warnings`."""
    pad = lambda items: list(items or []) + [None] * (SLOTS - len(items or []))
    run, answer = handlers.run_page(Inputs(pad(supports), pad(mask_files), query, query_mask_file))
    answer.warnings, answer.run = run.warnings, run
    return answer


def test_a_painted_episode_gives_k_predictions_and_scores(square_episode, save):
    (query, truth), supports = square_episode
    answer = call([painted(save, f"s{n}", i, m) for n, (i, m) in enumerate(supports)], painted(save, "q", query, truth))
    assert len(answer.supports) == len(answer.convlstm) == len(answer.logical_or) == 3
    assert answer.iou_plot is not None and len(answer.iou_plot) == 6  # 3 steps x (ConvLSTM, OR)
    assert "IoU" in answer.summary and answer.warnings == []
    picture = answer.convlstm[0][0]
    assert picture.dtype == np.uint8 and picture.shape == query.shape
    assert answer.gates.dtype == np.uint8 and answer.gates.shape[0] > 3 * 200  # one row of gate maps per step


def test_every_panel_is_an_answer_field_and_clearing_empties_them():
    empty = [getattr(panels.Answer(), name) for name in panels.PANELS]
    assert all(value in (None, "", panels.HIDDEN) for value in empty)  # downloads: hidden, with no file
    assert set(panels.MEASURES + panels.ORDER_PANELS) <= set(panels.PANELS)


def test_uploaded_masks_of_another_size_and_rgba_images(square_episode, save):
    (query, _), supports = square_episode
    image, mask = supports[0]
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    small_mask = (mask[::2, ::2] * 255).astype(np.uint8)
    answer = call([photo(save, "rgba", rgba)], photo(save, "q", query), [save("small.png", small_mask)])
    assert len(answer.convlstm) == 1 and answer.iou_plot is None and answer.warnings == []


def test_masks_are_read_as_the_api_reads_them(square_episode, save):
    """0/1 label maps, palette masks and white-on-black JPEGs are all masks: nonzero (or white) = object."""
    (query, _), supports = square_episode
    (image1, mask1), (image2, mask2), (image3, mask3) = supports
    label_map = save("labels.png", mask1.astype(np.uint8))  # 0/1: black to the eye
    palette = Image.fromarray(mask2.astype(np.uint8) * 3)  # object = index 3, shown dark red
    palette.putpalette([0, 0, 0] * 3 + [120, 0, 0] + [0, 0, 0] * 252)
    palette_path = save("palette.png", palette)
    noisy = save("noisy.jpg", (mask3 * 255).astype(np.uint8), quality=60)
    images = [photo(save, f"s{n}", i) for n, i in enumerate((image1, image2, image3))]
    answer = call(images, photo(save, "q", query), [label_map, palette_path, noisy])
    assert answer.warnings == [] and "Ran 3 support(s): 1, 2, 3." in answer.summary


def test_skipped_supports_are_explained_when_it_runs(square_episode, save):
    (query, _), supports = square_episode
    image, mask = supports[0]
    values = [painted(save, "a", image), painted(save, "b", image, mask), painted(save, "c", image, np.ones_like(mask))]
    answer = call(values, photo(save, "q", query))
    assert len(answer.convlstm) == 1 and "Ran 1 support(s): 2." in answer.summary
    assert answer.warnings == ["Support 1 has no mask: paint the object or upload a mask. Skipped.",
                               "Support 3: the mask covers the whole image; mark only the object. Skipped."]
    assert all(warning in answer.summary for warning in answer.warnings)  # pop-ups fade; the summary stays


def test_skipped_supports_are_explained_when_none_is_left(square_episode, save):
    (query, _), supports = square_episode
    image, mask = supports[0]
    values = [painted(save, "a", image), None, painted(save, "c", image, np.ones_like(mask))]
    with pytest.raises(ValueError) as caught:
        call(values, photo(save, "q", query))
    assert str(caught.value) == (
        "Add at least one support: an image with the object painted on it (or a mask uploaded). "
        "Support 1 has no mask: paint the object or upload a mask. Skipped. "
        "Support 3: the mask covers the whole image; mark only the object. Skipped.")


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_are_named_by_slot(square_episode, save, name):
    (query, truth), supports = square_episode
    image, mask = supports[0]
    bad = save(name, BAD_FILES[name])
    good = photo(save, "s1", image), save("m1.png", (mask * 255).astype(np.uint8))
    unreadable = f"'{name}' is not an image file that can be read"

    answer = call([good[0], {"background": bad, "layers": [], "composite": None}], photo(save, "q", query),
                  [good[1], save("m2.png", (mask * 255).astype(np.uint8))])
    assert answer.warnings[0].startswith(f"Support 2's image: {unreadable}") and answer.warnings[0].endswith("Skipped.")
    answer = call([good[0], photo(save, "s2", image)], photo(save, "q", query), [good[1], bad])
    assert answer.warnings[0].startswith(f"Support 2's mask: {unreadable}")
    answer = call([good[0]], photo(save, "q", query), [good[1]], query_mask_file=bad)
    assert answer.warnings[0].startswith(f"The query's true mask: {unreadable}") and answer.iou_plot is None
    with pytest.raises(ValueError, match=f"^The query image: {unreadable}"):
        call([good[0]], {"background": bad, "layers": [], "composite": None}, [good[1]])


def test_missing_inputs_give_clear_messages(square_episode, save):
    (query, _), supports = square_episode
    image, mask = supports[0]
    with pytest.raises(ValueError, match="^Add a query image: the photo in which to find the object.$"):
        call([painted(save, "a", image, mask)], None)
    with pytest.raises(ValueError, match="^Add at least one support: .*mask uploaded\\).$"):
        call([], photo(save, "q", query))
    with pytest.raises(ValueError, match="Support 1 has a mask but no image. Skipped.$"):
        call([None], photo(save, "q", query), [save("m.png", (mask * 255).astype(np.uint8))])
    assert len(call([painted(save, "a", image, mask)], photo(save, "q", query)).convlstm) == 1


def test_image_inputs_hand_over_the_file_undecoded(tmp_path):
    """Gradio would decode uploads before the handler (and fail on a bad one with a bare "Error")."""
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a picture")
    mask_slot, editor = layout.mask_upload("mask"), layout.photo_editor("photo", 300)
    assert mask_slot.preprocess(ImageData(path=str(junk), orig_name="junk.jpg")) == str(junk)
    value = editor.preprocess(EditorData(background=FileData(path=str(junk)), layers=[FileData(path=str(junk))]))
    assert value["background"] == str(junk) and value["layers"] == [str(junk)]
    canvas = editor.convert_and_format_image(b"the browser's canvas bytes")  # what the browser's upload route gives
    assert open(canvas, "rb").read() == b"the browser's canvas bytes"


def test_examples_load_into_the_inputs_and_run():
    bundled = examples.list_examples()
    assert len(bundled) >= 2
    for example in bundled:
        inputs = Inputs.of_example(example, gradio_fixes.cached_copy)
        loaded = [(e["background"], mask) for e, mask in zip(inputs.editors, inputs.masks) if e is not None]
        assert len(loaded) >= 3 and example.story
        # copies in Gradio's upload folder: the browser fetches them there and may send them back as inputs
        assert all(path.startswith(get_upload_folder()) for pair in loaded for path in pair)
        run, answer = handlers.run_page(inputs)  # what the example puts on the page runs as it is
        assert len(answer.convlstm) == len(loaded) and answer.iou_plot is not None and run.warnings == []
        assert answer.effects == panels.MEASURING and run.episode.truth is not None


def test_examples_reach_the_browser_as_files_it_can_fetch():
    example = examples.read_example("good")
    inputs = Inputs.of_example(example)
    editor = gradio_fixes.as_file_data(inputs.editors[0])
    assert editor["layers"] == [] and editor["composite"] is None
    assert editor["background"] == {"path": example.supports[0][0], "orig_name": "support1.jpg",
                                    "meta": {"_type": "gradio.FileData"}}
    js = layout.example_event(example)
    assert js.startswith("(count) => window.fssDemo.show(count, [") and js.endswith(f", {FIRST_SHOWN}, {SLOTS})")
    assert example.story.replace('"', '\\"')[:30] in js
    assert "window.fssDemo = {" in layout.BROWSER_JS and "show(count, values, shown, slots)" in layout.BROWSER_JS


# ---------------------------------------------------------------------------------------------------------------
# The measurements after a run, the order control, the endpoint, the downloads


@pytest.fixture(scope="module")
def bad_support_run():
    """The bundled 5-shot example with a misleading support 2, run as the page runs it: its PageRun."""
    run, _ = handlers.run_page(Inputs.of_example(examples.read_example("bad_support")))
    return run


def test_the_gate_titles_read_a_dash_where_nothing_was_found(bad_support_run, monkeypatch):
    """A step whose mask is empty has no object to average the input gate on: its title says "–", not "nan"."""
    episode = bad_support_run.episode
    _, seg = analysis.Episode.run(handlers.model, episode.query, episode.supports, episode.numbers)
    nothing = dataclasses.replace(seg, masks=[np.zeros_like(mask) for mask in seg.masks])
    titles = []
    monkeypatch.setattr(viz, "gate_strip", lambda *args, title, **options: titles.append(title) or np.zeros((4, 4, 3)))
    monkeypatch.setattr(viz, "stack_rows", lambda strips: strips[0])
    panels.gate_picture(episode, nothing)
    assert len(titles) == 5 and all("nan" not in title and "input gate – on the object" in title for title in titles)


def test_the_order_control_says_what_it_needs(bad_support_run):
    import gradio as gr

    with pytest.raises(gr.Error) as caught:
        handlers.reorder(None, "reversed")
    assert caught.value.message.startswith("Press Run first: this runs the supports of the last run again")
    text, pictures = handlers.reorder(bad_support_run, "reversed")
    assert text.startswith("**Reversed order** (supports 5, 4, 3, 2, 1 instead of 1, 2, 3, 4, 5)")
    assert [caption for _, caption in pictures] == ["ConvLSTM, given", "ConvLSTM, reversed", "OR, given",
                                                     "OR, reversed"]
    assert all(path.endswith(".jpg") and os.path.isfile(path) for path, _ in pictures)


def test_the_downloads_are_the_final_mask_and_the_whole_run(bad_support_run):
    episode = bad_support_run.episode
    table, mask_download, picture_download = handlers.measure(bad_support_run)
    assert "| step | support |" in table and "stands out" in table
    assert mask_download["visible"] and mask_download["value"].endswith("final_mask.png")
    saved = np.asarray(Image.open(mask_download["value"]))
    np.testing.assert_array_equal(saved, episode.masks[-1].astype(np.uint8) * 255)  # exact: PNG, white = object
    picture = np.asarray(Image.open(picture_download["value"]))
    assert picture_download["value"].endswith(".png") and picture.ndim == 3
    assert picture.shape[1] >= 5 * panels.SLIDE_TILE and picture.shape[0] >= 3 * panels.SLIDE_TILE  # 3 rows of 5


def test_the_downloaded_mask_of_a_photo_over_2048_pixels_is_at_its_own_size(save, square_episode):
    (_, _), supports = square_episode
    image, mask = supports[0]
    big = np.asarray(Image.fromarray(image).resize((2600, 1950)))
    run, _ = handlers.run_page(Inputs.of_files([save("s.png", image)], [save("m.png", (mask * 255).astype(np.uint8))],
                                               save("big.png", big)))
    assert run.size == (1950, 2600) and run.episode.query.shape[:2] == (1536, 2048)  # worked on at 2048
    _, mask_download, _ = handlers.measure(run)
    downloaded = np.asarray(Image.open(mask_download["value"]))
    assert downloaded.shape == (1950, 2600) and set(np.unique(downloaded)) <= {0, 255}
    np.testing.assert_array_equal(downloaded > 127, images.resize_mask(run.episode.masks[-1], (1950, 2600)))


def test_the_picture_of_a_one_support_run_is_wide_enough_for_its_titles(bad_support_run):
    episode = bad_support_run.episode
    one = dataclasses.replace(episode, supports=episode.supports[:1], numbers=episode.numbers[:1],
                              masks=episode.masks[:1], or_masks=episode.or_masks[:1])
    picture = panels.run_picture(one)
    title = "Logical OR of the 1-shot predictions of supports 1..k"
    assert picture.shape[1] > viz._font(20).getlength(title) > panels.SLIDE_TILE
    assert (picture[:, -4:] == 255).all()  # the titles end before the right edge


def test_the_endpoint_returns_the_masks_and_numbers_per_step():
    example = examples.read_example("good")
    supports, masks = [image for image, _ in example.supports[:3]], [mask for _, mask in example.supports[:3]]
    convlstm, logical_or, numbers = handlers.segment(example.query, supports, masks, example.truth)
    query = np.asarray(Image.open(example.query))
    assert [caption for _, caption in convlstm] == [f"convlstm after {k} support(s)" for k in (1, 2, 3)]
    final = np.asarray(Image.open(convlstm[-1][0]))
    assert final.shape == query.shape[:2] and set(np.unique(final)) <= {0, 255} and len(logical_or) == 3
    steps = numbers["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3] and steps[0]["admission"] == 1.0
    assert all(0 <= s["iou"] <= 1 and 0 <= s["or_iou"] <= 1 for s in steps) and steps[0]["iou"] == steps[0]["or_iou"]
    assert numbers["threshold"] == handlers.model.threshold and numbers["seconds"]["leave_one_out"] > 0
    _, _, unscored = handlers.segment(example.query, supports[:2], masks[:2])
    assert [s["iou"] for s in unscored["steps"]] == [None, None] and unscored["steps"][1]["iou_effect"] is None


def test_the_endpoint_says_what_is_wrong(tmp_path):
    import gradio as gr

    example = examples.read_example("good")
    photo, mask = example.supports[0]
    everything = str(tmp_path / "everything.png")
    Image.new("L", Image.open(photo).size, 255).save(everything)
    cases = [((None, [photo], [mask]), "query: give the photo in which to find the object."),
             ((photo, [], []), "supports: give at least one support photo with a mask of the object to find."),
             ((photo, [photo, photo], [mask]), "masks: give one mask per support photo (2 photo(s), 1 mask(s))."),
             ((photo, [photo] * 11, [mask] * 11), "supports: 11 given; at most 10 are taken."),
             ((photo, [photo], [everything]), "Support 1: the mask covers the whole image; mark only the object.")]
    for arguments, message in cases:
        with pytest.raises(gr.Error) as caught:
            handlers.segment(*arguments)
        assert caught.value.message == message


def test_pictures_go_out_as_whole_jpeg_files_written_once():
    x, y = np.meshgrid(np.arange(80), np.arange(60))
    picture = np.dstack([x, y, np.full_like(x, 50)]).astype(np.uint8) * 2  # smooth: JPEG keeps it close
    [(path, caption)] = gradio_fixes.as_files([(picture, "a caption")])
    assert caption == "a caption" and path.endswith(".jpg")
    assert np.abs(np.asarray(Image.open(path), dtype=int) - picture).mean() < 2  # JPEG: close to the picture
    written = os.stat(path).st_mtime_ns
    assert gradio_fixes.as_files(picture) == path and os.stat(path).st_mtime_ns == written  # not rewritten
    assert gradio_fixes.as_files("a summary") == "a summary" and gradio_fixes.as_files(None) is None


def test_the_gates_help_describes_only_what_the_loaded_model_runs():
    """A model loaded through FSS_DEMO_WEIGHTS may run without re-judging or the discriminant, or with self-support
    (on every answer, or growing with the supports): the help says what this config switches on, and nothing else."""
    config = handlers.model.config
    shown = lambda **settings: text.gates_help(dataclasses.replace(config, **settings))
    bare = shown(rejudge_first=False, self_support=0.0, discriminant=0.0)
    assert "admission" in bare and "input gate" in bare
    assert "starts again" not in bare and "classifier" not in bare and "query itself" not in bare
    assert "starts again" in shown(rejudge_first=True, self_support=0.0, discriminant=0.0)
    assert "classifier" in shown(rejudge_first=False, self_support=0.0, discriminant=0.25)
    assert "query itself" in shown(rejudge_first=False, self_support=0.2, discriminant=0.0)
    fixed = shown(rejudge_first=False, self_support=0.2, self_support_grows=False, discriminant=0.0)
    assert "Every answer" in fixed
    growing = shown(rejudge_first=False, self_support=0.2, self_support_grows=True, discriminant=0.0)
    assert "query itself" in growing and "every support let in" in growing and "Every answer" not in growing
    assert "query itself" not in shown(rejudge_first=False, self_support=0.0, self_support_grows=True,
                                       discriminant=0.0)
    page = layout.build_demo()
    markdowns = [block.value for block in page.blocks.values() if isinstance(block, gr.Markdown)]
    assert text.gates_help(config).strip() in markdowns  # Gradio strips a Markdown value
