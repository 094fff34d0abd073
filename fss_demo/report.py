"""The published numbers from an `evaluate --json` file: the model card's and README's tables, the card's
model-index, and the selection rule's rows (NOTES.md, "How a model is chosen"), so no table is typed by hand.
`evaluate` prints the same tables: they are formatted here only.

    python -m fss_demo.report weights/results.json --update weights/README.md README.md   # rewrite the tables
    python -m fss_demo.report /tmp/val.json --baseline run20.json                          # the rule's rows

A table in a markdown file is found by its header line and replaced up to the blank line after it; the card's
model-index (front matter, after "  results:") is rewritten from the 1- and 5-shot ConvLSTM class mIoU.
"""
import argparse
import json

METHOD_NAMES = {"convlstm": "ConvLSTM (this model)", "or": "logical OR of 1-shot predictions",
                "mean": "mean of 1-shot logits", "prototype": "prototype baseline (training-free)"}
TUNED_LABEL = "threshold tuned per shot count"  # evaluate's `tuned`: chosen on validation episodes
BAD_SUPPORT_NAMES = {"clean": "clean", "off_object": "off object", "over_painted": "over painted",
                     "other_class": "other class", "small_patch": "small patch"}
BAD_SUPPORT_HEADER = ("| set | support 2 | ConvLSTM steps 1-5 (step-5 change) | mean of logits (step-5 change) | "
                      "OR (step-5 change) | ConvLSTM, support 2's gate forced open (step 5; its cost) | "
                      "input gate of support 2 / the others | admission of support 2 |")
BAD_FIRST_HEADER = ("| set | support 1 | ConvLSTM steps 1-5 (step-5 change) | mean of logits (step-5 change) | "
                    "OR (step-5 change) | admission of support 1 | admission of supports 2-5 |")


def score(result, method, shots, metric="class_miou"):
    return result[method][str(shots)][metric]


def results_header(shots=(1, 2, 3, 4, 5)):
    return "| set (novel classes) | method | " + " | ".join(f"{k}-shot" for k in shots) + " |"


RESULTS_HEADER = results_header()  # the published tables' (1 to 5 shots)


def results_table(summary):
    """Class mIoU / FB-IoU of every method at each of the summary's shot counts, one row per set and method (the
    ConvLSTM's in bold); where evaluate tuned the baselines' thresholds, each baseline's tuned row follows it."""
    shots = summary["shots"]
    lines = [results_header(shots), "|---|---|" + "---|" * len(shots)]
    for name, result in summary["results"].items():
        rows = []
        for method, label in METHOD_NAMES.items():
            rows.append((label, result, method))
            if method in result.get("tuned", {}):
                rows.append((f"{label}, {TUNED_LABEL}", result["tuned"], method))
        for label, source, method in rows:
            cells = [f"{score(source, method, k):.1f} / {score(source, method, k, 'fb_iou'):.1f}" for k in shots]
            if method == "convlstm":
                cells = [f"**{cell}**" for cell in cells]
            lines.append(f"| {name} ({len(result['classes'])}) | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def corruption_table(summary, key, header, left_out_label, gate_cells):
    """A table of `evaluate --corrupt`'s runs `key` ("corruption": support 2 made bad, "corruption_first": support
    1): per set, each kind's ConvLSTM curve and the step-5 scores of the ConvLSTM, the mean of logits and the OR, in
    brackets the change against the clean episodes, then `gate_cells(run)` (the table's last columns); then the
    same episodes with that support left out."""
    columns = header.count("|") - 1
    lines = [header, "|" + "---|" * columns]
    for name, result in summary["results"].items():
        runs = result[key]
        clean = runs["clean"]
        for kind, label in BAD_SUPPORT_NAMES.items():
            run = runs[kind]
            change = (lambda method: "") if kind == "clean" else (
                lambda method: f" ({run[method][-1] - clean[method][-1]:+.1f})")
            curve = " ".join(f"{value:.1f}" for value in run["convlstm"])
            lines.append(f"| {name} | {label} | {curve}{change('convlstm')} | {run['mean'][-1]:.1f}{change('mean')} | "
                         f"{run['or'][-1]:.1f}{change('or')} | " + " | ".join(gate_cells(run)) + " |")
        left_out = runs["left_out"]["convlstm"]
        lines.append(f"| {name} | {left_out_label} | " + " ".join(f"{v:.1f}" for v in left_out)
                     + f" ({left_out[-1] - clean['convlstm'][-1]:+.1f}) |" + " |" * (columns - 3))
    return "\n".join(lines) + "\n"


def bad_support_table(summary):
    """`evaluate --corrupt`'s rows: each kind of bad support 2, then support 2 left out (a perfect gate)."""
    def gate_cells(run):
        forced = run["forced_open"][-1]
        return [f"{forced:.1f} ({forced - run['convlstm'][-1]:+.1f})", f"{run['input_gate_ratio']:.2f}",
                f"{run['admission_mean'][1]:.2f}"]
    return corruption_table(summary, "corruption", BAD_SUPPORT_HEADER, "left out (a perfect gate)", gate_cells)


def bad_first_table(summary):
    """`evaluate --corrupt`'s rows for a bad support 1 (which only `rejudge_first` ever judges): each kind, then
    support 1 left out (nothing is found at step 1). Admissions are those of the run that gave the 5-shot answer."""
    def gate_cells(run):
        later = run["admission_mean"][1:]
        return [f"{run['admission_mean'][0]:.2f}", f"{min(later):.2f}-{max(later):.2f}"]
    return corruption_table(summary, "corruption_first", BAD_FIRST_HEADER, "left out", gate_cells)


def model_index(summary):
    """The card's model-index entries: 1- and 5-shot ConvLSTM class mIoU per set."""
    entries = []
    for name, result in summary["results"].items():
        for k in (1, 5):
            entries.append(f"""  - task:
      type: image-segmentation
      name: few-shot semantic segmentation ({k}-shot, novel classes)
    dataset:
      type: {name}
      name: {name} (held-out classes)
    metrics:
    - type: mean_iou
      name: class mIoU
      value: {score(result, 'convlstm', k)}
""")
    return "".join(entries)


def replace_table(text, table):
    """`text` with the table that has `table`'s header line replaced by `table`."""
    header = table.splitlines()[0] + "\n"
    start = text.index(header)
    end = text.find("\n\n", start)
    return text[:start] + table + text[(len(text) if end < 0 else end + 1):]


def update(text, summary):
    """A markdown file's tables (those it has) and model-index (if it has one) from `summary`."""
    for header, table in ((RESULTS_HEADER, results_table), (BAD_SUPPORT_HEADER, bad_support_table),
                          (BAD_FIRST_HEADER, bad_first_table)):
        if header + "\n" in text:
            text = replace_table(text, table(summary))
    if text.startswith("---\n") and "\n  results:\n" in text:
        start = text.index("\n  results:\n") + len("\n  results:\n")
        end = text.index("---\n", start)
        text = text[:start] + model_index(summary) + text[end:]
    return text


VERDICTS = ("meets", "tie", "FAILS")  # a row's outcomes (`verdict`)


def selection_rows(summary, baseline=None):
    """The selection rule per set (NOTES.md): 5-shot ConvLSTM above the OR and the mean of 1-shot logits (each at
    its own threshold per shot count when evaluate tuned them), a rise of >= 2 points from 1 to 5 shots, 1-shot no
    more than 1 point below `baseline`'s (another summary, when given), and a mask on the background kept out
    (admission <= 0.5) at no more than the left-out cost + 0.5. A row with a bootstrap interval that holds its bound
    is a tie, not a pass or a failure: the episodes cannot tell (`verdict`).
    -> [(set, {"meets": n, "tie": n, "FAILS": n}, line)]"""
    rows = []
    for name, result in summary["results"].items():
        one, five = score(result, "convlstm", 1), score(result, "convlstm", 5)
        intervals = result.get("intervals", {})
        # the baselines at their own thresholds where evaluate tuned them (a claim against a handicapped
        # baseline is not one a reader can trust), else at the model's
        tuned = "tuned" in result
        fused, prefix = (result["tuned"], "tuned_") if tuned else (result, "")
        label = " at its own threshold" if tuned else ""
        checks = {}
        for method, text in (("or", "OR"), ("mean", "mean of logits")):
            other, key = score(fused, method, 5), f"convlstm_5_minus_{prefix}{method}_5"
            checks[f"5-shot {five:.1f} > {text}{label} {other:.1f}{interval_text(intervals.get(key))}"] = verdict(
                five > other, intervals.get(key), 0.0)
        key = "convlstm_5_minus_convlstm_1"
        checks[f"rise {five - one:.1f} >= 2{interval_text(intervals.get(key))}"] = verdict(
            five - one >= 2, intervals.get(key), 2.0)
        if baseline is not None and name in baseline["results"]:
            before = score(baseline["results"][name], "convlstm", 1)
            checks[f"1-shot {one:.1f} >= baseline {before:.1f} - 1"] = verdict(one >= before - 1)
        if "corruption" in result:
            checks.update(off_object_checks(result["corruption"]))
        counts = {outcome: sum(v == outcome for v in checks.values()) for outcome in VERDICTS}
        rows.append((name, counts, check_line(checks)))
    return rows


def verdict(passed, bounds=None, bound=0.0):
    """A row's outcome: without an interval, "meets" or "FAILS" as the scores say; with one (low, high) of the
    difference the row compares with `bound`, "meets" if it lies wholly above, "FAILS" if wholly below, else "tie"."""
    if bounds is None:
        return "meets" if passed else "FAILS"
    low, high = bounds
    return "meets" if low > bound else "FAILS" if high < bound else "tie"


def interval_text(bounds):
    """' (difference 95% interval low..high)' when evaluate gave one: does a row pass or fail by more than which
    episodes were drawn?"""
    return "" if bounds is None else f" (difference 95% interval {bounds[0]:+.1f}..{bounds[1]:+.1f})"


def check_line(checks):
    """{text: verdict} -> one line, each check that does not meet its bound marked FAILS or TIE."""
    marks = {"meets": "", "tie": "TIE ", "FAILS": "FAILS "}
    return "; ".join(marks[outcome] + text for text, outcome in checks.items())


def off_object_checks(corruption):
    """The rule's rows for a mask on the background (support 2 of `evaluate_corruptions`' episodes): admission
    <= 0.5, and a step-5 cost no more than 0.5 above leaving that support out. -> {text: verdict}"""
    clean = corruption["clean"]["convlstm"][-1]
    admission = corruption["off_object"]["admission_mean"][1]
    cost = clean - corruption["off_object"]["convlstm"][-1]
    left_out = clean - corruption["left_out"]["convlstm"][-1]
    return {f"off-object admission {admission:.2f} <= 0.5": verdict(admission <= 0.5),
            f"its cost {cost:.1f} <= left out {left_out:.1f} + 0.5": verdict(cost <= left_out + 0.5)}


def mean_five_shot(summary):
    return sum(score(r, "convlstm", 5) for r in summary["results"].values()) / len(summary["results"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a json written by `python -m fss_demo.evaluate --json`")
    parser.add_argument("--update", nargs="*", default=[], metavar="MARKDOWN",
                        help="rewrite these files' results tables (and a card's model-index) in place")
    parser.add_argument("--baseline", help="another evaluate json, for the rule's 1-shot row")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        summary = json.load(f)
    baseline = None
    if args.baseline:
        with open(args.baseline) as f:
            baseline = json.load(f)
    for path in args.update:
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(update(text, summary))
        print(f"updated {path}")
    rows = selection_rows(summary, baseline)
    for name, counts, line in rows:
        outcome = "FAILS" if counts["FAILS"] else "tie" if counts["tie"] else "meets"
        print(f"{outcome} {name}: {line}")
    # the rule's order (NOTES.md): fewest rows failed outright, then fewest ties, then the mean 5-shot
    print(f"rows failed outright: {sum(c['FAILS'] for _, c, _ in rows)}; ties: {sum(c['tie'] for _, c, _ in rows)}; "
          f"mean 5-shot ConvLSTM class mIoU: {mean_five_shot(summary):.2f}")


if __name__ == "__main__":
    main()
