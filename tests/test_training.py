"""Training, resuming and evaluating end to end on a tiny generated data set with a tiny random backbone."""
import json

import torch

import fss_demo
from fss_demo import evaluate, train


def test_train_resume_and_evaluate(labelmap_root, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--data", labelmap_root, "--out", str(out), "--cache", str(cache), "--input-size", "64",
              "--width", "16", "--hidden", "16", "--batch", "2", "--shots", "2", "--no-pretrained"]
    torch.manual_seed(0)
    train.main(common + ["--iterations", "5", "--stop-after", "3"])  # as if interrupted
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 3
    assert not (out / "model").exists()
    train.main(common + ["--iterations", "5"])  # resumes from iteration 3
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 5
    assert len((out / "log.csv").read_text().splitlines()) == 5

    model = fss_demo.load_model(str(out / "model"))
    assert model.input_size == 64
    result = tmp_path / "result.json"
    evaluate.main(["--weights", str(out / "model"), "--data", labelmap_root, "--shots", "1", "2",
                   "--episodes", "6", "--json", str(result), "--plot", str(tmp_path / "plot.png"),
                   "--cache", str(cache), "--choose-threshold"])
    summary = json.loads(result.read_text())
    scores = summary["results"]["toyset"]
    for method in ("convlstm", "or", "mean", "prototype"):
        for k in ("1", "2"):
            assert 0 <= scores[method][k]["class_miou"] <= 100 and 0 <= scores[method][k]["fb_iou"] <= 100
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert fss_demo.load_model(str(out / "model")).threshold == summary["thresholds"]["convlstm"]
