"""Load on the app: N concurrent gradio_client users, each sending R five-shot requests on the bundled examples.

    python benchmarks/app_load.py                      # launches app.py on a free port, 8 users x 3 on /segment
    python benchmarks/app_load.py --endpoint run       # the page's Run instead (/run)
    python benchmarks/app_load.py --users 40 --requests 1   # a burst beyond the queue (24): some are refused
    python benchmarks/app_load.py --url http://127.0.0.1:7860/ --users 20 --requests 1

Prints requests served, p50/p95/max latency (from sending a request to its answer, uploads and downloads of the
pictures included), and refusals ("Queue is full") with how long each took to come, after one warm-up request per
example. A script, not a test: the numbers depend on the machine and on what else runs on it (the clients share it
with the app).
"""
import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from app_latency import launch_app  # noqa: E402  (one way to start the app for every benchmark)

from demo.inputs import Inputs  # noqa: E402  (the /run parameters' order; loads no model)
from fss_demo.examples import read_example  # noqa: E402


def episode_arguments(name, endpoint):
    """(args, kwargs) of /run or /segment for a bundled example: its supports with their masks, query and truth."""
    from gradio_client import handle_file

    example = read_example(name)
    if endpoint == "run":
        return Inputs.of_example(example, handle_file).values(), {}
    return [], {"query": handle_file(example.query), "supports": [handle_file(image) for image, _ in example.supports],
                "masks": [handle_file(mask) for _, mask in example.supports], "query_mask": handle_file(example.truth)}


def user(url, endpoint, episodes, requests, start, results):
    """One person: connects, waits for the others, then sends `requests` requests one after another."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    # gradio_client opens a new connection per file sent or fetched, and each loads the CA bundle for an SSL context
    # (~60 ms of CPU) even over plain http: 1.7 s of CPU per request here, on the cores the app needs. Not for https.
    client = Client(url, verbose=False, ssl_verify=not url.startswith("http://"))
    start.wait()
    for n in range(requests):
        began = time.perf_counter()
        try:
            args, kwargs = episodes[n % len(episodes)]
            client.predict(*args, **kwargs, api_name=f"/{endpoint}")
            results.append(("served", time.perf_counter() - began, ""))
        except QueueError as error:
            results.append(("refused", time.perf_counter() - began, str(error)))
        except Exception as error:  # report it, keep the other users going
            results.append(("failed", time.perf_counter() - began, f"{type(error).__name__}: {error}"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="attach to a running app instead of launching app.py")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3, help="requests per user, sent one after another")
    parser.add_argument("--examples", nargs="+", default=["good", "bad_support"], help="folders under examples/")
    parser.add_argument("--endpoint", choices=["segment", "run"], default="segment",
                        help="the API's /segment, or the page's Run (/run)")
    args = parser.parse_args()

    process, url = (None, args.url) if args.url else launch_app()[:2]
    try:
        episodes = [episode_arguments(name, args.endpoint) for name in args.examples]
        warm_up = []  # the first run of a fresh process is slow (allocations, lazy imports): not what users see
        user(url, args.endpoint, episodes, len(episodes), threading.Barrier(1), warm_up)
        for outcome, _, message in warm_up:
            if outcome != "served":
                print(f"warm-up request {outcome}: {message[:300]}")
        start, results = threading.Barrier(args.users), []
        threads = [threading.Thread(target=user, args=(url, args.endpoint, episodes, args.requests, start, results))
                   for _ in range(args.users)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)

    served = [seconds for outcome, seconds, _ in results if outcome == "served"]
    refused = [seconds for outcome, seconds, _ in results if outcome == "refused"]
    failures = [message for outcome, _, message in results if outcome == "failed"]
    print(f"{args.users} users x {args.requests} requests ({', '.join(args.examples)}) on /{args.endpoint} against {url}")
    print(f"served {len(served)}/{len(results)}, refused {len(refused)}, failed {len(failures)}, wall {wall:.1f} s "
          "(includes connecting)")
    if served:
        p50, p95 = np.percentile(served, [50, 95])
        print(f"latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(served):.2f} s")
    if refused:
        print(f"refused after: p50 {np.percentile(refused, 50):.2f} s, max {max(refused):.2f} s")
    for message in sorted(set(failures)):
        print("failure:", message[:300])
    return 1 if failures else 0  # refusals are the queue doing its job; failures are bugs


if __name__ == "__main__":
    sys.exit(main())
