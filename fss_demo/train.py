"""Episodic training of the head on cached backbone features. The defaults are the published recipe (`TrainConfig`):

    python -m fss_demo.train --data ../shared/data/ccp ../shared/data/caltech_pseudo \
        ~/.cache/fss_demo/composites/composites_train ~/.cache/fss_demo/composites/clutter_train --out runs/main

trains the bundled weights (the composites come first: README's "Train and evaluate"). The CamVid collection is not
given on its own (its classes still reach training inside the composites): with it, twice the training traded the
street objects for the rest (NOTES.md, runs 48-49). Without the composites set,
pass `--share` with nothing after it.

Seeded and resumable: re-running the same command continues from `<out>/checkpoint.pt`.
The trained model is written to `<out>/model` (config.json + model.safetensors + training.json, the settings).
On a GPU it runs there (--device, default CUDA when present); data-parallel over N processes (GPUs, or CPU
processes with gloo) with `torchrun --nproc_per_node N -m fss_demo.train ...`, each process drawing --batch
episodes per step.
"""
import argparse
import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .datasets import EpisodeMix, EpisodeSampler, collate, open_dataset, training_split
from .backbone import BACKBONES, build_backbone
from .corruptions import corrupt_randomly
from .features import DEFAULT_CACHE, FeatureCache
from .model import FewShotSegmenter, ModelConfig, default_device


@dataclass(frozen=True)
class TrainConfig:
    """How the head is trained. The defaults are the published recipe (weights/training.json; NOTES.md tells how it
    was chosen); saved beside every trained model as training.json."""
    shots: int = 5                  # supports per training episode (the k-loss scores every step)
    batch: int = 8                  # episodes per step in each process
    iterations: int = 4800
    lr: float = 1e-3                # the peak of a one-cycle schedule
    weight_decay: float = 1e-4
    loss_size: int = 160            # side at which the loss is computed
    dice_weight: float = 1.0        # a per-episode soft-IoU term: small objects weigh as much as large ones
    corrupt_probability: float = 0.4  # share of episodes with one bad support at a step >= 2 (fss_demo.corruptions)
    gate_loss_weight: float = 0.5   # tells the admission gate which supports were made bad
    one_shot_weight: float = 0.5    # the loss of each clean support's own 1-shot answer (what the fusion keeps)
    # fixed shares of some data sets: the cluttered composites teach episodes whose supports show other instances
    shares: dict = field(default_factory=lambda: {"composites_train": 0.2, "clutter_train": 0.1})
    bf16: bool = True               # the head's forward pass under bfloat16 autocast (weights, losses float32)
    seed: int = 0


class TrainingData:
    """Every training episode's source: the data sets' training splits, their cached features, one mix."""

    def __init__(self, data_dirs, backbone, shots, cache_dir, size, shares=None):
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
        self.mix = EpisodeMix(samplers, {names.index(name): share for name, share in (shares or {}).items()})

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


def gate_loss(admissions, corrupted):
    """Binary cross-entropy of the admission gate at steps >= 2 against what each support is: clean (let in, 1)
    or made bad (kept out, 0; every kind: after a good first support even a small patch adds little).
    admissions: K tensors (B, 1, 1, 1); corrupted: {(row, step): kind}."""
    values, targets = [], []
    for step in range(1, len(admissions)):
        for row in range(admissions[step].shape[0]):
            values.append(admissions[step][row].flatten())
            targets.append(0.0 if (row, step) in corrupted else 1.0)
    if not values:
        return admissions[0].sum() * 0
    values = torch.cat(values).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(values, torch.tensor(targets, device=values.device))


def one_shot_loss(one_shots, target, corrupted, size, dice_weight):
    """The mean loss of supports 2..K's own 1-shot answers (support 1's is step 1's), each scored on the query
    with the episodes where that support was made bad left out (a mask moved off the object has no right answer)."""
    losses = []
    for step, logits in enumerate(one_shots[1:], start=1):
        rows = [row for row in range(target.shape[0]) if (row, step) not in corrupted]
        if rows:
            losses += step_losses([logits[rows].float()], target[rows], size, dice_weight)
    return torch.stack(losses).mean() if losses else one_shots[0].sum() * 0


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


def parse_arguments(argv=None):
    """(TrainConfig, ModelConfig, run settings) from the command line; every recipe default is TrainConfig's."""
    recipe, model = TrainConfig(), ModelConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders (any supported layout)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv and model/")
    architecture = parser.add_argument_group("the model (ModelConfig)")
    architecture.add_argument("--backbone", default=model.backbone, help=f"one of {sorted(BACKBONES)}")
    architecture.add_argument("--width", type=int, default=model.width)
    architecture.add_argument("--hidden", type=int, default=model.hidden)
    architecture.add_argument("--input-size", type=int, default=model.input_size,
                              help="side of the square network input")
    architecture.add_argument("--cue-blocks", type=int, nargs="*", default=list(model.cue_blocks),
                              help="backbone blocks that give one more cosine cue each (ModelConfig.cue_blocks)")
    architecture.add_argument("--discriminant", type=float, default=model.discriminant,
                              help="train with the linear discriminant in the fused answers at this weight "
                                   "(ModelConfig.discriminant; 0: added after training, if at all)")
    training = parser.add_argument_group("the recipe (TrainConfig; the defaults are the published one's)")
    for name in ("shots", "batch", "iterations", "lr", "weight_decay", "loss_size", "dice_weight",
                 "corrupt_probability", "gate_loss_weight", "one_shot_weight", "seed"):
        default = getattr(recipe, name)
        training.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    training.add_argument("--share", nargs="*", default=[f"{k}={v}" for k, v in recipe.shares.items()],
                          metavar="SET=SHARE", help="fixed shares of the episodes for some sets (the others share "
                          "the rest by class); `--share` alone: none")
    training.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=recipe.bf16,
                          help="the head's forward pass under bfloat16 autocast (1.5x faster steps on an AVX512-BF16 "
                               "CPU; a CPU without bfloat16 kernels trains in float32 whatever this says)")
    run = parser.add_argument_group("this run (not part of the recipe)")
    run.add_argument("--stop-after", type=int, default=None,
                     help="stop after this many iterations in this run; run the same command again to go on")
    run.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    run.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present, else the CPU)")
    run.add_argument("--cache", default=DEFAULT_CACHE, help="where backbone features are cached")
    run.add_argument("--no-pretrained", action="store_true",
                     help="random backbone instead of ImageNet weights (only for quick smoke tests)")
    args = parser.parse_args(argv)
    try:
        shares = {name: float(share) for name, share in (item.split("=") for item in args.share)}
    except ValueError:
        parser.error(f"--share takes SET=SHARE items, e.g. composites_train=0.25, not {args.share}")
    recipe = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                            if f.name != "shares"}, shares=shares)
    model = dataclasses.replace(model, backbone=args.backbone, width=args.width, hidden=args.hidden,
                                input_size=args.input_size, cue_blocks=tuple(args.cue_blocks),
                                discriminant=args.discriminant)
    return recipe, model, args


def bf16_is_fast(device):
    """Does bfloat16 autocast pay here? On CUDA, and on CPUs with bfloat16 instructions (AVX512-BF16 or AMX). On
    others oneDNN emulates them, slower than float32: 10 s a step against 1.3 s on an AVX2-only CPU, and 2.1 s
    against 1.1 s on an AVX512 CPU without AVX512-BF16 (where oneDNN's own check still says bfloat16 is supported)."""
    if torch.device(device).type != "cpu":
        return True
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these checks: keep the recipe
        return True


def main(argv=None):
    recipe, config, args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    rank, world, device = start_processes(args.device or default_device())
    if recipe.bf16 and not bf16_is_fast(device):
        print("this CPU has no bfloat16 instructions, where bfloat16 autocast runs 2-7x slower than float32: "
              "training in float32 (as --no-bf16; training.json says so)")
        recipe = dataclasses.replace(recipe, bf16=False)
    torch.manual_seed(recipe.seed)  # the same initial head in every process
    model = FewShotSegmenter(config)
    if not args.no_pretrained:
        model.backbone = build_backbone(config.backbone, imagenet=True, cue_blocks=config.cue_blocks)
    model.to(device)
    if rank > 0:
        dist.barrier()  # rank 0 computes the feature caches first; the others then read them
    data = TrainingData(args.data, model.backbone, recipe.shots, args.cache, config.input_size, recipe.shares)
    if rank == 0 and world > 1:
        dist.barrier()
    model.recipe = {**dataclasses.asdict(recipe), "data": [dataset.name for dataset in data.datasets]}
    head = model.head
    trained = head if world == 1 else torch.nn.parallel.DistributedDataParallel(head)
    trainable = list(head.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.iterations,
                                                   pct_start=0.05)

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
    episode_rng = lambda iteration: np.random.default_rng([recipe.seed, iteration] + ([rank] if world > 1 else []))
    rng = episode_rng(start)

    head.train()
    began = time.time() - elapsed
    end = recipe.iterations if args.stop_after is None else min(recipe.iterations, start + args.stop_after)
    progress = tqdm(range(start, end), initial=start, total=recipe.iterations, desc="training", disable=rank > 0)
    running = None
    with open(os.path.join(args.out, "log.csv") if rank == 0 else os.devnull, "a") as log:
        for iteration in progress:
            (query, supports, masks, target), class_keys = data.batch(rng, recipe.batch, device)
            corrupted = corrupt_randomly(supports, masks, class_keys, rng, recipe.corrupt_probability)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
                steps, one_shots, _, admissions, _ = trained(query, supports, masks,
                                                             one_shot=recipe.one_shot_weight > 0)
            steps, admissions = [s.float() for s in steps], [a.float() for a in admissions]
            loss_size = (recipe.loss_size, recipe.loss_size)
            losses = step_losses(steps, target, loss_size, recipe.dice_weight)
            loss = torch.stack(losses).mean()
            if recipe.one_shot_weight:
                loss = loss + recipe.one_shot_weight * one_shot_loss(one_shots, target, corrupted, loss_size,
                                                                     recipe.dice_weight)
            if recipe.gate_loss_weight:
                loss = loss + recipe.gate_loss_weight * gate_loss(admissions, corrupted)
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
    if end < recipe.iterations:
        if rank == 0:
            print(f"stopped at iteration {end} of {recipe.iterations}; run the same command again to go on")
    elif rank == 0:
        head.eval()
        model.to("cpu").save_pretrained(os.path.join(args.out, "model"))
        minutes = (time.time() - began) / 60
        print(f"trained {recipe.iterations} iterations in {minutes:.1f} min on {world} process(es); "
              f"model saved to {args.out}/model")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
