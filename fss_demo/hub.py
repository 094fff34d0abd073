"""Where weights come from: the bundled `weights/` folder, a local folder, or a Hugging Face Hub repo."""
import os

from .model import FewShotSegmenter

BUNDLED_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


def load_model(source=None, revision=None, **hub_kwargs):
    """Load a trained `FewShotSegmenter`.

    source: a folder written by `save_pretrained`, or a Hub repo id ("owner/name"). Without it: the
    FSS_DEMO_WEIGHTS environment variable (folder or repo id), else the bundled `weights/` folder.
    revision and hub_kwargs (cache_dir, token, ...) go to `from_pretrained` for Hub repos.
    """
    source = source or os.environ.get("FSS_DEMO_WEIGHTS") or BUNDLED_WEIGHTS
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "model.safetensors")):
            raise ValueError(f"{source!r} holds no model.safetensors: is it a save_pretrained folder?")
        model = FewShotSegmenter.from_pretrained(source)
    elif os.path.exists(source) or source.count("/") != 1:
        raise ValueError(f"{source!r} is neither a model folder nor a Hub repo id like 'owner/name'")
    else:
        model = FewShotSegmenter.from_pretrained(source, revision=revision, **hub_kwargs)
    return model.eval()
