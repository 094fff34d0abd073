"""How fast the app answers, as a visitor sees it.

    python benchmarks/app_latency.py                         # launches app.py on a free port; 4 requests
    python benchmarks/app_latency.py --requests 6 --example good

Prints:
  - launch: from starting `python app.py` to the page being served (the first HTTP 200 on /);
  - in headless Chromium (Debian's /usr/bin/chromium), per request on a bundled 5-shot example, from the click on
    Run to "results": the supports, the ConvLSTM row and the OR row (every picture loaded) and the gate view on
    screen; and to "everything": the per-support table and both download buttons as well.
Request 1 is the first after start-up; each request starts from a cleared page with the example loaded again. The
times are taken in the page (performance.now() at the click, then every frame), so Playwright's own overhead is not
in them. A script, not a test: the numbers depend on the machine and on what else runs on it (the load average is
printed with them).
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from fss_demo.examples import read_example  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]

# Resolves with {results, everything} in ms after the next click on Run; polled every frame.
WATCH_RUN_JS = """(k) => { window.__timing = new Promise((resolve) => {
  const shown = (element) => element && element.offsetParent !== null;
  const loaded = (selector, count) => {
    const found = [...document.querySelectorAll(selector)];
    return found.length === count && found.every((img) => img.complete && img.naturalWidth > 0 && shown(img));
  };
  document.querySelector("#run").addEventListener("click", () => {
    const clicked = performance.now(), times = {};
    const check = () => {
      const now = performance.now() - clicked;
      if (times.results === undefined && loaded("#supports img", k) && loaded("#convlstm img", k)
          && loaded("#or img", k) && loaded("#gates img", 1)) times.results = now;
      if (times.results !== undefined && shown(document.querySelector("#effects table"))
          && shown(document.querySelector("#mask-download")) && shown(document.querySelector("#picture-download")))
        times.everything = now;
      if (times.everything !== undefined) resolve(times);
      else if (now > 120000) resolve({...times, timed_out: true});
      else requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  }, {capture: true, once: true});
}); }"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app():
    """Start app.py on a free port; return (process, url, seconds until it served the page)."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False")
    url = f"http://127.0.0.1:{port}/"
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while time.perf_counter() - began < 180:
        if process.poll() is not None:
            raise SystemExit("app.py exited before serving the page")
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url, time.perf_counter() - began
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("app.py did not serve the page within 180 s")


def time_requests(url, spec, requests):
    """[{results, everything}] in seconds, for `requests` runs of the example in one browser page."""
    from playwright.sync_api import expect, sync_playwright

    k = len(spec.supports)
    timings = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})  # a laptop screen
        page.goto(url)
        for n in range(requests):
            if n:
                page.get_by_role("button", name="Clear all").click()
                expect(page.locator("#convlstm img")).to_have_count(0, timeout=30_000)
            page.get_by_role("button", name=spec.title).click()
            expect(page.get_by_text(spec.story[:40])).to_be_visible(timeout=30_000)
            page.wait_for_function("() => [...document.images].every((img) => img.complete)")
            page.wait_for_timeout(1500)  # and the editors have drawn theirs
            page.evaluate(WATCH_RUN_JS, k)
            page.locator("#run").click()
            times = page.evaluate("() => window.__timing")
            if times.get("timed_out"):
                raise SystemExit(f"request {n + 1}: not all panels were on screen within 120 s: {times}")
            timings.append({name: times[name] / 1000 for name in ("results", "everything")})
        browser.close()
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4, help="runs of the example; the first is the first "
                                                                 "request after start-up")
    parser.add_argument("--example", default="bad_support", help="a folder under examples/ (5 supports)")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    spec = read_example(args.example)

    load = os.getloadavg()[0]
    process, url, launch = launch_app()
    try:
        timings = time_requests(url, spec, args.requests)
    finally:
        process.terminate()
        process.wait(timeout=30)

    print(f"{os.cpu_count()} CPU cores, load average {load:.2f} at the start (1 minute)")
    print(f"launch: python app.py to a served page: {launch:.1f} s")
    print(f"{spec.title!r} ({len(spec.supports)} supports), from the click on Run, in Chromium:")
    for n, t in enumerate(timings, start=1):
        print(f"  request {n}{' (first after start-up)' if n == 1 else ''}: results on screen {t['results']:.2f} s, "
              f"with the per-support table and the downloads {t['everything']:.2f} s")
    later = timings[1:]
    if later:
        median = lambda name: statistics.median(t[name] for t in later)
        print(f"  later requests, median: results {median('results'):.2f} s, everything {median('everything'):.2f} s")


if __name__ == "__main__":
    main()
