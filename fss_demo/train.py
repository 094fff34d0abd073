"""Episodic training of the head on cached backbone features.

    python -m fss_demo.train --data ../shared/data/ccp ../shared/data/camvid ../shared/data/caltech_pseudo \
        --out runs/main --iterations 2400 --bf16 --dice-weight 1.0

(the bundled weights' full recipe, with the composites, is in the README's "Train and evaluate").

Seeded and resumable: re-running the same command continues from `<out>/checkpoint.pt`.
The trained model is written to `<out>/model` (config.json + model.safetensors).
On a GPU it runs there (--device, default CUDA when present); data-parallel over N processes (GPUs, or CPU
processes with gloo) with `torchrun --nproc_per_node N -m fss_demo.train ...`, each process drawing --batch
episodes per step.
"""
import argparse
import dataclasses
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .datasets import EpisodeMix, EpisodeSampler, collate, open_dataset, training_split
from .backbone import build_backbone
from .corruptions import corrupt_randomly
from .features import DEFAULT_CACHE, FeatureCache
from .hub import load_model
from .model import FewShotSegmenter, ModelConfig, default_device


class TrainingData:
    """Every training episode's source: the data sets' training splits, their cached features, one mix."""

    def __init__(self, data_dirs, backbone, shots, cache_dir, size, balance="classes", shares=None):
        self.datasets, self.caches, samplers = [], [], []
        for root in data_dirs:
            dataset = open_dataset(root)
            classes, ids = training_split(dataset)
            samplers.append(EpisodeSampler(dataset, classes, ids, shots))
            self.caches.append(FeatureCache.build(dataset, backbone, size=size, cache_dir=cache_dir))
            self.datasets.append(dataset)
        names = [dataset.name for dataset in self.datasets]
        unknown = sorted(set(shares or {}) - set(names))
        if unknown:
            raise ValueError(f"--share names {unknown}, which are not among the data sets {names}")
        self.mix = EpisodeMix(samplers, balance, {names.index(name): share for name, share in (shares or {}).items()})

    def batch(self, rng, size, device="cpu"):
        """`size` random episodes, batched (see datasets.collate), and each one's class key (`class_key`)."""
        drawn = [self.mix.draw(rng) for _ in range(size)]
        batch = collate([(self.datasets[i], self.caches[i], episode) for i, episode in drawn], device=device)
        return batch, [class_key(self.datasets[i], episode.class_id) for i, episode in drawn]


def class_key(dataset, class_id):
    """"collection/class": the composites' "ccp/pants" is the same class as ccp's "pants", so a bad support of
    "another class" is never the same object from the other set, and it can come from the same collection."""
    name = dataset.class_names[class_id]
    return name if "/" in name else f"{dataset.name}/{name}"


# What the admission gate should learn from a corrupted support: keep it out (0); clean supports: let in (1). A kind
# may map to None (no target). Run 7 gave small patches none (a patch still shows the object) and its gate let them in
# (0.83-0.96); from run 8 every bad kind is kept out, as issue 9 asks: after a good first support a patch adds little.
GATE_TARGETS = {"off_object": 0.0, "over_painted": 0.0, "other_class": 0.0, "small_patch": 0.0}


def gate_loss(admissions, corrupted):
    """Binary cross-entropy of the admission gate at steps >= 2 against what each support is: clean (1) or bad
    (0, see GATE_TARGETS). admissions: K tensors (B, 1, 1, 1); corrupted: {(row, step): kind}."""
    values, targets = [], []
    for step in range(1, len(admissions)):
        for row in range(admissions[step].shape[0]):
            target = GATE_TARGETS[corrupted[(row, step)]] if (row, step) in corrupted else 1.0
            if target is not None:
                values.append(admissions[step][row].flatten())
                targets.append(target)
    if not values:
        return admissions[0].sum() * 0
    values = torch.cat(values).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(values, torch.tensor(targets, device=values.device))


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


def start_processes(device):
    """(rank, world size, device). Under `torchrun --nproc_per_node N` each process joins the group and takes
    its own GPU (NCCL), or shares the CPU (gloo); alone, it is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, torch.device(device)


def check_replicas_agree(head, world):
    """DDP keeps every process's copy of the head identical; check that it did, to the last bit."""
    if world == 1:
        return
    flat = torch.cat([p.detach().flatten() for p in head.parameters()])
    copies = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(copies, flat)
    differ = [r for r, copy in enumerate(copies) if not torch.equal(copy, flat)]
    if differ:
        raise RuntimeError(f"the head's weights differ between processes {differ} and this one")
    if dist.get_rank() == 0:
        print(f"the head's weights are identical in all {world} processes")


def main(argv=None):
    defaults = ModelConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders (any supported layout)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv and model/")
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--lstm-input-kernel", type=int, default=defaults.lstm_input_kernel,
                        help="the ConvLSTM's kernel on its input (3 or 1; on its state it is always 3)")
    parser.add_argument("--prior-levels", nargs="+", type=int, default=list(defaults.prior_levels),
                        help="backbone levels (0, 1, 2 = stride 8, 16, 32) that get a PFENet prior map")
    parser.add_argument("--max-guidance", action=argparse.BooleanOptionalAction, default=defaults.max_guidance,
                        help="the decoder also sees the maximum of the supports' guidance maps, not only their mean "
                             "(run 5 in NOTES.md; --no-max-guidance gives run 1's head)")
    parser.add_argument("--input-size", type=int, default=defaults.input_size, help="side of the square network input")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="episodes per step in each process")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--loss-size", type=int, default=160, help="side at which the loss is computed")
    # Both below were tried (NOTES.md): set balance + Dice lost 9 points of class mIoU on CamVid's novel classes.
    parser.add_argument("--dice-weight", type=float, default=0.0, help="weight of a per-episode soft-IoU term")
    parser.add_argument("--balance", choices=["sets", "classes"], default="classes",
                        help="draw a data set uniformly, then a class (sets), or a class from the union (classes)")
    parser.add_argument("--corrupt-probability", type=float, default=0.4,
                        help="share of episodes in which one support at a step >= 2 is replaced by a bad one (mask "
                             "off the object, over-painted, another class, a small patch): the gates learn to keep "
                             "such supports out; the loss stays against the true query mask")
    parser.add_argument("--gate-loss-weight", type=float, default=0.5,
                        help="weight of a loss that tells the admission gate which supports were made bad (0: it "
                             "learns only from the segmentation loss)")
    parser.add_argument("--share", nargs="*", default=[], metavar="SET=SHARE",
                        help="fixed shares of the episodes for some sets, e.g. composites_train=0.3; the other sets "
                             "share the rest as --balance says")
    parser.add_argument("--init-from", default=None,
                        help="a trained model folder whose head to start from (a second stage), instead of a random head")
    parser.add_argument("--train-only", default=None, metavar="PREFIX",
                        help="train only the head's parameters whose names start with PREFIX (e.g. support_gate), "
                             "the rest frozen")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many iterations in this run; run the same command again to go on")
    parser.add_argument("--bf16", action="store_true",
                        help="run the head's forward pass under bfloat16 autocast (1.5x faster steps on an AVX512-BF16 "
                             "CPU, NOTES.md run 16); weights, gradients, optimizer and losses stay float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present, else the CPU)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="where backbone features are cached")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="random backbone instead of ImageNet weights (only for quick smoke tests)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    rank, world, device = start_processes(args.device or default_device())
    torch.manual_seed(args.seed)  # the same initial head in every process
    config = dataclasses.replace(defaults, backbone=args.backbone, width=args.width, hidden=args.hidden, lstm_input_kernel=args.lstm_input_kernel,
                                 prior_levels=tuple(args.prior_levels), max_guidance=args.max_guidance,
                                 input_size=args.input_size)
    model = FewShotSegmenter(config)
    if args.init_from:
        model.head.load_state_dict(load_model(args.init_from, device="cpu").head.state_dict())
    if not args.no_pretrained:
        model.backbone = build_backbone(config.backbone, imagenet=True)
    model.to(device)
    if rank > 0:
        dist.barrier()  # rank 0 computes the feature caches first; the others then read them
    try:
        shares = {name: float(share) for name, share in (item.split("=") for item in args.share)}
    except ValueError:
        parser.error(f"--share takes SET=SHARE items, e.g. composites_train=0.3, not {args.share}")
    data = TrainingData(args.data, model.backbone, args.shots, args.cache, args.input_size, args.balance, shares)
    if rank == 0 and world > 1:
        dist.barrier()
    head = model.head
    if args.train_only:
        for name, parameter in head.named_parameters():
            parameter.requires_grad_(name.startswith(args.train_only))
        if not any(p.requires_grad for p in head.parameters()):
            parser.error(f"--train-only {args.train_only}: no parameter of the head starts with it")
    trained = head if world == 1 else torch.nn.parallel.DistributedDataParallel(head)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.iterations, pct_start=0.05)

    os.makedirs(args.out, exist_ok=True)
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    start, elapsed = 0, 0.0
    if os.path.isfile(checkpoint_path):
        saved = torch.load(checkpoint_path, map_location=device, weights_only=True)
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        start, elapsed = saved["iteration"], saved["elapsed"]
        if rank == 0:
            print(f"resuming at iteration {start}")
    # The same episodes for the same seed and resume point; each process its own.
    episode_rng = lambda iteration: np.random.default_rng([args.seed, iteration] + ([rank] if world > 1 else []))
    rng = episode_rng(start)

    head.train()
    began = time.time() - elapsed
    end = args.iterations if args.stop_after is None else min(args.iterations, start + args.stop_after)
    progress = tqdm(range(start, end), initial=start, total=args.iterations, desc="training", disable=rank > 0)
    running = None
    with open(os.path.join(args.out, "log.csv") if rank == 0 else os.devnull, "a") as log:
        for iteration in progress:
            (query, supports, masks, target), class_keys = data.batch(rng, args.batch, device)
            corrupted = corrupt_randomly(supports, masks, class_keys, rng, args.corrupt_probability)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                steps, _, _, admissions = trained(query, supports, masks, one_shot=False)
            steps, admissions = [s.float() for s in steps], [a.float() for a in admissions]
            losses = step_losses(steps, target, (args.loss_size, args.loss_size), args.dice_weight)
            loss = torch.stack(losses).mean()
            if args.gate_loss_weight:
                loss = loss + args.gate_loss_weight * gate_loss(admissions, corrupted)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DDP, gradients are averaged over the processes here
            torch.nn.utils.clip_grad_norm_(trainable, 5.0)
            optimizer.step()
            schedule.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            progress.set_postfix(loss=f"{running:.3f}", first=f"{losses[0].item():.3f}", last=f"{losses[-1].item():.3f}")
            log.write(f"{iteration},{loss.item():.4f},{losses[0].item():.4f},{losses[-1].item():.4f}\n")
            done = iteration + 1
            if done % 250 == 0 or done == end:
                if rank == 0:
                    state = {"head": head.state_dict(), "optimizer": optimizer.state_dict(),
                             "schedule": schedule.state_dict(), "iteration": done, "elapsed": time.time() - began}
                    torch.save(state, checkpoint_path + ".tmp")
                    os.replace(checkpoint_path + ".tmp", checkpoint_path)
                rng = episode_rng(done)  # keep the episode stream identical across resumes
    check_replicas_agree(head, world)
    if world > 1:
        dist.barrier()  # every process is done before rank 0 writes and all leave
    if end < args.iterations:
        if rank == 0:
            print(f"stopped at iteration {end} of {args.iterations}; run the same command again to go on")
    elif rank == 0:
        head.eval()
        model.to("cpu").save_pretrained(os.path.join(args.out, "model"))
        minutes = (time.time() - began) / 60
        print(f"trained {args.iterations} iterations in {minutes:.1f} min on {world} process(es); "
              f"model saved to {args.out}/model")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
