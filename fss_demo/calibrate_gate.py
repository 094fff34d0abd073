"""Calibrate a trained model's admission gate on validation episodes, after training, as the threshold is chosen:
its value becomes sigmoid(scale * (logit - shift)) (why: `head.SupportGate`).

    python -m fss_demo.calibrate_gate --weights /tmp/run/model --data ../shared/data/ccp ... --write

Each (scale, shift) of the grid, and the gate as trained (1, 0), runs `evaluate --corrupt`'s five-shot episodes of
every set (--episodes, --seed: use validation seeds, not the reported ones) with support 2 moved onto the
background, clean, and with support 2 left out. The rule is the selection rule's rows for such a support (NOTES.md):
on every set an admission of at most 0.5 at a step-5 cost no more than 0.5 above leaving it out. Chosen: the
calibration with the fewest failed rows, then the highest mean clean 5-shot class mIoU over the sets (the gate also
decides how far clean supports are let in); an exact tie goes to the gentler one, the first in grid order (smaller
scale, then smaller shift). --write saves it into the --weights folder's config.json.
"""
import argparse
import dataclasses
import os
import time

import torch

from .datasets import open_dataset
from .evaluate import evaluate_corruptions, feature_cache
from .features import DEFAULT_CACHE
from .hub import load_model
from .model import default_device, update_saved_config
from .report import check_line, off_object_checks


def score_calibration(model, datasets, scale, shift, episodes, seed):
    """{set name: evaluate_corruptions' result for a mask on the background} with the gate calibrated so.
    datasets: [(dataset, its feature_cache)]."""
    model.config = dataclasses.replace(model.config, gate_scale=scale, gate_shift=shift)
    return {dataset.name: evaluate_corruptions(model, dataset, cache, episodes, seed, kinds=("off_object",),
                                               forced_open=False)
            for dataset, cache in datasets}


def failures_and_clean_mean(results):
    """(failed rows over all sets, mean clean 5-shot class mIoU): the rule's sort key is (failures, -mean)."""
    failures = sum(outcome == "FAILS" for corruption in results.values()
                   for outcome in off_object_checks(corruption).values())
    clean = sum(corruption["clean"]["convlstm"][-1] for corruption in results.values()) / len(results)
    return failures, clean


def choose(scored):
    """scored: {(scale, shift): results}, in grid order -> the chosen (scale, shift); min keeps the first of a tie."""
    def key(calibration):
        failures, clean = failures_and_clean_mean(scored[calibration])
        return failures, -clean
    return min(scored, key=key)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a trained model's folder")
    parser.add_argument("--data", nargs="+", required=True, help="validation data set folders")
    parser.add_argument("--scales", nargs="+", type=float, default=[2.0, 3.0, 4.0])
    parser.add_argument("--shifts", nargs="+", type=float, default=[1.5, 2.0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="save the chosen calibration into --weights/config.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    if args.write and not os.path.isdir(args.weights):
        parser.error("--write needs a --weights folder (a Hub repo id cannot be written into)")
    torch.set_num_threads(args.threads)

    began = time.time()
    model = load_model(args.weights, device=args.device or default_device())
    datasets = [(dataset, feature_cache(model, dataset, args.cache)) for dataset in map(open_dataset, args.data)]
    grid = [(1.0, 0.0)] + [(scale, shift) for scale in args.scales for shift in args.shifts]
    scored = {}
    for scale, shift in dict.fromkeys(grid):
        scored[scale, shift] = score_calibration(model, datasets, scale, shift, args.episodes, args.seed)
        failures, clean = failures_and_clean_mean(scored[scale, shift])
        print(f"scale {scale:g}, shift {shift:g}: {failures} failed rows, mean clean 5-shot {clean:.3f}")
        for name, corruption in scored[scale, shift].items():
            print(f"  {name}: {check_line(off_object_checks(corruption))}; clean admission "
                  f"{corruption['clean']['admission_mean'][1]:.2f}", flush=True)
    scale, shift = choose(scored)
    print(f"chosen: scale {scale:g}, shift {shift:g} ({time.time() - began:.0f} s)")
    if args.write:
        print(f"saved into {update_saved_config(args.weights, gate_scale=scale, gate_shift=shift)}")


if __name__ == "__main__":
    main()
