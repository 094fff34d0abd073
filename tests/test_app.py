"""The app's functions in-process, on files as Gradio hands them over (paths), with the bundled weights."""
import os

import numpy as np
import pytest
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData, ImageData
from PIL import Image

import app

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
    assert len(empty) == len(app.PANELS) and "warnings" not in app.PANELS
    assert all(value in (None, "") for value in empty)


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
        values = app.example_values(folder)
        m = app.MAX_SUPPORTS
        editors, masks, (query, truth) = values[:m], values[m:2 * m], values[2 * m:2 * m + 2]
        loaded = [(e["background"], mask) for e, mask in zip(editors, masks) if e is not None]
        assert len(loaded) >= 3 and query["background"].ndim == 3 and truth.shape == query["background"].shape[:2]
        assert all(mask.any() and mask.shape == image.shape[:2] for image, mask in loaded)
        answer = app.segment_episode(editors, masks, query, truth)  # what the example puts on the page runs as it is
        assert len(answer.convlstm) == len(loaded) and answer.iou_plot is not None and answer.warnings == []


def test_pictures_go_out_as_whole_jpeg_files_written_once():
    x, y = np.meshgrid(np.arange(80), np.arange(60))
    picture = np.dstack([x, y, np.full_like(x, 50)]).astype(np.uint8) * 2  # smooth: JPEG keeps it close
    [(path, caption)] = app.as_files([(picture, "a caption")])
    assert caption == "a caption" and path.endswith(".jpg")
    assert np.abs(np.asarray(Image.open(path), dtype=int) - picture).mean() < 2  # JPEG: close to the picture
    written = os.stat(path).st_mtime_ns
    assert app.as_files(picture) == path and os.stat(path).st_mtime_ns == written  # the same picture: not rewritten
    assert app.as_files("a summary") == "a summary" and app.as_files(None) is None
