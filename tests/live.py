"""What the tests of the launched app share: the app started once per test session (the `server` fixture in
conftest.py), the bundled examples' files, and /run through gradio_client read by panel name."""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from demo.inputs import Inputs  # /run's inputs, in order
from demo.panels import PANELS  # /run's outputs, in order
from fss_demo.examples import read_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launched_app():
    """Start app.py on a free port; yield its URL; stop it. Its output goes to a file (a pipe nobody reads fills up
    and stops the app), shown if it fails to start."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False")
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 180
        while True:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                log.seek(0)
                raise RuntimeError("app.py did not start within 180 s:\n" + log.read()[-3000:])
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
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


def iou_of(caption):
    """The IoU in a prediction's caption ("3 supports: IoU 84%")."""
    return int(re.search(r"IoU (\d+)%", caption).group(1))
