"""Few-shot segmentation demo: give a few supports and a query, watch the prediction improve step by step.

Run locally with `python app.py` (http://localhost:7860); on a Hugging Face Space this file is the entry point. The
app itself is the `demo` package: layout and wiring, handlers, panels, the Gradio workarounds, the browser's events.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

# One thread: as fast for one request (0.18 s), and the server's own thread (uploads, downloads, the queue) keeps
# the second core. Two torch threads on a busy 2-core machine wait on each other: a 0.2 s request took 2-8 s.
torch.set_num_threads(int(os.environ.get("FSS_DEMO_THREADS", "1")))

from demo import handlers, text  # noqa: E402  (loads the model)
from demo.layout import BROWSER_JS, build_demo  # noqa: E402

# Requests waiting at most; more are refused at once ("Queue is full") rather than left waiting. At about 0.8 s per
# 5-shot request through Gradio on 2 cores (benchmarks/app_load.py), the 24th waits some 20 s: long, not a time-out.
QUEUE_SIZE = 24

demo = build_demo()
demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)

if __name__ == "__main__":
    demo.launch(max_file_size="15mb", server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), css=text.CSS,
                js=BROWSER_JS, mcp_server=True, prevent_thread_lock=True)
    handlers.warm_up(demo.local_url)  # the page is served meanwhile
    demo.block_thread()
