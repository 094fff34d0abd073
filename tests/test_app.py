"""The app's functions in-process, on files as Gradio hands them over (paths), with the bundled weights: nothing here
depends on the numbers of a particular weights file, only on what must hold for any."""
import dataclasses
import os

import numpy as np
import pytest
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData, ImageData
from PIL import Image

import app
from fss_demo.metrics import iou

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
    pad = lambda items: list(items or []) + [None] * (app.MAX_SUPPORTS - len(items or []))
    return app.segment_episode(pad(supports), pad(mask_files), query, query_mask_file)


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
    empty = app.panel_values(app.Answer())
    assert len(empty) == len(app.PANELS) and "warnings" not in app.PANELS and "episode" not in app.PANELS
    assert all(value in (None, "", app.HIDDEN) for value in empty)  # downloads: hidden, with no file
    assert set(app.MEASURES + app.ORDER_PANELS) <= set(app.PANELS)


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
    mask_slot, editor = app.mask_upload("mask"), app.photo_editor("photo", 300)
    assert mask_slot.preprocess(ImageData(path=str(junk), orig_name="junk.jpg")) == str(junk)
    value = editor.preprocess(EditorData(background=FileData(path=str(junk)), layers=[FileData(path=str(junk))]))
    assert value["background"] == str(junk) and value["layers"] == [str(junk)]
    canvas = editor.convert_and_format_image(b"the browser's canvas bytes")  # what the browser's upload route gives
    assert open(canvas, "rb").read() == b"the browser's canvas bytes"


def test_examples_load_into_the_inputs_and_run():
    examples = app.examples.list_examples()
    assert len(examples) >= 2
    for folder in examples.values():
        values, columns_shown, story = app.example_inputs(folder)
        m = app.MAX_SUPPORTS
        editors, masks, (query, truth) = values[:m], values[m:2 * m], values[2 * m:]
        loaded = [(e["background"], mask) for e, mask in zip(editors, masks) if e is not None]
        assert len(loaded) >= 3 and columns_shown == max(app.FIRST_SUPPORTS, len(loaded)) and story
        # copies in Gradio's upload folder: the browser fetches them there and may send them back as inputs
        assert all(path.startswith(app.get_upload_folder()) for pair in loaded for path in pair)
        answer = app.segment_episode(editors, masks, query, truth)  # what the example puts on the page runs as it is
        assert len(answer.convlstm) == len(loaded) and answer.iou_plot is not None and answer.warnings == []
        assert answer.effects == app.MEASURING and answer.episode.truth is not None


def test_examples_reach_the_browser_as_files_it_can_fetch():
    values, _, _ = app.example_inputs(app.examples.list_examples()["Example: five good supports"])
    editor = app.as_file_data(values[0])
    assert editor["layers"] == [] and editor["composite"] is None
    assert editor["background"] == {"path": values[0]["background"], "orig_name": "support1.jpg",
                                    "meta": {"_type": "gradio.FileData"}}
    js = app.browser_event(app.as_file_data(values) + ["a story"], 5)
    assert js.startswith("(count) => {") and '"a story"' in js and "gradio_api/file=" in js


# ---------------------------------------------------------------------------------------------------------------
# Issue 11: each support's effect, order, the endpoint, the downloads


@pytest.fixture(scope="module")
def bad_support_run():
    """The bundled 5-shot example with a misleading support 2, run as the page runs it: its Answer."""
    values, _, _ = app.example_inputs(app.examples.list_examples()["Example: a misleading support at step 2"])
    m = app.MAX_SUPPORTS
    return app.segment_episode(values[:m], values[m:2 * m], *values[2 * m:])


def test_each_supports_effect_is_measured(bad_support_run):
    episode = bad_support_run.episode
    effects, seconds = app.support_effects(episode)
    assert [e.number for e in effects] == [1, 2, 3, 4, 5] and seconds > 0
    assert effects[0].admission == 1.0 and all(0 <= e.admission <= 1 for e in effects)
    assert all(0 <= e.gate_on_object <= 1 and 0 <= e.mask_change <= 1 for e in effects)
    # leaving out the last support gives the answer after the others: any weights
    final, before = episode.masks[-1], episode.masks[-2]
    assert effects[-1].mask_change == pytest.approx(1 - iou(final, before), abs=1e-9)
    assert effects[-1].iou_effect == pytest.approx(iou(final, episode.truth) - iou(before, episode.truth), abs=1e-9)

    table = app.effects_table(effects, 0.25, scored=True)
    lines = table.splitlines()
    assert lines[0] == ("| step | support | admission | input gate on the object | final mask change if left out "
                        "| IoU effect |")
    assert len([line for line in lines if line.startswith("| ") and line[2].isdigit()]) == 5
    assert lines[2].startswith("| 1 | 1 | 1.00 | ")
    assert table.endswith("Leaving each support out took 0.25 s: one pass of the backbone over the query and 5 runs "
                          "of the small head, on the cached support features.")
    assert "stands out" in table


def test_without_a_true_mask_the_table_says_how_to_get_the_iou_effect(bad_support_run):
    episode = dataclasses.replace(bad_support_run.episode, truth=None)
    effects, _ = app.support_effects(episode)
    table = app.effects_table(effects, 0.1, scored=False)
    assert "IoU effect" not in table.splitlines()[0] and all(e.iou_effect is None for e in effects)
    assert "Give the query's true mask to see each support's effect on the IoU." in table


def test_with_one_support_there_is_nothing_to_leave_out(bad_support_run):
    episode = bad_support_run.episode
    one = dataclasses.replace(episode, supports=episode.supports[:1], masks=episode.masks[:1],
                              or_masks=episode.or_masks[:1], admissions=episode.admissions[:1],
                              gate_on_object=episode.gate_on_object[:1])
    effects, _ = app.support_effects(one)
    assert effects[0].mask_change is None and effects[0].iou_effect is None
    table = app.effects_table(effects, 0.05, scored=True)
    assert table.splitlines()[2] == f"| 1 | 1 | 1.00 | {effects[0].gate_on_object:.2f} | – | – |"
    assert table.endswith("With one support there is nothing to leave out.")


def effect(number, gate, mask_change, iou_effect=None, admission=1.0):
    return app.SupportEffect(number, number, admission, gate, mask_change, iou_effect)


def test_a_support_with_a_dim_gate_is_named_with_what_leaving_it_out_does():
    bad = [effect(1, 0.55, 0.04, 0.01), effect(2, 0.10, 0.02, -0.03, admission=0.2), effect(3, 0.50, 0.05, 0.02)]
    assert app.standout(bad) == ("Support 2 stands out: input gate 0.10 on the object against 0.53 for the others "
                                 "(median), admission 0.20; leaving it out raises the final IoU by 3.0 points.")
    kept_out = [effect(1, 0.55, 0.04), effect(2, 0.02, 0.001, admission=0.03), effect(3, 0.50, 0.05)]
    assert app.standout(kept_out).endswith("admission 0.03; leaving it out changes the final mask by 0.1%.")
    alike = [effect(1, 0.55, 0.04, 0.01), effect(2, 0.51, 0.02, -0.03), effect(3, 0.50, 0.05, 0.02)]
    assert app.standout(alike) == "No support's input gate stands out (0.50 to 0.55 on the object)."


def test_another_order_changes_the_convlstm_and_never_the_or(bad_support_run):
    episode = bad_support_run.episode
    text, pictures = app.reorder(episode, "reversed")
    assert text.startswith("**Reversed order** (supports 5, 4, 3, 2, 1 instead of 1, 2, 3, 4, 5): the ConvLSTM's "
                           "final mask ")
    assert text.endswith("The logical OR's final mask is the same, pixel for pixel: an OR of the same 1-shot masks "
                         "does not depend on their order.")
    reversed_mask = app.model.segment(episode.query, episode.pairs[::-1]).masks[-1]
    before, after = (f"{100 * score:.0f}%" for score in episode.ious([episode.masks[-1], reversed_mask]))
    assert (f"its IoU stays at {before}" if before == after else f"its IoU goes from {before} to {after}") in text
    assert [caption for _, caption in pictures] == ["ConvLSTM, given", "ConvLSTM, reversed", "OR, given",
                                                     "OR, reversed"]
    np.testing.assert_array_equal(pictures[2][0], pictures[3][0])  # the OR's final masks are the same
    text, _ = app.reorder(episode, "shuffled", np.random.default_rng(0))
    order = text.split("(supports ")[1].split(" instead")[0]
    assert sorted(order.split(", ")) == ["1", "2", "3", "4", "5"] and order != "1, 2, 3, 4, 5"


def test_the_order_control_explains_what_it_needs(bad_support_run):
    with pytest.raises(ValueError, match="^Press Run first: this runs the supports of the last run again"):
        app.reorder(None, "reversed")
    episode = bad_support_run.episode
    one = dataclasses.replace(episode, supports=episode.supports[:1], masks=episode.masks[:1],
                              or_masks=episode.or_masks[:1])
    with pytest.raises(ValueError, match="^With one support there is no other order: add a support and press Run.$"):
        app.reorder(one, "shuffled")


def test_the_downloads_are_the_final_mask_and_the_whole_run(bad_support_run):
    episode = bad_support_run.episode
    table, mask_download, picture_download = app.measure(episode)
    assert "| step | support |" in table
    assert mask_download["visible"] and mask_download["value"].endswith("final_mask.png")
    saved = np.asarray(Image.open(mask_download["value"]))
    np.testing.assert_array_equal(saved, episode.masks[-1].astype(np.uint8) * 255)  # exact: PNG, white = object
    picture = np.asarray(Image.open(picture_download["value"]))
    assert picture_download["value"].endswith(".png") and picture.ndim == 3
    assert picture.shape[1] >= 5 * app.SLIDE_TILE and picture.shape[0] >= 3 * app.SLIDE_TILE  # 3 rows of 5


def test_the_picture_of_a_one_support_run_is_wide_enough_for_its_titles(bad_support_run):
    episode = bad_support_run.episode
    one = dataclasses.replace(episode, supports=episode.supports[:1], masks=episode.masks[:1],
                              or_masks=episode.or_masks[:1])
    picture = app.run_picture(one)
    title = "Logical OR of the 1-shot predictions of supports 1..k"
    assert picture.shape[1] > app.viz._font(20).getlength(title) > app.SLIDE_TILE
    assert (picture[:, -4:] == 255).all()  # the titles end before the right edge


def test_the_endpoint_returns_the_masks_and_numbers_per_step():
    folder = app.examples.list_examples()["Example: five good supports"]
    path = lambda name: os.path.join(folder, name)
    supports, masks = [path(f"support{k}.jpg") for k in (1, 2, 3)], [path(f"support{k}_mask.png") for k in (1, 2, 3)]
    convlstm, logical_or, numbers = app.segment(path("query.jpg"), supports, masks, path("query_mask.png"))
    query = np.asarray(Image.open(path("query.jpg")))
    assert [caption for _, caption in convlstm] == [f"convlstm after {k} support(s)" for k in (1, 2, 3)]
    final = np.asarray(Image.open(convlstm[-1][0]))
    assert final.shape == query.shape[:2] and set(np.unique(final)) <= {0, 255} and len(logical_or) == 3
    steps = numbers["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3] and steps[0]["admission"] == 1.0
    assert all(0 <= s["iou"] <= 1 and 0 <= s["or_iou"] <= 1 for s in steps) and steps[0]["iou"] == steps[0]["or_iou"]
    assert numbers["threshold"] == app.model.threshold and numbers["seconds"]["leave_one_out"] > 0
    _, _, unscored = app.segment(path("query.jpg"), supports[:2], masks[:2])
    assert [s["iou"] for s in unscored["steps"]] == [None, None] and unscored["steps"][1]["iou_effect"] is None


def test_the_endpoint_says_what_is_wrong(tmp_path):
    folder = app.examples.list_examples()["Example: five good supports"]
    photo, mask = os.path.join(folder, "support1.jpg"), os.path.join(folder, "support1_mask.png")
    everything = str(tmp_path / "everything.png")
    Image.new("L", Image.open(photo).size, 255).save(everything)
    cases = [((None, [photo], [mask]), "query: give the photo in which to find the object."),
             ((photo, [], []), "supports: give at least one support photo."),
             ((photo, [photo, photo], [mask]), "masks: give one mask per support photo (2 photo(s), 1 mask(s))."),
             ((photo, [photo] * 11, [mask] * 11), "supports: 11 given; at most 10 are taken."),
             ((photo, [photo], [everything]), "Support 1: the mask covers the whole image; mark only the object.")]
    for arguments, message in cases:
        with pytest.raises(ValueError) as caught:
            app.segment(*arguments)
        assert str(caught.value) == message


def test_pictures_go_out_as_whole_jpeg_files_written_once():
    x, y = np.meshgrid(np.arange(80), np.arange(60))
    picture = np.dstack([x, y, np.full_like(x, 50)]).astype(np.uint8) * 2  # smooth: JPEG keeps it close
    [(path, caption)] = app.as_files([(picture, "a caption")])
    assert caption == "a caption" and path.endswith(".jpg")
    assert np.abs(np.asarray(Image.open(path), dtype=int) - picture).mean() < 2  # JPEG: close to the picture
    written = os.stat(path).st_mtime_ns
    assert app.as_files(picture) == path and os.stat(path).st_mtime_ns == written  # the same picture: not rewritten
    assert app.as_files("a summary") == "a summary" and app.as_files(None) is None
