"""The launched app over real HTTP: gradio_client through Gradio's preprocessing and the real queue (the MCP tool:
test_mcp.py; the browser: test_browser.py)."""
import os
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from .live import ROOT, App, example, iou_of


def test_client_runs_an_episode(server):
    supports, masks, files = example()
    answer = App(server).run(supports, masks, files.query, files.truth)
    k = len(supports)
    assert len(answer["supports"]) == len(answer["convlstm"]) == len(answer["logical_or"]) == k
    assert answer["gates"] is not None and len(answer["iou_plot"]["data"]) == 2 * k
    assert answer["summary"].startswith(f"Ran {k} support(s): ") and "IoU" in answer["summary"]


# ---------------------------------------------------------------------------------------------------------------
# The programmatic endpoint: one named endpoint, also an MCP tool; the page's own events hidden


def test_the_api_page_shows_only_the_segment_endpoint(server):
    from gradio_client import Client

    api = Client(server, verbose=False, ssl_verify=False).view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/segment"] and not api["unnamed_endpoints"]
    parameters = api["named_endpoints"]["/segment"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == ["query", "supports", "masks", "query_mask"]
    assert [p["parameter_has_default"] for p in parameters] == [False, False, False, True]


def test_the_segment_endpoint_returns_masks_and_numbers_per_step(server):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    photos, mask_files, files = example()
    supports, masks = [handle_file(p) for p in photos], [handle_file(p) for p in mask_files]
    client = Client(server, verbose=False, ssl_verify=False)
    convlstm, logical_or, numbers = client.predict(query=handle_file(files.query), supports=supports,
                                                   masks=masks, query_mask=handle_file(files.truth),
                                                   api_name="/segment")
    k, query = len(supports), Image.open(files.query)
    assert len(convlstm) == len(logical_or) == len(numbers["steps"]) == k
    read = lambda item: np.asarray(Image.open(item["image"])) > 127
    last, before = read(convlstm[-1]), read(convlstm[-2])
    assert last.shape == (query.height, query.width)
    steps = numbers["steps"]
    assert steps[0]["admission"] == 1.0 and all(0 <= s["admission"] <= 1 for s in steps)
    assert all(0 <= s["iou"] <= 1 and 0 <= s["input_gate_on_object"] <= 1 for s in steps)
    # leaving out the last support gives the answer after the others: for any weights
    union = np.logical_or(last, before).sum()
    assert steps[-1]["mask_change_without_it"] == pytest.approx(
        1 - np.logical_and(last, before).sum() / union if union else 0, abs=1e-4)
    with pytest.raises(AppError, match=re.escape("masks: give one mask per support photo (2 photo(s), 1 mask(s)).")):
        client.predict(query=handle_file(files.query), supports=supports[:2], masks=masks[:1],
                       api_name="/segment")


def test_a_misplaced_first_support_is_re_judged_and_the_page_says_so(server):
    """The bad-support example with its misplaced support first, through /segment and the page's /run: the last
    run started from another support, support 1's admission is low, and the summary tells the person why."""
    from gradio_client import Client, handle_file

    photos, mask_files, files = example()
    photos, mask_files = [photos[1], photos[0]] + photos[2:], [mask_files[1], mask_files[0]] + mask_files[2:]
    numbers = Client(server, verbose=False, ssl_verify=False).predict(
        query=handle_file(files.query), supports=[handle_file(p) for p in photos],
        masks=[handle_file(m) for m in mask_files], api_name="/segment")[-1]
    assert numbers["order"][0] != 1 and sorted(numbers["order"]) == [1, 2, 3, 4, 5]
    assert numbers["steps"][0]["admission"] < 0.5
    summary = App(server).run(photos, mask_files, files.query, files.truth)["summary"]
    assert (f"The later supports disagreed with support 1 (on average they let it in at under 0.5), so for the final "
            f"mask the ConvLSTM started from support {numbers['order'][0]} instead (order "
            f"{', '.join(map(str, numbers['order']))}); in that run support 1 was let in at ") in summary


# ---------------------------------------------------------------------------------------------------------------
# Bad uploads: each reaches the person as a sentence that names the slot, and the app keeps serving


def png_header_only(width, height):
    """A PNG whose header declares width x height, with next to no pixel data: 0x0, or a decompression bomb."""
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


UNREADABLE = "is not an image file that can be read"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """{path of a bad file: what the message must say about it (a regular expression)}."""
    folder = tmp_path_factory.mktemp("bad")
    photo = open(os.path.join(ROOT, "examples", "good", "query.jpg"), "rb").read()
    contents = {"text.jpg": b"this is not a picture", "truncated.jpg": photo[:len(photo) // 2], "empty.jpg": b"",
                "zero.png": png_header_only(0, 0), "bomb.png": png_header_only(30000, 30000)}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    problems = {name: UNREADABLE for name in contents}
    problems["zero.png"] = f"({UNREADABLE}|is empty)"
    problems["bomb.png"] = "is too large to open safely"
    return {str(folder / name): problem for name, problem in problems.items()}


def test_bad_uploads_name_their_slot_and_the_next_request_works(server, bad_files):
    from gradio_client.exceptions import AppError

    app = App(server)
    (image, *_), (mask, *_), files = example("good")
    query = files.query
    for bad, problem in bad_files.items():
        says = lambda slot: rf"{slot}: '{re.escape(os.path.basename(bad))}' {problem}"
        # a bad support is skipped with its reason, and the good one runs
        summary = app.run([image, bad], [mask, mask], query)["summary"]
        assert summary.startswith("Ran 1 support(s): 1.")
        assert re.search(says("Support 2's image") + r".*\. Skipped\.", summary), summary
        summary = app.run([image, image], [mask, bad], query)["summary"]
        assert re.search(says("Support 2's mask") + r".*\. Skipped\.", summary), summary
        # a bad query image stops the request with its reason
        with pytest.raises(AppError, match="^" + says("The query image")):
            app.run([image], [mask], bad)
    # and a good request after the last one
    assert app.run([image], [mask], query)["summary"].startswith("Ran 1 support(s): 1.")


def test_when_no_support_is_left_the_message_says_why_each_was_skipped(server, bad_files, tmp_path):
    from gradio_client.exceptions import AppError

    (image, *_), _, files = example("good")
    query = files.query
    text_file = next(path for path in bad_files if path.endswith("text.jpg"))
    everything = str(tmp_path / "everything.png")
    Image.new("L", (40, 30), 255).save(everything)
    with pytest.raises(AppError) as caught:
        App(server).run([text_file, image, image], [None, None, everything], query)
    expected = (r"Add at least one support: an image with the object painted on it \(or a mask uploaded\)\. "
                rf"Support 1's image: 'text\.jpg' {UNREADABLE}.*\. Skipped\. "
                r"Support 2 has no mask: paint the object or upload a mask\. Skipped\. "
                r"Support 3: the mask covers the whole image; mark only the object\. Skipped\.")
    assert re.fullmatch(expected, str(caught.value)), caught.value


def test_label_map_and_palette_masks_are_accepted(server, tmp_path):
    photos, masks, files = example("good")
    label_map, palette = str(tmp_path / "labels.png"), str(tmp_path / "palette.png")
    object_1 = np.asarray(Image.open(masks[0])) > 127
    Image.fromarray(object_1.astype(np.uint8)).save(label_map)  # 0/1: black to the eye
    indexed = Image.fromarray((np.asarray(Image.open(masks[1])) > 127).astype(np.uint8) * 2)
    indexed.putpalette([0, 0, 0, 0, 0, 0, 128, 0, 0] + [0] * 759)  # index 2 = object, dark red
    indexed.save(palette)
    answer = App(server).run(photos[:2], [label_map, palette], files.query)
    assert answer["summary"] == "Ran 2 support(s): 1, 2."


# ---------------------------------------------------------------------------------------------------------------
# The same picture gives the same answer however it is stored


def last_prediction(answer):
    """The last ConvLSTM overlay as an array, and the IoU in its caption."""
    item = answer["convlstm"][-1]
    return np.asarray(Image.open(item["image"]).convert("RGB")), iou_of(item["caption"])


def test_exif_rotated_and_16_bit_queries_give_the_answer_of_the_plain_file(server, tmp_path):
    """The query stored lying on its side with an EXIF tag that stands it up (as phones do), and as a 16-bit PNG:
    the masks line up with the picture as shown (the true mask is the upright one), as when a browser sends it."""
    photos, mask_files, files = example("good")
    supports, masks = photos[:2], mask_files[:2]
    upright = Image.open(files.query)
    assert upright.width != upright.height  # a quarter turn shows in the shape
    plain, rotated, grey, deep = (str(tmp_path / name) for name in ("plain.png", "rotated.jpg", "grey.png", "deep.png"))
    upright.save(plain)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif, quality=97)
    upright.convert("L").save(grey)
    Image.fromarray(np.asarray(upright.convert("L"), dtype=np.uint16) * 257).save(deep)  # the same grey in 16 bits

    app = App(server)
    run = lambda query: last_prediction(app.run(supports, masks, query, files.truth))
    (expected, expected_iou), (seen, iou) = run(plain), run(rotated)
    assert seen.shape == expected.shape
    assert np.abs(seen.astype(int) - expected).mean() < 6  # JPEG noise; a mask off by a turn differs by far more
    assert abs(iou - expected_iou) <= 3
    (expected, expected_iou), (seen, iou) = run(grey), run(deep)
    assert iou == expected_iou and np.abs(seen.astype(int) - expected).mean() < 1
