"""Evaluate on novel classes: class mIoU and FB-IoU per shot count for the ConvLSTM, the logical OR of
1-shot predictions, the mean of the 1-shot logits (what the ConvLSTM must beat to earn its place), and the
training-free prototype baseline, all on the same seeded episodes.

    python -m fss_demo.evaluate --weights weights --data ../shared/data/ccp ../shared/data/camvid \
        --shots 1 2 3 4 5 --episodes 1000 --seed 0 --json results.json --plot results.png

--choose-threshold picks the thresholds that score best on these episodes (use other seeds than the reported
ones) and reports with them; --write-threshold also saves them into the --weights folder's config.json.
Each episode has max(--shots) supports; the k-shot result uses its first k (so curves are nested).
Class mIoU follows PASCAL-5i: per class, intersections summed over its episodes over unions summed
likewise, then the mean over classes. FB-IoU: foreground and background IoU over all episodes, averaged.
The json also gives each method's pixel precision and recall of the foreground, all episodes' pixels pooled (an
answer that misses objects has low recall; one that adds false ones, low precision), and, for the comparisons
the selection rule makes (ConvLSTM at the most shots against the OR, the mean and its own fewest shots), a 95%
bootstrap interval of the difference over episodes. With --choose-threshold it also gives the OR and the mean at
their own best threshold for each shot count (`tuned_thresholds`, and `tuned` per set): a fused answer's best
threshold moves with the number of answers fused, so these are the strongest versions of the two baselines;
--tuned-from VALIDATION_JSON scores the baselines at the thresholds such a run chose (for a report on other episodes).
Scored at the network's 320x320 input resolution, pixels labelled 255 left out.
"""
import argparse
import dataclasses
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .datasets import EpisodeSampler, collate, open_dataset, validation_split
from .features import DEFAULT_CACHE, FeatureCache
from .corruptions import KINDS, corrupt
from .hub import load_model
from .metrics import Tally
from .head import prototype_baseline
from .model import default_device, update_saved_config
from .report import bad_first_table, bad_support_table, results_table

METHODS = ("convlstm", "or", "mean", "prototype")
# Candidate thresholds for every method: sigmoid outputs and the prototype baseline's cosine alike. The low end
# matters: on novel classes from an unseen kind of scene (CamVid's street objects) the model's probabilities are
# low but still well above the background's.
# The high end is for the OR, whose best threshold rises as it fuses more answers.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
TUNED_BASELINES = ("or", "mean")


def feature_cache(model, dataset, cache_dir=DEFAULT_CACHE):
    """The set's backbone features at the model's input size, loaded (or computed) once and passed to each run."""
    return FeatureCache.build(dataset, model.backbone, size=model.input_size, cache_dir=cache_dir)


def evaluate_dataset(model, dataset, cache, shots, episodes, seed, batch=20):
    """cache: the set's `feature_cache`."""
    classes, ids = validation_split(dataset)
    sampler = EpisodeSampler(dataset, classes, ids, max(shots), seed=seed)
    tally = Tally({method: THRESHOLD_GRID for method in METHODS})
    chosen = sampler.episodes(episodes)
    with torch.inference_mode():
        for start in tqdm(range(0, len(chosen), batch), desc=f"evaluating {dataset.name}", unit="batch"):
            group = chosen[start:start + batch]
            query, supports, masks, target = collate([(dataset, cache, e) for e in group], device=model.device)
            steps, one_shots = model.head(query, supports, masks, one_shot=True)[:2]
            prototypes = prototype_baseline(query, supports, masks)
            size = target.shape[-2:]
            up = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0].cpu()
            one_shot_logits = torch.stack([up(s) for s in one_shots])  # (K, B, H, W)
            target = target.cpu()
            for k in shots:
                scores = {**fused_scores(up(steps[k - 1]), one_shot_logits, k), "prototype": up(prototypes[k - 1])}
                for method, score in scores.items():
                    for i, episode in enumerate(group):
                        tally.add(method, k, episode.class_id, score[i], target[i])
    return tally, sampler


def fused_scores(step_logits, one_shot_logits, k):
    """Probabilities after k supports: the ConvLSTM's, the OR's and the mean's of the first k 1-shot logits
    (K, B, H, W). The OR of thresholded maps is the threshold of their maximum."""
    return {"convlstm": torch.sigmoid(step_logits), "or": torch.sigmoid(one_shot_logits[:k].amax(0)),
            "mean": torch.sigmoid(one_shot_logits[:k].mean(0))}


def evaluate_corruptions(model, dataset, cache, episodes, seed, step=2, batch=20, kinds=KINDS, forced_open=True):
    """5-shot episodes with support `step` (1-based, as given) replaced by a bad one of each kind (seeded), against
    the same episodes clean: class mIoU after every step for the ConvLSTM, the mean of 1-shot logits and the OR;
    per support the input gate's and the admission's means, in the run that gave the 5-shot answer, and the bad
    support's input gate over the others'; and the ConvLSTM with the bad support's input gate forced open (if the
    gates do the filtering, that must cost accuracy). Also the same episodes with support
    `step` left out (`left_out`): exactly what an admission gate at 0 gives, a perfect gate, so the least a bad
    support can cost. cache: the set's `feature_cache`. kinds: the kinds of bad support to run (each one's episodes
    are the same whichever others run); forced_open=False skips the forced-open runs (their scores are then absent)."""
    kinds = tuple(kinds)
    if not set(kinds) <= set(KINDS):
        raise ValueError(f"unknown kinds of bad support {sorted(set(kinds) - set(KINDS))}; known: {KINDS}")
    shots = 5
    classes, ids = validation_split(dataset)
    sampler = EpisodeSampler(dataset, classes, ids, shots, seed=seed)
    grid = [model.threshold]
    methods = ("convlstm", "mean", "or") + (("forced_open",) if forced_open else ())
    tallies = {variant: Tally({method: grid for method in methods}) for variant in ("clean",) + kinds}
    left_out = Tally({"convlstm": grid})
    gate_sums = {variant: np.zeros(shots) for variant in tallies}
    admission_sums = {variant: np.zeros(shots) for variant in tallies}
    chosen = sampler.episodes(episodes)
    with torch.inference_mode():
        for number, start in enumerate(tqdm(range(0, len(chosen), batch), desc=f"corrupting {dataset.name}",
                                            unit="batch")):
            group = chosen[start:start + batch]
            query, clean_supports, clean_masks, target = collate([(dataset, cache, e) for e in group],
                                                                 device=model.device)
            size = target.shape[-2:]
            up = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0].cpu()
            target = target.cpu()
            # A perfect gate: support `step` never seen. After step k the model has seen supports 1..k but that
            # one, so its step-`step` answer is that of step - 1.
            kept = [i for i in range(shots) if i != step - 1]
            without = model.head(query, [clean_supports[i] for i in kept], [clean_masks[i] for i in kept],
                                 one_shot=False).steps
            if step == 1:  # without support 1 there is nothing to answer from at step 1: nothing is found
                without = [torch.full_like(without[0], -30.0)] + without
            else:
                without = without[:step - 1] + without[step - 2:]
            for k in range(1, shots + 1):
                score = torch.sigmoid(up(without[k - 1]))
                for i, episode in enumerate(group):
                    left_out.add("convlstm", k, episode.class_id, score[i], target[i])
            for variant in tallies:
                supports = [[level.clone() for level in levels] for levels in clean_supports]
                masks = [mask.clone() for mask in clean_masks]
                if variant != "clean":
                    rng = np.random.default_rng([seed, number, KINDS.index(variant)])
                    corrupt(variant, supports, masks, step - 1, range(len(group)), [e.class_id for e in group], rng)
                steps, one_shots, traces, admissions, _ = model.head(query, supports, masks, one_shot=True,
                                                                     trace=True)
                forced = (model.head(query, supports, masks, one_shot=False, open_gate_at=(step,)).steps
                          if forced_open else None)
                gate_sums[variant] += [float(t["input_gate"].mean((1, 2, 3)).sum()) for t in traces]
                admission_sums[variant] += [float(a.sum()) for a in admissions]
                one_shot_logits = torch.stack([up(o) for o in one_shots])
                for k in range(1, shots + 1):
                    scores = fused_scores(up(steps[k - 1]), one_shot_logits, k)
                    if forced_open:
                        scores["forced_open"] = torch.sigmoid(up(forced[k - 1]))
                    for method, score in scores.items():
                        for i, episode in enumerate(group):
                            tallies[variant].add(method, k, episode.class_id, score[i], target[i])
    result = {}
    for variant, tally in tallies.items():
        gates = gate_sums[variant] / len(chosen)
        others = np.delete(gates, step - 1)
        result[variant] = {method: [round(float(tally.scores(method, k)[0][0]), 2) for k in range(1, shots + 1)]
                           for method in methods}
        result[variant]["input_gate_mean"] = [round(float(g), 4) for g in gates]
        result[variant]["input_gate_ratio"] = round(float(gates[step - 1] / others.mean()), 3)
        result[variant]["admission_mean"] = [round(float(a), 4) for a in admission_sums[variant] / len(chosen)]
    result["left_out"] = {"convlstm": [round(float(left_out.scores("convlstm", k)[0][0]), 2)
                                       for k in range(1, shots + 1)]}
    return result


def report(tally, shots, thresholds, tuned_thresholds=None):
    """One set's scores at `thresholds` (method -> threshold), its rule's intervals, and with `tuned_thresholds`
    (method -> {shots: threshold}) the baselines' scores at those (`tuned`)."""
    def scores_at(method, k, threshold):
        index = index_of(tally, method, threshold)
        class_iou, fb_iou = tally.scores(method, k)
        precision, recall = tally.precision_recall(method, k)
        return {"class_miou": round(float(class_iou[index]), 2), "fb_iou": round(float(fb_iou[index]), 2),
                "precision": round(float(precision[index]), 3), "recall": round(float(recall[index]), 3)}

    result = {method: {str(k): scores_at(method, k, thresholds[method]) for k in shots} for method in METHODS}
    first, last = min(shots), max(shots)
    if first != last:  # how sure the rule's comparisons are (its rows compare these numbers)
        # at the ConvLSTM's threshold: the OR and the mean fuse the same model's outputs and share it
        index = index_of(tally, "convlstm", thresholds["convlstm"])
        pairs = {f"convlstm_{last}_minus_or_{last}": (("convlstm", last), ("or", last)),
                 f"convlstm_{last}_minus_mean_{last}": (("convlstm", last), ("mean", last)),
                 f"convlstm_{last}_minus_convlstm_{first}": (("convlstm", last), ("convlstm", first))}
        result["intervals"] = {name: [round(bound, 2) for bound in tally.difference_interval(*pair, index)]
                               for name, pair in pairs.items()}
        for method, per_shots in (tuned_thresholds or {}).items():  # against the baselines at their own thresholds
            if last in per_shots:
                bounds = tally.difference_interval(("convlstm", last), (method, last), index,
                                                   index_of(tally, method, per_shots[last]))
                result["intervals"][f"convlstm_{last}_minus_tuned_{method}_{last}"] = [round(b, 2) for b in bounds]
    if tuned_thresholds:
        result["tuned"] = {method: {str(k): scores_at(method, k, t) for k, t in per_shots.items()}
                           for method, per_shots in tuned_thresholds.items()}
    return result


def index_of(tally, method, threshold):
    """The place of `threshold` in the method's grid (the nearest one)."""
    return int(np.argmin(np.abs(tally.grids[method] - threshold)))


def best_on_grid(tallies, method, shots):
    """The grid threshold that maximises `method`'s class mIoU averaged over data sets and the given shot counts."""
    mean = np.mean([tally.scores(method, k)[0] for tally in tallies for k in shots], axis=0)
    return float(tallies[0].grids[method][int(np.argmax(mean))])


def best_thresholds(tallies, shots):
    """The threshold per method that maximises class mIoU averaged over data sets and shot counts."""
    best = {method: best_on_grid(tallies, method, shots) for method in METHODS}
    best["or"] = best["mean"] = best["convlstm"]  # they fuse the same model's outputs: one threshold for all
    return best


def best_thresholds_per_shots(tallies, shots, method):
    """{shots: the threshold that maximises `method`'s class mIoU at that many shots, averaged over data sets}."""
    return {k: best_on_grid(tallies, method, [k]) for k in shots}


def read_tuned_thresholds(path, shots):
    """The baselines' thresholds per shot count from a json of `evaluate --choose-threshold` -> ({method: {shots:
    threshold}}, where they were chosen), or a ValueError that says what is missing."""
    with open(path) as f:
        chosen = json.load(f)
    if "tuned_thresholds" not in chosen:
        raise ValueError(f"{path} has no tuned_thresholds: make it with evaluate --choose-threshold")
    tuned = {}
    for method, per_shots in chosen["tuned_thresholds"].items():
        missing = [k for k in shots if str(k) not in per_shots]
        off_grid = [t for t in per_shots.values() if not np.isclose(THRESHOLD_GRID, t).any()]
        if missing or off_grid:
            raise ValueError(f"{path}: the {method} thresholds miss shot counts {missing} or lie off the grid "
                             f"{off_grid}")
        tuned[method] = {k: per_shots[str(k)] for k in shots}
    return tuned, {"file": os.path.basename(path), "seed": chosen["seed"], "episodes": chosen["episodes"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="model folder or Hub repo id (default: the bundled weights)")
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders (label-map, FSS-1000 or PASCAL layout)")
    parser.add_argument("--fold", type=int, default=0, help="PASCAL-5i fold")
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write a plot of mIoU against shots here")
    parser.add_argument("--choose-threshold", action="store_true",
                        help="pick the thresholds that score best on these episodes and report with them")
    parser.add_argument("--write-threshold", action="store_true",
                        help="with --choose-threshold: also save them into the --weights folder's config.json")
    parser.add_argument("--tuned-from", metavar="JSON",
                        help="an evaluate json made with --choose-threshold on other episodes: also score the OR and "
                             "the mean at the thresholds per shot count it chose for them")
    parser.add_argument("--corrupt", action="store_true",
                        help="also run the 5-shot episodes with support 2 corrupted, each kind, and again with "
                             "support 1 (see evaluate_corruptions)")
    parser.add_argument("--corrupt-episodes", type=int, default=None,
                        help="episodes per set for --corrupt (default: --episodes)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="run the network at this input side instead of the one it was trained at (a test of "
                             "larger inputs for small objects; features are cached per size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    if args.write_threshold and not (args.choose_threshold and args.weights and os.path.isdir(args.weights)):
        parser.error("--write-threshold needs --choose-threshold and a --weights folder")
    if args.tuned_from and args.choose_threshold:
        parser.error("--tuned-from is for episodes the thresholds were not chosen on; "
                     "--choose-threshold tunes them here")
    tuned, tuned_on = None, None
    if args.tuned_from:
        try:
            tuned, tuned_on = read_tuned_thresholds(args.tuned_from, args.shots)
        except (OSError, ValueError, KeyError) as error:
            parser.error(f"--tuned-from: {error}")
    torch.set_num_threads(args.threads)

    model = load_model(args.weights, device=args.device or default_device())
    if args.input_size:
        model.config = dataclasses.replace(model.config, input_size=args.input_size)
    began = time.time()
    tallies, results, datasets = [], {}, []
    for root in args.data:
        dataset = open_dataset(root, fold=args.fold)
        cache = feature_cache(model, dataset, args.cache)
        tally, sampler = evaluate_dataset(model, dataset, cache, args.shots, args.episodes, args.seed)
        tallies.append(tally)
        datasets.append((dataset, cache))
        results[dataset.name] = {"classes": [dataset.class_names[c] for c in sampler.class_ids]}
    thresholds = {"convlstm": model.threshold, "or": model.threshold, "mean": model.threshold,
                  "prototype": model.prototype_threshold}
    if args.choose_threshold:
        thresholds = best_thresholds(tallies, args.shots)
        print(f"chosen thresholds: {thresholds}")
        tuned = {method: best_thresholds_per_shots(tallies, args.shots, method) for method in TUNED_BASELINES}
        # The corrupted episodes below are scored at the chosen threshold, like the clean ones.
        model.config = dataclasses.replace(model.config, threshold=thresholds["convlstm"])
    if args.corrupt:
        for dataset, cache in datasets:
            results[dataset.name]["corruption"] = evaluate_corruptions(
                model, dataset, cache, args.corrupt_episodes or args.episodes, args.seed)
            # support 1 made bad: only re-judging the first support (ModelConfig.rejudge_first) ever judges it;
            # the forced-open ablation is left out to keep the report's run short
            results[dataset.name]["corruption_first"] = evaluate_corruptions(
                model, dataset, cache, args.corrupt_episodes or args.episodes, args.seed, step=1, forced_open=False)
            results[dataset.name]["corruption_threshold"] = model.threshold
    if args.write_threshold:
        path = update_saved_config(args.weights, threshold=thresholds["convlstm"],
                                   prototype_threshold=thresholds["prototype"])
        print(f"saved into {path}")
    for name, tally in zip(results, tallies):
        results[name].update(report(tally, args.shots, thresholds, tuned))
    summary = {"episodes": args.episodes, "seed": args.seed, "shots": args.shots, "thresholds": thresholds,
               "seconds": round(time.time() - began, 1), "results": results}
    print(f"{summary['episodes']} episodes per set, seed {summary['seed']}; class mIoU / FB-IoU (%)")
    print(results_table(summary))
    if args.corrupt:
        print(f"support 2 made bad, {args.corrupt_episodes or args.episodes} five-shot episodes per set; class mIoU "
              "after each step (in brackets the step-5 change against clean episodes)")
        print(bad_support_table(summary))
        print("support 1 made bad, the same episodes")
        print(bad_first_table(summary))
    if tuned:
        summary["tuned_thresholds"] = {method: {str(k): t for k, t in per_shots.items()}
                                       for method, per_shots in tuned.items()}
        if tuned_on:  # where they were chosen, when not on these episodes
            summary["tuned_on"] = tuned_on
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if args.plot:
        from .viz import plot_shot_curves

        plot_shot_curves(summary).savefig(args.plot, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
