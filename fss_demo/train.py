"""Episodic training of the head on cached backbone features.

    python -m fss_demo.train --data ../shared/data/ccp ../shared/data/camvid ../shared/data/caltech_pseudo \
        --out runs/main --iterations 3000

Seeded and resumable: re-running the same command continues from `<out>/checkpoint.pt`.
The trained model is written to `<out>/model` (config.json + model.safetensors).
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .datasets import EpisodeSampler, open_dataset, training_split
from .features import DEFAULT_CACHE, FeatureCache
from .model import FewShotSegmenter


class EpisodeSource:
    """Training episodes drawn from several datasets. balance="sets": a set uniformly, then one of its training
    classes uniformly (each collection weighs the same); "classes": a class uniformly from the union."""

    def __init__(self, data_dirs, backbone, shots, cache_dir, size, balance="classes"):
        self.sets = []
        for root in data_dirs:
            dataset = open_dataset(root)
            classes, ids = training_split(dataset)
            sampler = EpisodeSampler(dataset, classes, ids, shots)
            cache = FeatureCache.build(dataset, backbone, size=size, cache_dir=cache_dir)
            self.sets.append((dataset, sampler, cache))
        self.classes = [(s, c) for s, (_, sampler, _) in enumerate(self.sets) for c in sampler.class_ids]
        self.shots = shots
        self.balance = balance

    def batch(self, rng, size):
        """query levels [(B, C, h, w)], supports [K][levels], support masks [K](B, 1, H, W), targets (B, H, W)."""
        episodes = []
        for _ in range(size):
            if self.balance == "sets":
                dataset, sampler, cache = self.sets[rng.integers(len(self.sets))]
                class_id = sampler.class_ids[rng.integers(len(sampler.class_ids))]
            else:
                set_index, class_id = self.classes[rng.integers(len(self.classes))]
                dataset, sampler, cache = self.sets[set_index]
            pool = sampler.pool[class_id]
            ids = [pool[i] for i in rng.choice(len(pool), self.shots + 1, replace=False)]
            episodes.append((dataset, cache, class_id, ids))
        return collate(episodes, self.shots)


def collate(episodes, shots):
    """Stack episodes [(dataset, cache, class_id, [query id, support ids...])] into batched tensors."""
    levels, targets = [], []
    for dataset, cache, class_id, ids in episodes:
        features, labels = cache.gather(ids)
        levels.append(features)
        targets.append(torch.from_numpy(dataset.binarize(labels.numpy(), class_id)))
    levels = [torch.stack([episode[l] for episode in levels]) for l in range(3)]  # (B, 1+K, C, h, w)
    targets = torch.stack(targets)  # (B, 1+K, H, W) in {0, 1, 255}
    query = [level[:, 0] for level in levels]
    supports = [[level[:, k] for level in levels] for k in range(1, shots + 1)]
    masks = [(targets[:, k:k + 1] == 1).float() for k in range(1, shots + 1)]
    return query, supports, masks, targets[:, 0]


def step_losses(step_logits, target, size, dice_weight=0.0):
    """Loss of every step's prediction (the authors' k-loss): binary cross-entropy, plus `dice_weight` times a
    soft-IoU (Dice) term per episode, which weighs small objects as much as large ones. Label 255 ignored."""
    target = F.interpolate(target[:, None].float(), size=size, mode="nearest")
    valid = target != 255
    truth = torch.where(valid, target, torch.zeros_like(target))
    losses = []
    for logits in step_logits:
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        loss = F.binary_cross_entropy_with_logits(up[valid], target[valid])
        if dice_weight:
            p = torch.sigmoid(up) * valid
            dice = 1 - (2 * (p * truth).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + truth.sum((1, 2, 3)) + 1)
            loss = loss + dice_weight * dice.mean()
        losses.append(loss)
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders (any supported layout)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv and model/")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--prior-levels", nargs="+", type=int, default=[1, 2],
                        help="backbone levels (0, 1, 2 = stride 8, 16, 32) that get a PFENet prior map")
    parser.add_argument("--max-guidance", action=argparse.BooleanOptionalAction, default=True,
                        help="the decoder also sees the maximum of the supports' guidance maps, not only their mean "
                             "(run 5 in NOTES.md; --no-max-guidance gives run 1's head)")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--loss-size", type=int, default=160, help="side at which the loss is computed")
    # Both below were tried (NOTES.md): set balance + Dice lost 9 points of class mIoU on CamVid's novel classes.
    parser.add_argument("--dice-weight", type=float, default=0.0, help="weight of a per-episode soft-IoU term")
    parser.add_argument("--balance", choices=["sets", "classes"], default="classes",
                        help="draw a data set uniformly, then a class (sets), or a class from the union (classes)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many iterations in this run; run the same command again to go on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="where backbone features are cached")
    parser.add_argument("--input-size", type=int, default=320, help="side of the square network input")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="random backbone instead of ImageNet weights (only for quick smoke tests)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = FewShotSegmenter(backbone=args.backbone, width=args.width, hidden=args.hidden, prior_levels=args.prior_levels,
                             max_guidance=args.max_guidance, input_size=args.input_size)
    if not args.no_pretrained:
        model.backbone.load_imagenet()
    source = EpisodeSource(args.data, model.backbone, args.shots, args.cache, args.input_size, args.balance)
    head = model.head
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.iterations, pct_start=0.05)

    os.makedirs(args.out, exist_ok=True)
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    start, elapsed = 0, 0.0
    if os.path.isfile(checkpoint_path):
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        start, elapsed = saved["iteration"], saved["elapsed"]
        print(f"resuming at iteration {start}")
    rng = np.random.default_rng([args.seed, start])  # the same episodes for the same seed and resume point

    head.train()
    began = time.time() - elapsed
    log = open(os.path.join(args.out, "log.csv"), "a")
    end = args.iterations if args.stop_after is None else min(args.iterations, start + args.stop_after)
    progress = tqdm(range(start, end), initial=start, total=args.iterations, desc="training")
    running = None
    for iteration in progress:
        query, supports, masks, target = source.batch(rng, args.batch)
        steps, _, _ = head.run(query, supports, masks, one_shot=False)
        losses = step_losses(steps, target, (args.loss_size, args.loss_size), args.dice_weight)
        loss = torch.stack(losses).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        progress.set_postfix(loss=f"{running:.3f}", first=f"{losses[0].item():.3f}", last=f"{losses[-1].item():.3f}")
        log.write(f"{iteration},{loss.item():.4f},{losses[0].item():.4f},{losses[-1].item():.4f}\n")
        done = iteration + 1
        if done % 250 == 0 or done == end:
            state = {"head": head.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "iteration": done, "elapsed": time.time() - began}
            torch.save(state, checkpoint_path + ".tmp")
            os.replace(checkpoint_path + ".tmp", checkpoint_path)
            rng = np.random.default_rng([args.seed, done])  # keep the episode stream identical across resumes
    log.close()
    if end < args.iterations:
        print(f"stopped at iteration {end} of {args.iterations}; run the same command again to go on")
        return
    head.eval()
    model.save_pretrained(os.path.join(args.out, "model"))
    minutes = (time.time() - began) / 60
    print(f"trained {args.iterations} iterations in {minutes:.1f} min; model saved to {args.out}/model")


if __name__ == "__main__":
    main()
