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
    assert report.BAD_FIRST_HEADER in (ROOT / "weights" / "README.md").read_text()


def test_update_replaces_a_table_and_the_model_index_and_nothing_else():
    card = (ROOT / "weights" / "README.md").read_text()
    changed = copy.deepcopy(RESULTS)
    ccp = changed["results"]["ccp"]
    ccp["convlstm"]["5"]["class_miou"] = 99.94
    ccp["corruption"]["off_object"]["admission_mean"][1] = 0.111
    ccp["corruption_first"]["off_object"]["admission_mean"][0] = 0.222
    new = report.update(card, changed)
    assert "value: 99.94\n" in new and "| **99.9 / " in new and "| 0.11 |" in new and "| 0.22 |" in new
    removed = set(card.splitlines()) - set(new.splitlines())
    assert len(removed) == 4  # the model-index value, the results row, the two off-object rows
    assert report.update(new, RESULTS) == card


def test_selection_rows_name_what_fails():
    changed = copy.deepcopy(RESULTS)
    camvid = changed["results"]["camvid"]
    five, one = report.score(camvid, "convlstm", 5), report.score(camvid, "convlstm", 1)
    camvid["tuned"]["mean"]["5"]["class_miou"] = five + 1
    camvid["intervals"]["convlstm_5_minus_tuned_mean_5"] = [-1.6, -0.4]  # wholly below 0: an outright failure
    rows = {name: (counts, line) for name, counts, line in report.selection_rows(changed, baseline=RESULTS)}
    counts, line = rows["camvid"]
    assert counts["FAILS"] == 1 and f"FAILS 5-shot {five:.1f} > mean of logits at its own threshold {five + 1:.1f}" in line
    assert f"1-shot {one:.1f} >= baseline {one:.1f} - 1" in line
    # each set: OR, mean, rise, the baseline's 1-shot and the two off-object rows, counted as the line marks them
    for counts, line in rows.values():
        assert sum(counts.values()) == 6 and line.count("; ") == 5
        assert counts["FAILS"] == line.count("FAILS ") and counts["tie"] == line.count("TIE ")


def test_a_row_whose_interval_holds_its_bound_is_a_tie():
    assert report.verdict(True, (0.1, 1.0)) == "meets" and report.verdict(True, (-0.4, 0.2)) == "tie"
    assert report.verdict(False, (-0.9, -0.04)) == "FAILS"
    assert report.verdict(False, (1.0, 2.3), bound=2.0) == "tie" and report.verdict(True, (2.1, 3.0), 2.0) == "meets"
    assert report.verdict(True) == "meets" and report.verdict(False) == "FAILS"  # no interval: the scores say
    changed = copy.deepcopy(RESULTS)  # on a report: intervals that hold their bound, one that lies above it
    camvid, ccp, caltech = (changed["results"][name] for name in ("camvid", "ccp", "caltech_pseudo"))
    camvid["intervals"]["convlstm_5_minus_tuned_or_5"] = [-0.4, 2.6]
    ccp["intervals"]["convlstm_5_minus_tuned_mean_5"] = [0.3, 1.0]
    caltech["intervals"]["convlstm_5_minus_convlstm_1"] = [1.1, 2.7]
    rows = {name: line for name, _, line in report.selection_rows(changed)}
    five = report.score(camvid, "convlstm", 5)
    assert (f"TIE 5-shot {five:.1f} > OR at its own threshold {report.score(camvid['tuned'], 'or', 5):.1f} "
            "(difference 95% interval -0.4..+2.6)") in rows["camvid"]
    five = report.score(ccp, "convlstm", 5)
    assert f"; 5-shot {five:.1f} > mean of logits at its own threshold" in rows["ccp"]  # meets: no mark
    rise = report.score(caltech, "convlstm", 5) - report.score(caltech, "convlstm", 1)
    assert f"TIE rise {rise:.1f} >= 2 (difference 95% interval +1.1..+2.7)" in rows["caltech_pseudo"]


def test_selection_rows_give_each_comparison_its_bootstrap_interval():
    caltech = RESULTS["results"]["caltech_pseudo"]
    low, high = caltech["intervals"]["convlstm_5_minus_tuned_mean_5"]
    rows = {name: line for name, _, line in report.selection_rows(RESULTS)}
    expected = (f"> mean of logits at its own threshold {report.score(caltech['tuned'], 'mean', 5):.1f} "
                f"(difference 95% interval {low:+.1f}..{high:+.1f})")
    assert expected in rows["caltech_pseudo"]
    older = copy.deepcopy(RESULTS)  # a json from before evaluate wrote intervals and tuned baselines still reads
    for result in older["results"].values():
        del result["intervals"], result["tuned"]
    caltech = older["results"]["caltech_pseudo"]
    one = report.score(caltech, "convlstm", 1)
    caltech["convlstm"]["5"]["class_miou"] = one + 1.5
    lines = " ".join(line for _, _, line in report.selection_rows(older))
    assert "interval" not in lines and "own threshold" not in lines and "TIE" not in lines
    assert "FAILS rise 1.5 >= 2" in lines  # then by the scores alone, as before
    assert f"5-shot {one + 1.5:.1f} > mean of logits {report.score(caltech, 'mean', 5):.1f}" in lines  # at the model's


def test_the_results_table_shows_the_baselines_at_their_own_thresholds_beside_their_own_rows():
    table = report.results_table(RESULTS).splitlines()  # each tuned baseline's row follows the baseline's own
    labels = [line.split(" | ")[1] for line in table if line.startswith("| ccp")]
    assert labels[1:5] == [report.METHOD_NAMES["or"], f"{report.METHOD_NAMES['or']}, {report.TUNED_LABEL}",
                           report.METHOD_NAMES["mean"], f"{report.METHOD_NAMES['mean']}, {report.TUNED_LABEL}"]
    tuned_or = report.score(RESULTS["results"]["ccp"]["tuned"], "or", 5)
    assert f"| {tuned_or:.1f} / " in [line for line in table if report.TUNED_LABEL in line][0]


def test_the_report_s_tuned_thresholds_and_the_model_s_threshold_were_chosen_on_the_bundled_validation():
    validation = json.loads((ROOT / "weights" / "validation.json").read_text())
    config = json.loads((ROOT / "weights" / "config.json").read_text())
    assert validation["seed"] != RESULTS["seed"]  # chosen on other episodes than the reported ones
    assert RESULTS["tuned_thresholds"] == validation["tuned_thresholds"]
    assert RESULTS["tuned_on"] == {"file": "validation.json", "seed": validation["seed"],
                                   "episodes": validation["episodes"]}
    assert validation["thresholds"]["convlstm"] == config["threshold"] == RESULTS["thresholds"]["convlstm"]
