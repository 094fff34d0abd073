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
