"""Loading weights: a local folder, FSS_DEMO_WEIGHTS, the bundled folder, a Hub repo through a local stand-in
endpoint (HF_ENDPOINT), and the Hub cache with HF_HUB_OFFLINE=1."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fss_demo
from fss_demo.hub import BUNDLED_WEIGHTS

from .hub_standin import COMMIT, serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOAD_AND_SEGMENT = """
import json, sys, numpy as np, fss_demo
model = fss_demo.load_model(*sys.argv[1:2], **json.loads(sys.argv[2]))
rng = np.random.default_rng(0)
image = rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)
mask = np.zeros((48, 56), bool); mask[10:30, 10:30] = True
print(json.dumps({"threshold": model.threshold, "p": float(model.segment(image, [(image, mask)]).probabilities[0].mean())}))
"""


def run_python(args, env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FSS_DEMO"))}
    env.update(env_extra, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", LOAD_AND_SEGMENT] + args, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("saved")
    tiny_model.save_pretrained(folder)
    return str(folder)


def test_folder_round_trip(saved_folder, tiny_model):
    loaded = fss_demo.load_model(saved_folder)
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), name
    assert {"config.json", "model.safetensors"} <= set(os.listdir(saved_folder))
    assert json.load(open(os.path.join(saved_folder, "config.json")))["input_size"] == 64


def test_environment_variable_and_bundled_default(saved_folder, monkeypatch):
    monkeypatch.setenv("FSS_DEMO_WEIGHTS", saved_folder)
    assert fss_demo.load_model().input_size == 64
    monkeypatch.delenv("FSS_DEMO_WEIGHTS")
    assert os.path.isfile(os.path.join(BUNDLED_WEIGHTS, "model.safetensors"))
    assert fss_demo.load_model().input_size == 320


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no model.safetensors"):
        fss_demo.load_model(str(tmp_path))
    with pytest.raises(ValueError, match="neither"):
        fss_demo.load_model("not a repo id")


def test_hub_through_standin_endpoint_then_offline(saved_folder, tmp_path):
    server, endpoint, requests = serve(saved_folder, "someone/fss-demo-tiny")
    try:
        online = run_python(["someone/fss-demo-tiny", json.dumps({"revision": COMMIT})],
                            {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf")})
    finally:
        server.shutdown()
    assert any("/resolve/" in path and path.endswith("model.safetensors") for _, path in requests)
    expected = run_python([saved_folder, "{}"], {})
    assert online == expected
    # the endpoint is gone now: with HF_HUB_OFFLINE=1 the filled cache must serve the same model
    offline = run_python(["someone/fss-demo-tiny", json.dumps({"revision": COMMIT})],
                         {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert offline == expected


def test_loading_is_strict_and_names_the_missing_tensors(saved_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "no_head"
    broken.mkdir()
    (broken / "config.json").write_text(open(os.path.join(saved_folder, "config.json")).read())
    tensors = load_file(os.path.join(saved_folder, "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("head.")}, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing tensors: head\.\S+, .* and \d+ more"):
        fss_demo.load_model(str(broken))
    # weights of another architecture (a config.json that says otherwise): refused with the reason
    config = json.load(open(os.path.join(saved_folder, "config.json")))
    (broken / "config.json").write_text(json.dumps({**config, "hidden": 8}))
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="does not fit this model's config.json"):
        fss_demo.load_model(str(broken))


def test_hub_repo_without_safetensors_is_refused(saved_folder, tmp_path):
    """A repo with only a pickle (pytorch_model.bin) is not read: pickles can run code when loaded."""
    import shutil

    import torch

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(os.path.join(saved_folder, "config.json"), pickled)
    torch.save({}, pickled / "pytorch_model.bin")
    server, endpoint, requests = serve(str(pickled), "someone/pickled")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FSS_DEMO"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=ROOT)
    script = ("import fss_demo\ntry:\n    fss_demo.load_model('someone/pickled')\n"
              "except ValueError as error:\n    print('refused:', error)\n")
    try:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    assert "refused: the Hub repo 'someone/pickled' holds no model.safetensors" in done.stdout, done.stderr[-2000:]
    assert not any(path.endswith("pytorch_model.bin") for _, path in requests)


# ---------------------------------------------------------------------------------------------------------------
# Weights that would load silently wrong, or not at all: a ValueError that names the file (or folder) and tensor


@pytest.fixture
def copy_with(saved_folder, tmp_path):
    """copy_with(change) -> a copy of the saved folder whose model.safetensors has change(tensors) applied."""
    import shutil

    from safetensors.torch import load_file, save_file

    def copy_with(change):
        folder = tmp_path / "changed"
        shutil.copytree(saved_folder, folder)
        tensors = load_file(str(folder / "model.safetensors"))
        save_file(change(tensors), str(folder / "model.safetensors"))
        return str(folder)
    return copy_with


NAME = "head.decoder.0.weight"


@pytest.mark.parametrize("dtype", ["int64", "bool", "float16", "float64", "bfloat16"])
def test_weights_of_another_dtype_are_refused(copy_with, dtype):
    import torch

    folder = copy_with(lambda t: {**t, NAME: t[NAME].to(getattr(torch, dtype))})
    with pytest.raises(ValueError) as caught:
        fss_demo.load_model(folder)
    assert str(caught.value) == (f"{os.path.join(folder, 'model.safetensors')}: tensor {NAME} is torch.{dtype}; this "
                                 "model's is torch.float32 (weights are not cast: a cast can change what the model does)")


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_weights_with_nan_or_inf_are_refused(copy_with, bad):
    def spoil(tensors):
        tensors[NAME] = tensors[NAME].clone()
        tensors[NAME].view(-1)[3] = float(bad)
        return tensors

    folder = copy_with(spoil)
    with pytest.raises(ValueError, match=f"^{os.path.join(folder, 'model.safetensors')}: tensor {NAME} holds NaN "
                                         "or infinite values$"):
        fss_demo.load_model(folder)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_an_unreadable_weights_file_is_refused_naming_the_folder(saved_folder, tmp_path, damage):
    import shutil

    folder = tmp_path / damage
    shutil.copytree(saved_folder, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x12\x00" * 500, "empty": b""}[damage])
    with pytest.raises(ValueError, match=f"^'{folder}': its model.safetensors cannot be read .*; is the file complete"):
        fss_demo.load_model(str(folder))


def test_a_resaved_copy_keeps_the_licence_and_recipe_of_the_bundled_weights(tmp_path, tiny_model):
    from huggingface_hub import ModelCard

    bundled = fss_demo.load_model()
    assert bundled.licence == "cc-by-nc-4.0" and bundled.recipe["iterations"] == 4800
    bundled.save_pretrained(tmp_path / "copy")
    card = ModelCard.load(tmp_path / "copy" / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and "Licence of these weights: cc-by-nc-4.0" in card.text
    assert json.load(open(tmp_path / "copy" / "training.json")) == bundled.recipe
    copy = fss_demo.load_model(str(tmp_path / "copy"))
    assert copy.licence == "cc-by-nc-4.0" and copy.recipe == bundled.recipe
    # a model trained anew says it has none
    tiny_model.save_pretrained(tmp_path / "new")
    card = ModelCard.load(tmp_path / "new" / "README.md")
    assert card.data.license is None and "Licence: none given" in card.text
    assert not (tmp_path / "new" / "training.json").exists()
