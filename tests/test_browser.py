"""The launched app in a real headless Chromium (Debian's /usr/bin/chromium): what a visitor clicks and reads.
Screenshots go to tests/artifacts/."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from .live import ROOT, App, example, iou_of

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")


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
    expect(effects).to_contain_text(f"{k} runs of the small head, on the query's and supports' cached features")
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


def run_with_a_text_file_in_support_1(page, tmp_path, then=lambda: None):
    """Support 1 gets a text file (and a mask), `then` runs, support 2 and the query get the good example's pictures;
    Run, and wait for the one support that can run."""
    from playwright.sync_api import expect

    photos, masks, files = example("good")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.locator("#support-editor-1 input[type=file]").set_input_files(str(notes))
    page.locator("#support-mask-1 input[type=file]").set_input_files(masks[0])
    page.wait_for_timeout(1000)  # the browser tries to decode it
    then()
    page.locator("#support-editor-2 input[type=file]").set_input_files(photos[1])
    page.locator("#support-mask-2 input[type=file]").set_input_files(masks[1])
    page.locator("#query input[type=file]").set_input_files(files.query)
    page.wait_for_timeout(2000)  # the editors draw their pictures
    page.locator("#run").click()
    expect(page.locator("#convlstm img")).to_have_count(1, timeout=60_000)
    expect(page.get_by_text("Ran 1 support(s): 2.")).to_be_visible()


@needs_chromium
def test_a_file_that_is_no_picture_is_named_when_run(page, tmp_path):
    """The editor cannot show a text file and drops it; Run still names it and says what it is, and the good
    support runs."""
    from playwright.sync_api import expect

    run_with_a_text_file_in_support_1(page, tmp_path)
    expect(page.get_by_text("Support 1's image: 'notes.txt' is not an image file that can be read").first
           ).to_be_visible()


@needs_chromium
def test_a_file_that_is_no_picture_is_forgotten_when_its_editor_is_cleared(page, tmp_path):
    """A file the editor could not show, then taken away with the editor's own Clear canvas: Run no longer sends it,
    so the page does not name a file the person removed; the good support runs."""
    from playwright.sync_api import expect

    run_with_a_text_file_in_support_1(
        page, tmp_path, then=page.locator("#support-editor-1 button[aria-label='Clear canvas']").click)
    expect(page.get_by_text("notes.txt")).to_have_count(0)
