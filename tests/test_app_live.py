"""The launched app over real HTTP: gradio_client through the real queue, and a real headless Chromium."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

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
    folder = os.path.join(ROOT, "examples", name)
    with open(os.path.join(folder, "example.json")) as f:
        return folder, json.load(f)


def test_client_runs_an_episode_and_survives_bad_requests(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    folder, spec = example()
    editor = lambda path: {"background": handle_file(os.path.join(folder, path)), "layers": [], "composite": None}
    supports = [editor(s["image"]) for s in spec["supports"]]
    uploads = [handle_file(os.path.join(folder, s["mask"])) for s in spec["supports"]]
    k = len(supports)
    pad = lambda items: items + [None] * (10 - len(items))
    query = editor(spec["query"]["image"])
    truth = handle_file(os.path.join(folder, spec["query"]["mask"]))

    def run(editors, masks, query_value, query_mask):
        return client.predict(*pad(editors), *pad(masks), query_value, query_mask, api_name="/run")

    supports_out, lstm, or_out, plot, gates, summary = run(supports, uploads, query, truth)
    assert len(supports_out) == len(lstm) == len(or_out) == k and gates is not None
    assert "IoU" in summary and plot is not None

    with pytest.raises(AppError, match="at least one support"):
        run([], [], query, None)
    junk = tmp_path / "junk.png"
    junk.write_text("this is not a picture")
    with pytest.raises(AppError):
        run([{"background": handle_file(str(junk)), "layers": [], "composite": None}], [handle_file(str(junk))], query, None)
    # nothing broke: the same good request answers again
    assert len(run(supports[:2], uploads[:2], query, None)[1]) == 2


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_browser_loads_an_example_and_shows_k_predictions_per_row(server):
    from playwright.sync_api import expect, sync_playwright

    _, spec = example()
    k = len(spec["supports"])
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        page.get_by_role("button", name=spec["title"]).click()
        expect(page.get_by_text(spec["story"][:40])).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1500)  # the editors draw their images
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.locator("#convlstm img")).to_have_count(k, timeout=120_000)
        expect(page.locator("#or img")).to_have_count(k, timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=os.path.join(ARTIFACTS, "app.png"), full_page=True)
        page.get_by_text("Inside the ConvLSTM").click()
        expect(page.locator("#gates img")).to_have_count(1, timeout=30_000)
        page.locator("#gates").scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(ARTIFACTS, "app_gates.png"), full_page=True)
        browser.close()
