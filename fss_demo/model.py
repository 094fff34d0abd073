"""The user-facing model: `ModelConfig`, and `FewShotSegmenter`, which owns the frozen backbone and the trainable head
(`fss_demo.head`) and answers `segment()`: a query and a few (image, mask) supports in, a mask after every support out.
Saved as config.json + model.safetensors (+ training.json, the recipe), loaded strictly from safetensors only.
"""
import dataclasses
import hashlib
import itertools
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from . import images
from .backbone import backbone_spec, build_backbone
from .head import DECODER_CUES, FusionHead


def default_device():
    """Where training, evaluation and a loaded model run unless told: a CUDA GPU when there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ModelConfig:
    """Every setting of a model, saved as its config.json. The defaults are the published model's, but for what is
    chosen on validation after training: the admission gate's calibration (trained at 1 and 0), self-support,
    re-judging the first support and the discriminant (all off in training) and the thresholds."""
    backbone: str = "mobilenet_v2"
    width: int = 64                  # the fusion branch
    hidden: int = 64                 # the ConvLSTM's state
    feature_dropout: float = 0.2     # on the query's projected features, in training
    input_size: int = images.NETWORK_SIZE
    threshold: float = 0.5           # on the sigmoid output; chosen on validation (evaluate --choose-threshold)
    prototype_threshold: float = 0.2  # on the training-free baseline's cosine, chosen likewise
    support_cache_size: int = 32     # supports whose backbone features are kept
    # The decoder's base cue after step k: "max", the gated maximum of supports 1..k's own prototype cosines (a
    # small object one support matches well stays lit); "mean", the cosine to their gated mean prototype (v0.4).
    decoder_cue: str = "max"
    # The admission gate's value is sigmoid(gate_scale * (logit - gate_shift)); chosen on validation after
    # training (python -m fss_demo.calibrate_gate; why: head.SupportGate). 1 and 0: the gate as trained.
    gate_scale: float = 1.0
    gate_shift: float = 0.0
    # Backbone blocks (indices; BackboneSpec.check_cue_blocks) whose outputs give one more cue each: the query's
    # cosine to the support's object mean at that block (HSNet's many-layer cues). Empty: none (a backbone may still
    # add cue maps of its own, BackboneSpec.cue_map_channels).
    cue_blocks: tuple = ()
    # Self-support (head.self_support): every answer refined by the query's own prototypes, at this weight in units
    # of the head's similarity scale; training-free, chosen on validation. 0: off (every model before v0.7).
    self_support: float = 0.0
    # Self-support on the discriminant's schedule: its weight times 1 - 1/(supports let in), so nothing at one
    # support, whose answer is the weakest start for it. False: at the same weight on every answer (every model
    # before v0.13).
    self_support_grows: bool = False
    # Re-judging the first support (head.FusionHead.first_support): from the third support on, the ConvLSTM starts
    # again from another support when the later ones keep support 1 out; chosen after training. False: every model
    # before v0.8.
    rejudge_first: bool = False
    # The linear discriminant fitted on the supports let in (head.discriminant_logits), added to the fused answers
    # at this weight times 1 - 1/(supports let in); training-free, chosen on validation. 0: off (every model
    # before v0.11).
    discriminant: float = 0.0

    def __post_init__(self):
        if self.decoder_cue not in DECODER_CUES:
            raise ValueError(f"decoder_cue={self.decoder_cue!r}: known cues are {DECODER_CUES}")
        object.__setattr__(self, "cue_blocks", tuple(self.cue_blocks))  # config.json holds a list
        backbone_spec(self.backbone).check_cue_blocks(self.cue_blocks)

    # Settings of earlier versions that now have one value: a config.json that holds that value still loads.
    RETIRED = {"fusion": "gated", "lstm_input_kernel": 3, "max_guidance": True, "prior_levels": [1, 2]}

    @classmethod
    def from_dict(cls, saved):
        """The config of a saved config.json. Unknown settings are refused, and so are retired ones at another
        value than the one this version has: that model's weights would not fit."""
        values = dict(saved)
        values.setdefault("decoder_cue", "mean")  # a config.json from before v0.5 has none: its model used the mean
        for name, only in cls.RETIRED.items():
            if name in values and values.pop(name) != only:
                raise ValueError(f"config.json sets {name}={saved[name]!r}: this version has only {name}={only!r}, "
                                 "so that model's weights do not fit it")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"config.json has settings this version does not know: {unknown}")
        return cls(**values)


# What `segment` takes: a file path, a PIL image or a numpy array (see fss_demo.images for the exact rules).
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
MaskLike = ImageLike  # nonzero = object


@dataclass
class Segmentation:
    """Result of `FewShotSegmenter.segment`: one entry per step k (after supports 1..k). Masks are (H, W), the
    query's own size. Probability maps are at the size they were worked out at: the query's own, or for a photo
    over `images.MAX_SIDE` pixels on its longer side, shrunk to that."""

    masks: list                   # K bool (H, W): the ConvLSTM's answer after supports 1..k
    probabilities: list           # K float32 (h, w) in [0, 1]
    one_shot_probabilities: list  # K float32 (h, w): support k alone (a 1-shot prediction)
    or_masks: list                # K bool (H, W): the logical OR of the 1-shot masks of supports 1..k
    or_probabilities: list        # K float32 (h, w): their running maximum
    admissions: list              # K floats in [0, 1]: how far support k was let in (the admission gate; 1 for
                                  # the support a run starts from, which has nothing to be compared with)
    gates: list                   # trace=True: per support, K dicts {input_gate, forget_gate, output_gate, candidate,
                                  # cell, hidden: float32 (hidden, h16, w16)}, at stride 16 of the network input; else []
                                  # (input_gate includes the admission factor)
    order: list                   # the supports' numbers (1-based) in the order the ConvLSTM took them for the last
                                  # answer: 1..K, unless it started from another support (ModelConfig.rejudge_first).
                                  # admissions and gates are that run's, given per support (support k's at [k - 1])


def update_saved_config(folder, **settings):
    """Write settings chosen after training (threshold, gate calibration) into a saved model's config.json, checked
    as loading checks it. -> the file's path"""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = {**json.load(f), **settings}
    ModelConfig.from_dict(config)
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return path


def listed(keys):
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "") if keys else "none"


def read_weights(path, model, source):
    """The tensors of a model.safetensors file, checked against `model` before any is loaded: every tensor there,
    none unknown, each of the model's own shape and dtype, and finite. Anything else is a ValueError that names
    `source` (the folder or repo) and, for a bad tensor, the file and the tensor."""
    try:
        tensors = load_file(path)
    except Exception as error:  # SafetensorError (a garbage header), OSError (a truncated file), ...
        raise ValueError(f"{source!r}: its model.safetensors cannot be read ({error}); is the file complete? "
                         "Expected a file written by save_pretrained") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source!r}: model.safetensors does not fit this model's config.json; missing tensors: "
                         f"{listed(missing)}; unexpected tensors: {listed(unexpected)}")
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape:
            raise ValueError(f"{source!r}: model.safetensors does not fit this model's config.json: tensor {name} "
                             f"has shape {tuple(tensor.shape)}, the model {tuple(want.shape)}")
        if tensor.dtype != want.dtype:
            raise ValueError(f"{path}: tensor {name} is {tensor.dtype}; this model's is {want.dtype} (weights are "
                             "not cast: a cast can change what the model does)")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {name} holds NaN or infinite values")
    return tensors


class FewShotSegmenter(nn.Module, PyTorchModelHubMixin, library_name="fss-demo",
                       tags=["few-shot-segmentation", "image-segmentation", "convlstm"],
                       pipeline_tag="image-segmentation"):
    """Segment, in a query image, the object marked in a few support images.

    >>> model = FewShotSegmenter()             # random head; use fss_demo.load_model() for trained weights
    >>> seg = model.segment(query, [(image, mask), ...])

    A model loaded from a folder or Hub repo keeps that card's licence and its training.json (the recipe), and
    `save_pretrained` writes them again. A model trained anew has no licence: it follows its training data, which
    only the person publishing it knows.
    """

    def __init__(self, config: Optional[ModelConfig] = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.backbone = build_backbone(self.config.backbone, cue_blocks=self.config.cue_blocks)
        spec = backbone_spec(self.config.backbone)
        self.head = FusionHead(spec.level_channels, self.config.width, self.config.hidden, self.config.feature_dropout,
                               self.config.decoder_cue, self.config.gate_scale, self.config.gate_shift,
                               spec.cue_channels(self.config.cue_blocks), self.config.self_support,
                               self.config.rejudge_first, self.config.discriminant, self.config.self_support_grows)
        self.licence = None   # the weights' licence (an SPDX-like id, e.g. "cc-by-nc-4.0"), when known
        self.recipe = None  # the recipe that trained them (fss_demo.train.TrainConfig as a dict), when known
        self._empty_caches()
        self.eval()

    def _empty_caches(self):
        self._support_cache = OrderedDict()
        self._support_cache_lock = threading.Lock()
        self._last_query = None  # (key, backbone features) of the last query

    def __getstate__(self):
        """For copy.deepcopy and pickle: the weights and settings, not the caches (a lock cannot be copied)."""
        state = super().__getstate__()  # a copy of __dict__: the live model keeps its caches
        for name in ("_support_cache", "_support_cache_lock", "_last_query"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._empty_caches()

    @property
    def config(self):
        return self._hub_mixin_config

    @config.setter
    def config(self, config):
        # The mixin writes `_hub_mixin_config` as config.json: one object, so a changed threshold is saved too.
        self._hub_mixin_config = config
        if "head" in self._modules:  # a changed cue, self-support, re-judging, discriminant or gate calibration acts
            # at once, as a threshold does
            self.head.decoder_cue, self.head.self_support = config.decoder_cue, config.self_support
            self.head.rejudge_first, self.head.discriminant = config.rejudge_first, config.discriminant
            self.head.self_support_grows = config.self_support_grows
            self.head.support_gate.scale, self.head.support_gate.shift = config.gate_scale, config.gate_shift

    @property
    def input_size(self):
        return self.config.input_size

    @property
    def threshold(self):
        return self.config.threshold

    @property
    def prototype_threshold(self):
        return self.config.prototype_threshold

    @property
    def device(self):
        return next(self.parameters()).device

    # -- saving and loading: config.json + model.safetensors (+ training.json), loaded strictly ------------------

    @classmethod
    def _decode_arg(cls, expected_type, value):
        if expected_type in (ModelConfig, Optional[ModelConfig]) and isinstance(value, dict):
            return ModelConfig.from_dict(value)
        return super()._decode_arg(expected_type, value)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location="cpu", strict=True, **model_kwargs):
        """Safetensors only (never a pickle), and every tensor must be there and sound: a clear error names what
        is not. The card's licence and training.json come along when the folder or repo has them."""
        def fetch(filename, optional=False):
            if os.path.isdir(model_id):
                path = os.path.join(model_id, filename)
                return path if os.path.isfile(path) else None
            try:
                return hf_hub_download(repo_id=model_id, filename=filename, revision=revision, cache_dir=cache_dir,
                                       force_download=force_download, token=token, local_files_only=local_files_only)
            except LocalEntryNotFoundError:  # offline, and not in the cache (a subclass: caught first)
                if optional:
                    return None
                raise
            except EntryNotFoundError:
                return None

        weights = fetch("model.safetensors")
        if weights is None:
            where = f"{model_id!r}" if os.path.isdir(model_id) else f"the Hub repo {model_id!r}"
            raise ValueError(f"{where} holds no model.safetensors (is it a save_pretrained folder? other weight "
                             "formats are not read: they can run code when loaded)")
        model = cls(**model_kwargs)
        model.load_state_dict(read_weights(weights, model, model_id), strict=True)
        card, training = fetch("README.md", optional=True), fetch("training.json", optional=True)
        model.licence = ModelCard.load(card).data.license if card else None
        if training:
            with open(training) as f:
                model.recipe = json.load(f)
        return model.to(map_location).eval()

    def _save_pretrained(self, save_directory):
        super()._save_pretrained(save_directory)
        if self.recipe is not None:
            with open(os.path.join(save_directory, "training.json"), "w") as f:
                json.dump(self.recipe, f, indent=2)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The card save_pretrained writes: the weights' licence when known, else a word that none is given."""
        card = super().generate_model_card(*args, **kwargs)
        if self.licence:
            card.data.license = self.licence
            card.text += f"\nLicence of these weights: {self.licence} (as in the card they were loaded with).\n"
        else:
            card.text += ("\nLicence: none given. A model's licence follows its training data: add one here before "
                          "publishing.\n")
        if self.recipe is not None:
            card.text += "\nTrained with `python -m fss_demo.train` and these settings (training.json):\n\n```json\n" \
                         + json.dumps(self.recipe, indent=2) + "\n```\n"
        return card

    # -- features ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def features(self, image):
        """RGB uint8 (H, W, 3) -> the backbone's maps (1, C, h, w) for one image: 3 levels, then any cue maps."""
        return self._network_features(images.to_network(image, self.input_size))

    def _network_features(self, x):
        """The backbone's level maps of one network input (float32 (3, s, s), as images.to_network gives)."""
        return self.backbone(torch.from_numpy(x)[None].to(self.device))

    def _support_features(self, image, mask):
        """Backbone features of a support, cached by content: changing only the query reuses them."""
        key = hashlib.sha1(image.tobytes() + str(image.shape).encode() + np.packbits(mask).tobytes()).hexdigest()
        with self._support_cache_lock:  # the app serves requests on threads: look up and move in one go
            value = self._support_cache.get(key)
            if value is not None:
                self._support_cache.move_to_end(key)
                return value
        network_mask = torch.from_numpy(images.mask_to_network(mask, self.input_size))[None, None].to(self.device)
        value = (self.features(image), network_mask)
        with self._support_cache_lock:
            self._support_cache[key] = value
            while len(self._support_cache) > self.config.support_cache_size:
                self._support_cache.popitem(last=False)
        return value

    def _query_features(self, image):
        """The query's backbone features. The last query's are kept: the app runs `leave_one_out` (and may run
        another order) right after `segment` on the same query, which then need no backbone pass."""
        x = images.to_network(image, self.input_size)
        key = hashlib.sha1(x.tobytes() + str(x.shape).encode()).hexdigest()
        last = self._last_query  # read once: another request may replace it meanwhile
        if last is None or last[0] != key:
            last = self._last_query = (key, self._network_features(x))
        return last[1]

    def clear_cache(self):
        with self._support_cache_lock:
            self._support_cache.clear()
        self._last_query = None

    def _prepare_supports(self, supports):
        """Checked supports -> [(backbone features, network-size mask)], from the cache where possible."""
        if supports is None or isinstance(supports, (str, bytes, np.ndarray, Image.Image)):
            raise ValueError("supports: expected a list of (image, mask) pairs")
        supports = list(supports)
        images.check_support_count(len(supports))
        prepared = []
        for number, pair in enumerate(supports, start=1):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"Support {number}: expected an (image, mask) pair")
            prepared.append(self._support_features(*images.load_support(pair[0], pair[1], number)))
        return prepared

    def _to_probabilities(self, logits, size):
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(up)[0, 0].float().cpu().numpy()

    # -- the public API --------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def segment(self, query: ImageLike, supports: Iterable[tuple[ImageLike, MaskLike]],
                trace: bool = False, open_gates: Iterable[int] = ()) -> Segmentation:
        """Find in `query` the kind of object marked in the supports, fed to the ConvLSTM one at a time.

        query: an image; supports: (image, mask) pairs, at most MAX_SUPPORTS, nonzero mask = object.
        trace: also return each support's gate activations (`Segmentation.gates`).
        open_gates: an ablation: supports (1-based, as given) whose input gate is forced fully open, admission
        included, to see what a support the gates kept out would have done.
        Bad input raises a ValueError that says what to fix.
        """
        query_image, own_size = images.load_image_with_size(query, "The query image")
        prepared = self._prepare_supports(supports)
        query_levels = self._query_features(query_image)
        steps, one_shots, traces, admissions, order = self.head(query_levels, [f for f, _ in prepared],
                                                                [m for _, m in prepared], trace=trace,
                                                                open_gate_at=tuple(open_gates))
        size = query_image.shape[:2]
        probabilities = [self._to_probabilities(s, size) for s in steps]
        one_shot = [self._to_probabilities(s, size) for s in one_shots]
        at_own_size = lambda masks: [images.resize_mask(mask, own_size) for mask in masks]
        return Segmentation(
            masks=at_own_size([p > self.threshold for p in probabilities]),
            probabilities=probabilities,
            one_shot_probabilities=one_shot,
            # itertools, not np.*.accumulate over the stacked list: the same maps, 6 ms less at 5 shots (measured)
            or_masks=at_own_size(itertools.accumulate([p > self.threshold for p in one_shot], np.logical_or)),
            or_probabilities=list(itertools.accumulate(one_shot, np.maximum)),
            admissions=[float(a.flatten()[0]) for a in admissions],
            gates=[{name: value[0].float().cpu().numpy() for name, value in step.items() if name != "admission"}
                   for step in traces],
            order=[int(number) + 1 for number in order[0]])

    @torch.inference_mode()
    def leave_one_out(self, query: ImageLike, supports: Iterable[tuple[ImageLike, MaskLike]]) -> list:
        """What each support did: for each k, the ConvLSTM's final probabilities with support k left out (the
        others given in their order, and run as `segment` runs them), or None when it is the only support; at the
        size `segment` works at. The query's and supports' backbone features come from the caches that `segment`
        filled, and each support's part that does not depend on the order (its evidence, its answer alone) is worked
        out once: the K runs cost only the ConvLSTM's steps."""
        query_image = images.load_image(query, "The query image")
        prepared = self._prepare_supports(supports)
        context = self.head.read_query(self._query_features(query_image))
        # each run fuses all but one: with two supports, a lone support, whose discriminant pixels go unused
        passes = self.head.read_supports(context, [features for features, _ in prepared],
                                         [mask for _, mask in prepared], with_statistics=len(prepared) > 2)
        answers = []
        for k in range(len(passes)):
            others = passes[:k] + passes[k + 1:]
            if not others:
                answers.append(None)
                continue
            steps = self.head.fuse(context, others, one_shot=False).steps
            answers.append(self._to_probabilities(steps[-1], query_image.shape[:2]))
        return answers
