"""Latency of `segment` on a 2-core CPU, beside the bare backbone forward measured in the same run.

    python -m fss_demo.bench [--weights DIR] [--repeats 15] [--size 416]

Prints median milliseconds at the network's input side (the trained one, 320x320, unless --size gives another):
one bare backbone pass; `segment` at 1 and 5 shots with new supports every call (cold: every image goes through
the backbone) and with the same supports and a new query (warm: support features come from the cache, as in the
app when only the query changes); and `leave_one_out` with 5 cached supports and a new query, which the app runs
after `segment` on the same query (cached then) for its table of what each support did. The measurements take
turns within each repeat, so a busy spell of the machine slows them alike.
"""
import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from .hub import load_model


def median_ms(functions, repeats):
    """Median milliseconds of each function. They take turns within every repeat, so a slow spell of a shared
    machine hits all of them alike and their ratios stay meaningful."""
    for function in functions.values():
        function()  # warm-up
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=None,
                        help="run the network at this input side (default: the one it was trained at)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    if args.size:  # the network's input side, not only the pictures': `segment` resizes to model.input_size
        model.config = dataclasses.replace(model.config, input_size=args.size)
    rng = np.random.default_rng(0)
    side = model.input_size
    picture = lambda: rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    mask = np.zeros((side, side), bool)
    mask[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = True

    x = torch.rand(1, 3, side, side)
    fixed = {shots: [(picture(), mask) for _ in range(shots)] for shots in (1, 5)}
    new_supports = lambda shots: model.segment(picture(), [(picture(), mask) for _ in range(shots)])
    with torch.inference_mode():
        ms = median_ms({"backbone": lambda: model.backbone(x),
                        "cold1": lambda: new_supports(1), "warm1": lambda: model.segment(picture(), fixed[1]),
                        "cold5": lambda: new_supports(5), "warm5": lambda: model.segment(picture(), fixed[5]),
                        "leave_one_out5": lambda: model.leave_one_out(picture(), fixed[5])},
                       args.repeats)
    backbone = ms["backbone"]
    print(f"threads {torch.get_num_threads()}, input {side}x{side}, median of {args.repeats} runs")
    print(f"bare backbone forward:        {backbone:7.1f} ms")
    for shots in (1, 5):
        cold, warm = ms[f"cold{shots}"], ms[f"warm{shots}"]
        print(f"segment {shots}-shot, new supports: {cold:7.1f} ms  ({cold / ((shots + 1) * backbone):.2f}x of {shots + 1} backbone passes)")
        print(f"segment {shots}-shot, same supports, new query: {warm:7.1f} ms")
    print(f"leave_one_out, 5 cached supports, new query: {ms['leave_one_out5']:7.1f} ms  "
          "(the app's table of each support's effect; the app's query is cached too)")
    print(f"5-shot segment / six backbone passes = {ms['cold5'] / (6 * backbone):.2f} (aim: <= 1.5)")


if __name__ == "__main__":
    main()
