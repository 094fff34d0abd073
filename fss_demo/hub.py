"""Where weights come from: the bundled `weights/` folder, a local folder, or a Hugging Face Hub repo."""
import os

from .model import FewShotSegmenter, default_device

# The repository's weights/ folder. An installed package (pip install .) has none: it loads a folder or a Hub repo.
BUNDLED_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


def load_model(source=None, revision=None, device=None, **hub_kwargs):
    """Load a trained `FewShotSegmenter`, strictly, from safetensors only.

    source: a folder written by `save_pretrained`, or a Hub repo id ("owner/name"). Without it: the
    FSS_DEMO_WEIGHTS environment variable (folder or repo id), else the repository's bundled `weights/` folder.
    revision and hub_kwargs (cache_dir, token, ...) go to `from_pretrained` for Hub repos.
    device: where the model runs (default: CUDA when present, else the CPU).
    """
    source = source or os.environ.get("FSS_DEMO_WEIGHTS")
    if source is None:
        if not os.path.isfile(os.path.join(BUNDLED_WEIGHTS, "model.safetensors")):
            raise ValueError("no bundled weights here (an installed package has none): pass a model folder or a "
                             "Hub repo id, e.g. load_model('owner/name'), or set FSS_DEMO_WEIGHTS")
        source = BUNDLED_WEIGHTS
    source = os.fspath(source)
    if os.path.isdir(source):
        model = FewShotSegmenter.from_pretrained(source)
    elif os.path.exists(source) or source.count("/") != 1:
        raise ValueError(f"{source!r} is neither a model folder nor a Hub repo id like 'owner/name'")
    else:
        model = FewShotSegmenter.from_pretrained(source, revision=revision, **hub_kwargs)
    return model.to(device or default_device()).eval()
