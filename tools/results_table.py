#!/usr/bin/env python
"""README's results table, computed from the results JSONs in benchmarks/results/.

    python tools/results_table.py            # print the table
    python tools/results_table.py --write    # put it into README.md between its markers

Every cell is the mean AP50 over the runs of that model (``runs`` entries keyed ``teacher``,
``teacher@N``, ``baseline@N``, ``tkd@N``, ... of the named files), rounded once to one
decimal; "runs" says how many. The goals: the TKD student at AP50 >= 70, >= 2 above the same
student without KD, within 1 of its teacher (tests/test_docs.py holds README equal to this).
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- results-table: tools/results_table.py -->", "<!-- /results-table -->"

# (setting, {model: [(results file, run-key prefix), ...]})
ROWS = [
    ("FCOS Lite2 → Lite0, NEU-DET, long schedule (200 px, 2,400 it)", {
        "teacher": [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "teacher")],
        "baseline": [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")],
        "tkd": [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "tkd")]}),
    ("RetinaNet Lite2 → Lite0, NEU-DET, long schedule (200 px, 2,400 it)", {
        "teacher": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200", "tkd")]}),
    ("FCOS Lite2 → Lite0, NEU-DET, shipped CPU schedule (160 px, 600 it)", {
        "teacher": [("accuracy_neu_det_fcos_Lite2_Lite0", "teacher"),
                    ("accuracy_neu_det_fcos_Lite2_Lite0_teacher_seed2", "teacher")],
        "baseline": [("accuracy_neu_det_fcos_Lite2_Lite0_student_w64", "baseline")],
        "tkd": [("accuracy_neu_det_fcos_Lite2_Lite0_student_w64", "tkd")]}),
    ("RetinaNet Lite2 → Lite0, NEU-DET, shipped CPU schedule (160 px, 600 it)", {
        "teacher": [("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7", "teacher"),
                    ("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7_teacher_seed2", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7", "tkd")]}),
    ("RetinaNet R-50 → R-18 from scratch, NEU-DET (CPU budget)", {
        "teacher": [("accuracy_neu_det_retinanet", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet", "tkd")]}),
]
MODELS = ("teacher", "baseline", "tkd")


def runs_of(sources, results_dir=RESULTS):
    """AP50 of every run the sources name (a key ``prefix`` or ``prefix@N``)."""
    values = []
    for name, prefix in sources:
        runs = json.loads((Path(results_dir) / f"{name}.json").read_text())["runs"]
        values += [r["bbox"]["AP50"] for key, r in runs.items() if key.split("@")[0] == prefix]
    return values


def table(results_dir=RESULTS):
    lines = ["| setting | teacher | baseline | TKD | TKD − baseline | TKD − teacher | goals met (≥ 70, ≥ +2, within 1) |",
             "|---|---|---|---|---|---|---|"]
    for setting, sources in ROWS:
        runs = {m: runs_of(sources[m], results_dir) for m in MODELS}
        mean = {m: round(statistics.mean(v), 1) for m, v in runs.items()}
        gain, gap = round(mean["tkd"] - mean["baseline"], 1), round(mean["tkd"] - mean["teacher"], 1)
        met = [mean["tkd"] >= 70, gain >= 2, gap >= -1]
        cells = [f"{mean[m]:.1f} ({len(runs[m])} run{'s' * (len(runs[m]) > 1)})" for m in MODELS]
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {gain:+.1f} | {gap:+.1f} | "
                     + " ".join("yes" if ok else "no" for ok in met) + " |")
    return "\n".join(lines)


def _table_span(text):
    """(start, end) of the text between README's markers."""
    return text.index(BEGIN) + len(BEGIN), text.index(END)


def readme_table(text):
    """The table between README's markers."""
    start, end = _table_span(text)
    return text[start:end].strip("\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = p.parse_args(argv)
    out = table()
    if args.write:
        text = README.read_text()
        start, end = _table_span(text)
        README.write_text(text[:start] + "\n" + out + "\n" + text[end:])
    print(out)


if __name__ == "__main__":
    sys.exit(main())
