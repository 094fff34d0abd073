"""The launched app over real HTTP: gradio_client through Gradio's preprocessing and the real queue, its MCP server,
and a real headless Chromium. Screenshots go to tests/artifacts/."""
import ast
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

import numpy as np
import pytest
from PIL import Image

from demo.inputs import Inputs
from fss_demo.examples import read_example  # /run's inputs, in order
from demo.panels import PANELS  # /run's outputs, in order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError("app.py exited:\n" + process.stdout.read())
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError("app.py did not start within 180 s")
    yield url
    process.terminate()
    process.wait(timeout=20)


def example(name="bad_support"):
    """A bundled example's files: (supports' photos, their masks, ExampleFiles)."""
    files = read_example(name)
    return [image for image, _ in files.supports], [mask for _, mask in files.supports], files


class App:
    """The /run endpoint through gradio_client, its answer read by panel name."""

    def __init__(self, url):
        from gradio_client import Client

        self.client = Client(url, verbose=False, ssl_verify=False)  # plain http; skips loading CA certs per file

    def run(self, supports, masks, query, truth=None):
        """supports, query: file paths (or None); masks, truth: file paths or None."""
        from gradio_client import handle_file

        inputs = Inputs.of_files(supports, masks, query, truth, file=lambda path: handle_file(str(path)))
        return dict(zip(PANELS, self.client.predict(*inputs.values(), api_name="/run")))


def test_client_runs_an_episode(server):
    supports, masks, files = example()
    answer = App(server).run(supports, masks, files.query, files.truth)
    k = len(supports)
    assert len(answer["supports"]) == len(answer["convlstm"]) == len(answer["logical_or"]) == k
    assert answer["gates"] is not None and len(answer["iou_plot"]["data"]) == 2 * k
    assert answer["summary"].startswith(f"Ran {k} support(s): ") and "IoU" in answer["summary"]


# ---------------------------------------------------------------------------------------------------------------
# The programmatic endpoint (issue 11): one named endpoint, also an MCP tool; the page's own events hidden


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


def data_url(path):
    """A file as a data: URL, as an MCP client sends files to a local app (Gradio fetches no loopback URL)."""
    import base64
    import mimetypes

    return f"data:{mimetypes.guess_type(path)[0]};base64," + base64.b64encode(open(path, "rb").read()).decode()


def mcp_session(server, work):
    """Run `work(session)` in a real MCP client session with the app's MCP server; its result."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        async with streamable_http_client(server + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    return asyncio.run(run())


def test_the_segment_endpoint_is_an_mcp_tool(server):
    async def list_tools(session):
        return (await session.list_tools()).tools

    tools = mcp_session(server, list_tools)
    assert [tool.name for tool in tools] == ["segment"]
    schema = tools[0].inputSchema
    assert list(schema["properties"]) == ["query", "supports", "masks", "query_mask"]
    assert "$defs" not in json.dumps(schema["properties"])  # a nested $defs is what made every call fail
    description = tools[0].description
    assert description.startswith("Segment in the query the kind of object marked in the supports")
    assert "convlstm_masks: the ConvLSTM's mask after supports 1..k" in description and ";," not in description


def test_an_mcp_client_segments_the_bundled_example(server):
    photos, masks, files = example()
    arguments = {"query": data_url(files.query), "supports": [data_url(p) for p in photos],
                 "masks": [data_url(m) for m in masks], "query_mask": data_url(files.truth)}

    async def call(session):
        return await session.call_tool("segment", arguments)

    result = mcp_session(server, call)
    assert not result.isError, result.content
    # one text: the three outputs as a Python literal, the galleries' pictures as URLs on the app
    convlstm, logical_or, numbers = ast.literal_eval(result.content[0].text)
    k = len(photos)
    assert [s["step"] for s in numbers["steps"]] == list(range(1, k + 1)) and numbers["steps"][0]["admission"] == 1.0
    assert all(0 <= s["iou"] <= 1 for s in numbers["steps"])
    assert len(convlstm) == len(logical_or) == k
    urls = [item["image"]["url"] for item in convlstm]
    final = np.asarray(Image.open(urllib.request.urlopen(urls[-1]))) > 127
    query = Image.open(files.query)
    assert final.shape == (query.height, query.width)


def test_mcp_calls_with_bad_files_get_a_sentence(server, tmp_path):
    photos, masks, files = example("good")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    good = {"query": data_url(files.query), "supports": [data_url(photos[0])], "masks": [data_url(masks[0])]}
    cases = [({**good, "masks": []}, "masks: give one mask per support photo (1 photo(s), 0 mask(s))."),
             ({**good, "supports": ["data:image/jpeg;base64," + base64_of(text)]},
              "Support 1's image: 'file.jpg' is not an image file that can be read"),
             ({**good, "query": server + "gradio_api/file=/tmp/q.jpg"},
              f"query: the app cannot fetch {server}gradio_api/file=/tmp/q.jpg (a private or loopback address); "
              "send the file as a data: URL (data:image/png;base64,...) or as a public http(s) URL.")]

    async def call(session):
        return [await session.call_tool("segment", arguments) for arguments, _ in cases]

    for result, (_, message) in zip(mcp_session(server, call), cases):
        assert result.isError and message in result.content[0].text, result.content[0].text


def base64_of(path):
    import base64

    return base64.b64encode(open(path, "rb").read()).decode()


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


def iou_of(caption):
    return int(re.search(r"IoU (\d+)%", caption).group(1))


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


# ---------------------------------------------------------------------------------------------------------------
# The browser


needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="needs Debian's chromium (apt-get install -y chromium)")


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        yield page
        browser.close()


def load_example_and_run(page, files, query=None):
    """Click the example's button, optionally replace its query by uploading a file, press Run, wait for k rows."""
    from playwright.sync_api import expect

    page.get_by_role("button", name=files.title).click()
    expect(page.get_by_text(files.story[:40])).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1500)  # the editors draw their images
    if query:
        page.locator("#query input[type=file]").set_input_files(query)
        page.wait_for_timeout(1500)
    page.locator("#run").click()
    k = len(files.supports)
    expect(page.locator("#convlstm img")).to_have_count(k, timeout=120_000)
    expect(page.locator("#or img")).to_have_count(k, timeout=30_000)


@needs_chromium
def test_browser_runs_an_example_with_each_supports_effect_order_and_downloads(page):
    from playwright.sync_api import expect

    _, _, files = example()
    k = len(files.supports)
    uploads = []  # during Run: the browser sends each editor's picture once (Gradio 6.31 re-sent them many times)
    page.on("request", lambda r: uploads.append(r.url) if r.method == "POST" and "/upload" in r.url else None)
    page.get_by_role("button", name=files.title).click()
    expect(page.get_by_text(files.story[:40])).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1500)  # the editors draw their images
    uploads.clear()
    page.locator("#run").click()
    expect(page.locator("#convlstm img")).to_have_count(k, timeout=120_000)
    expect(page.locator("#or img")).to_have_count(k, timeout=30_000)
    expect(page.locator("#gates img")).to_have_count(1, timeout=30_000)

    # each support's effect, beside the gate view
    effects = page.locator("#effects")
    expect(effects.locator("tbody tr")).to_have_count(k, timeout=60_000)
    expect(effects).to_contain_text("Leaving each support out took")
    expect(effects).to_contain_text(f"one pass of the backbone over the query and {k} runs of the small head")
    first_row = effects.locator("tbody tr").first.locator("td").all_inner_texts()
    assert first_row[:3] == ["1", "1", "1.00"]  # step 1 is support 1, always let in
    assert len(uploads) <= k + 1, uploads  # k supports and the query

    os.makedirs(ARTIFACTS, exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=os.path.join(ARTIFACTS, "app.png"), full_page=True)
    page.locator("#effects").scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(ARTIFACTS, "app_effects.png"))  # what a laptop screen shows there

    # the downloads: the final mask as a PNG at the query's size, and the whole run as one picture
    query = Image.open(files.query)
    with page.expect_download() as download:
        page.locator("#mask-download").click()
    mask = np.asarray(Image.open(download.value.path()))
    assert download.value.suggested_filename == "final_mask.png" and mask.shape == (query.height, query.width)
    assert set(np.unique(mask)) <= {0, 255}
    with page.expect_download() as download:
        page.locator("#picture-download").click()
    picture = Image.open(download.value.path())
    assert download.value.suggested_filename == "fss_run.png" and picture.width > picture.height > 3 * 200
    picture.save(os.path.join(ARTIFACTS, "run_picture.png"))

    # order: the ConvLSTM's answer may change, the OR's cannot
    page.get_by_role("button", name="Run them in reverse order").click()
    order = page.locator("#order")
    expect(order).to_contain_text("Reversed order (supports 5, 4, 3, 2, 1 instead of 1, 2, 3, 4, 5): the "
                                  "ConvLSTM's final mask", timeout=60_000)
    expect(order).to_contain_text("The logical OR's final mask is the same, pixel for pixel")
    expect(page.locator("#order-pictures img")).to_have_count(4, timeout=30_000)
    page.locator("#order").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=os.path.join(ARTIFACTS, "app_order.png"))

    # a sixth support slot, then everything cleared
    page.get_by_role("button", name="Add a support").click()
    sixth = page.locator("strong").filter(has_text=re.compile(r"^Support 6$"))
    expect(sixth).to_be_visible(timeout=10_000)
    page.get_by_role("button", name="Clear all").click()
    for panel in ("#supports", "#convlstm", "#or", "#gates", "#order-pictures"):
        expect(page.locator(f"{panel} img")).to_have_count(0, timeout=10_000)
    expect(effects.locator("table")).to_have_count(0)
    expect(page.locator("#mask-download")).to_be_hidden()
    expect(sixth).to_be_hidden()


@needs_chromium
def test_browser_and_client_agree_on_an_exif_rotated_query(server, page, tmp_path):
    """The browser shows (and sends) the photo stood up; the client sends the file as it is: same scores."""
    photos, masks, files = example()
    rotated = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show
    Image.open(files.query).transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif, quality=97)

    load_example_and_run(page, files, query=rotated)
    in_browser = [iou_of(caption) for caption in page.locator("#convlstm").inner_text().splitlines() if "IoU" in caption]
    answer = App(server).run(photos, masks, rotated, files.truth)
    from_client = [iou_of(item["caption"]) for item in answer["convlstm"]]
    assert len(in_browser) == len(from_client) == len(files.supports)
    # within a point: the browser's JPEG decoder and PIL's differ by a grey level here and there
    assert all(abs(a - b) <= 1 for a, b in zip(in_browser, from_client)), (in_browser, from_client)
    assert min(from_client) > 40  # and the scores are those of a mask on the upright picture
