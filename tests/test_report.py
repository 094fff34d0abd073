"""The published tables are generated from the published results: the card and README say what results.json says."""
import copy
import json
from pathlib import Path

from fss_demo import report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = json.loads((ROOT / "weights" / "results.json").read_text())


def test_the_card_and_readme_tables_are_the_bundled_results():
    for path in (ROOT / "weights" / "README.md", ROOT / "README.md"):
        text = path.read_text()
        assert report.RESULTS_HEADER in text and report.BAD_SUPPORT_HEADER in text
        assert report.update(text, RESULTS) == text, f"{path.name}: run python -m fss_demo.report --update"


def test_update_replaces_a_table_and_the_model_index_and_nothing_else():
    card = (ROOT / "weights" / "README.md").read_text()
    changed = copy.deepcopy(RESULTS)
    ccp = changed["results"]["ccp"]
    ccp["convlstm"]["5"]["class_miou"] = 99.94
    ccp["corruption"]["off_object"]["admission_mean"][1] = 0.111
    new = report.update(card, changed)
    assert "value: 99.94\n" in new and "| **99.9 / " in new and "| 0.11 |" in new
    removed = set(card.splitlines()) - set(new.splitlines())
    assert len(removed) == 3  # the model-index value, the results row, the off-object row
    assert report.update(new, RESULTS) == card


def test_selection_rows_name_what_fails():
    changed = copy.deepcopy(RESULTS)
    camvid = changed["results"]["camvid"]
    camvid["mean"]["5"]["class_miou"] = camvid["convlstm"]["5"]["class_miou"] + 1
    rows = {name: (passed, line) for name, passed, line in report.selection_rows(changed, baseline=RESULTS)}
    passed, line = rows["camvid"]
    assert not passed and "FAILS > mean of logits" in line and "1-shot 20.7 >= baseline 20.7 - 1" in line
    assert rows["ccp"][0]  # the published model meets every row on ccp


def test_selection_rows_give_each_comparison_its_bootstrap_interval():
    caltech = RESULTS["results"]["caltech_pseudo"]
    low, high = caltech["intervals"]["convlstm_5_minus_mean_5"]
    rows = {name: line for name, _, line in report.selection_rows(RESULTS)}
    expected = f"> mean of logits {report.score(caltech, 'mean', 5):.1f} (difference 95% interval {low:+.1f}..{high:+.1f})"
    assert expected in rows["caltech_pseudo"]
    older = copy.deepcopy(RESULTS)  # a json from before evaluate wrote intervals still reads
    for result in older["results"].values():
        del result["intervals"]
    assert "interval" not in " ".join(line for _, _, line in report.selection_rows(older))


def test_selection_rows_show_the_baselines_at_their_own_thresholds_when_evaluate_tuned_them():
    tuned = copy.deepcopy(RESULTS)
    ccp = tuned["results"]["ccp"]
    ccp["tuned"] = {method: copy.deepcopy(ccp[method]) for method in ("or", "mean")}
    ccp["tuned"]["or"]["5"]["class_miou"], ccp["tuned"]["mean"]["5"]["class_miou"] = 36.45, 40.58
    ccp["intervals"]["convlstm_5_minus_tuned_or_5"] = [3.21, 5.67]
    ccp["intervals"]["convlstm_5_minus_tuned_mean_5"] = [-1.23, 0.45]
    rows = {name: (passed, line) for name, passed, line in report.selection_rows(tuned)}
    passed, line = rows["ccp"]
    assert line.endswith("baselines at their own thresholds: OR 36.5 (difference 95% interval +3.2..+5.7), "
                         "mean of logits 40.6 (difference 95% interval -1.2..+0.5)")
    assert passed == dict((n, p) for n, p, _ in report.selection_rows(RESULTS))["ccp"]  # shown, not a row yet
    table = report.results_table(tuned).splitlines()  # each tuned baseline's row follows the baseline's own
    labels = [line.split(" | ")[1] for line in table if line.startswith("| ccp")]
    assert labels[1:5] == [report.METHOD_NAMES["or"], f"{report.METHOD_NAMES['or']}, {report.TUNED_LABEL}",
                           report.METHOD_NAMES["mean"], f"{report.METHOD_NAMES['mean']}, {report.TUNED_LABEL}"]
    assert "| 36.5 / " in [line for line in table if report.TUNED_LABEL in line][0]


def test_the_report_s_tuned_thresholds_and_the_model_s_threshold_were_chosen_on_the_bundled_validation():
    validation = json.loads((ROOT / "weights" / "validation.json").read_text())
    config = json.loads((ROOT / "weights" / "config.json").read_text())
    assert validation["seed"] != RESULTS["seed"]  # chosen on other episodes than the reported ones
    assert RESULTS["tuned_thresholds"] == validation["tuned_thresholds"]
    assert RESULTS["tuned_on"] == {"file": "validation.json", "seed": validation["seed"],
                                   "episodes": validation["episodes"]}
    assert validation["thresholds"]["convlstm"] == config["threshold"] == RESULTS["thresholds"]["convlstm"]
