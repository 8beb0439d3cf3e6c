#!/usr/bin/env python
"""README's results table and BENCHMARKS' parts table, computed from the results JSONs in benchmarks/results/.

    python tools/results_table.py            # print the tables
    python tools/results_table.py --write    # put them between their markers in README.md and BENCHMARKS.md

Every cell is the mean AP50 over the runs of that model (``runs`` entries keyed ``teacher``,
``teacher@N``, ``baseline@N``, ``tkd@N``, ... of the named files), rounded once to one
decimal; "runs" says how many. The goals: the TKD student at AP50 >= 70, >= 2 above the same
student without KD, within 1 of its teacher. The parts table: each TKD part's student, run by
run (seed order) and its mean, against the baseline and against CRD alone, then against CRD
paired by seed (the mean of the per-seed differences, its standard error and the number of
pairs), then the seed spread (how many unpaired runs a difference of 1 or 0.5 AP50 needs to
show). README.md holds the results table and BENCHMARKS.md the parts table; tests/test_docs.py
holds every copy equal.

A runs table is every run of one or more results files with its per-class AP50; a document asks
for one with ``<!-- runs-table: NAME; NAME = note -->`` ... ``<!-- /runs-table -->`` (NAME a
results file without ``.json``; the note, if any, is added to that file's run labels), and
``--write`` fills each such block.
"""
import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- results-table: tools/results_table.py -->", "<!-- /results-table -->"
PARTS_BEGIN, PARTS_END = "<!-- parts-table: tools/results_table.py -->", "<!-- /parts-table -->"

# (setting, {model: [(results file, run-key prefix), ...]})
ROWS = [
    ("FCOS Lite2 → Lite0, NEU-DET, long schedule, the configs' own (200 px, 2,400 it)", {
        "teacher": [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "teacher")],
        "baseline": [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")],
        "tkd": [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "tkd")]}),
    ("FCOS Lite2 → Lite0, NEU-DET, long schedule, CRD alone (balanced, distilled everywhere)", {
        "teacher": [("accuracy_neu_det_fcos_Lite2_Lite0_long200_teacher_retrained", "teacher")],
        "baseline": [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")],
        "tkd": [("accuracy_neu_det_fcos_Lite2_Lite0_long200_ablation_teacher70p4", "crd")]}),
    ("RetinaNet Lite2 → Lite0, NEU-DET, long schedule, the configs' own (200 px, 2,400 it)", {
        "teacher": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200", "tkd")]}),
    ("RetinaNet Lite2 → Lite0, NEU-DET, long schedule, 8 orientations, CRD alone (distilled everywhere)", {
        "teacher": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200_orientation", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200_orientation", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200_orientation", "crd")]}),
    ("RetinaNet Lite2 → Lite0, NEU-DET, long schedule, 8 orientations, a 4,800-iteration teacher, CRD alone (distilled everywhere)", {
        "teacher": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200_orientation_teacher4800", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200_orientation", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet_Lite2_Lite0_long200_orientation_teacher4800", "crd")]}),
    ("FCOS Lite2 → Lite0, NEU-DET, short schedule (160 px, 600 it)", {
        "teacher": [("accuracy_neu_det_fcos_Lite2_Lite0", "teacher"),
                    ("accuracy_neu_det_fcos_Lite2_Lite0_teacher_seed2", "teacher")],
        "baseline": [("accuracy_neu_det_fcos_Lite2_Lite0_student_w64", "baseline")],
        "tkd": [("accuracy_neu_det_fcos_Lite2_Lite0_student_w64", "tkd")]}),
    ("RetinaNet Lite2 → Lite0, NEU-DET, short schedule (160 px, 600 it)", {
        "teacher": [("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7", "teacher"),
                    ("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7_teacher_seed2", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet_Lite2_Lite0_ratios7", "tkd")]}),
    ("RetinaNet Lite2 → Lite0, DeepPCB (unseen data; `--budget 1h`: 459 it on 12-03, plain CRD)", {
        "teacher": [("accuracy_deeppcb_retinanet_Lite2_Lite0_budget1h", "teacher")],
        "baseline": [("accuracy_deeppcb_retinanet_Lite2_Lite0_budget1h", "baseline")],
        "tkd": [("accuracy_deeppcb_retinanet_Lite2_Lite0_budget1h", "tkd")]}),
    ("RetinaNet Lite2 → Lite0, DeepPCB (`--budget 1h`: 591 it on 12-05, shipped default: CRD trusted where better)", {
        "teacher": [("accuracy_deeppcb_retinanet_Lite2_Lite0_budget1h_trust", "teacher")],
        "baseline": [("accuracy_deeppcb_retinanet_Lite2_Lite0_budget1h_trust", "baseline")],
        "tkd": [("accuracy_deeppcb_retinanet_Lite2_Lite0_budget1h_trust", "tkd")]}),
    ("RetinaNet R-50 → R-18 from scratch, NEU-DET (CPU budget)", {
        "teacher": [("accuracy_neu_det_retinanet", "teacher")],
        "baseline": [("accuracy_neu_det_retinanet", "baseline")],
        "tkd": [("accuracy_neu_det_retinanet", "tkd")]}),
]
MODELS = ("teacher", "baseline", "tkd")

# (setting, [(label, [(results file, run-key prefix), ...]), ...]): the parts on top of CRD
_FCOS_LONG = "accuracy_neu_det_fcos_Lite2_Lite0_long200_ablation"
_FCOS_LONG_70 = "accuracy_neu_det_fcos_Lite2_Lite0_long200_ablation_teacher70p4"
_SYNTHETIC = "accuracy_synthetic_retinanet_Lite2_Lite0_variants"
_ALIGN = "accuracy_synthetic_retinanet_Lite2_Lite0_feature_align"
_WEAK = "accuracy_synthetic_retinanet_Lite2_Lite0_weak_teacher"
_FCOS_T4800 = "accuracy_neu_det_fcos_Lite2_Lite0_long200_teacher4800"
_FCOS_T4800R = _FCOS_T4800 + "_rerun"
_ORIENT = "accuracy_neu_det_retinanet_Lite2_Lite0_long200_orientation"
_ORIENT_T4800 = _ORIENT + "_teacher4800"
_PCB_TRUST = "accuracy_deeppcb_retinanet_Lite2_Lite0_budget1h_trust"
PARTS_ROWS = [
    ("FCOS Lite2 → Lite0, NEU-DET, long schedule, the kept 70.4 teacher", [
        ("baseline", [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")]),
        ("CRD", [(_FCOS_LONG_70, "crd")]), ("CRD + DED", [(_FCOS_LONG_70, "crd_ded")]),
        ("CRD + DRD", [(_FCOS_LONG_70, "crd_drd")]), ("TKD (all three)", [(_FCOS_LONG_70, "tkd")]),
        ("TKD, FPN-gradient shares, DRD at DED's pull", [("accuracy_neu_det_fcos_Lite2_Lite0_long200_gradient_balance", "tkd")]),
        ("the same, DRD's graph fixed", [("accuracy_neu_det_fcos_Lite2_Lite0_long200_gradient_balance_fixed_graph", "tkd")])]),
    ("FCOS Lite2 → Lite0, NEU-DET, long schedule, the 72.1 teacher", [
        ("baseline", [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")]),
        ("CRD", [(_FCOS_LONG, "crd")]), ("CRD + DED", [(_FCOS_LONG, "crd_ded")]),
        ("CRD + DRD", [(_FCOS_LONG, "crd_drd")]), ("TKD (all three)", [(_FCOS_LONG, "tkd")])]),
    ("FCOS Lite2 → Lite0, NEU-DET, long schedule, a 71.2 teacher (4,800 it)", [
        ("baseline", [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")]),
        ("CRD", [(_FCOS_T4800, "crd")]), ("TKD (all three)", [(_FCOS_T4800, "tkd")])]),
    ("FCOS Lite2 → Lite0, NEU-DET, long schedule, a 70.7 teacher (the 4,800-it command rerun)", [
        ("baseline", [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")]),
        ("CRD", [(_FCOS_T4800R, "crd")]), ("TKD (all three)", [(_FCOS_T4800R, "tkd")])]),
    ("RetinaNet Lite2 → Lite0, synthetic set (the main job's), 500 it", [
        ("baseline", [(_SYNTHETIC, "baseline")]), ("CRD", [(_SYNTHETIC, "crd")]),
        ("CRD + DED", [(_SYNTHETIC, "crd_ded")]), ("TKD (all three)", [(_SYNTHETIC, "tkd")]),
        ("CRD + DED, DED on P3–P5", [(_SYNTHETIC + "_p3p5", "crd_ded")]),
        ("TKD, DED and DRD on P3–P5", [(_SYNTHETIC + "_p3p5", "tkd")])]),
    ("RetinaNet Lite2 → Lite0, synthetic set, 500 it, an 84.5 teacher: `MODEL.TKD.FEATURE_ALIGN`", [
        ("baseline", [(_SYNTHETIC, "baseline")]), ("CRD", [(_ALIGN, "crd")]),
        ("CRD + DED", [(_ALIGN, "crd_ded")]), ("TKD (all three)", [(_ALIGN, "tkd")]),
        ("CRD + DED, teacher-side projection", [(_ALIGN + "_teacher", "crd_ded")]),
        ("TKD, teacher-side projection", [(_ALIGN + "_teacher", "tkd")])]),
    ("RetinaNet Lite2 → Lite0, synthetic set, 500 it, the 87.8 teacher: `MODEL.TKD.CRD.TRUST`", [
        ("baseline", [(_SYNTHETIC, "baseline")]), ("CRD", [("accuracy_synthetic_retinanet_Lite2_Lite0_trust_teacher", "crd")]),
        ("CRD, trusted where better", [("accuracy_synthetic_retinanet_Lite2_Lite0_trust", "crd")])]),
    ("RetinaNet Lite2 → Lite0, synthetic set, 500 it, a weak teacher (200 it, 65.2): `MODEL.TKD.CRD.TRUST`", [
        ("baseline", [(_WEAK, "baseline")]), ("CRD", [(_WEAK, "crd")]),
        ("CRD, trusted where better", [(_WEAK + "_trust", "crd")])]),
    ("RetinaNet Lite2 → Lite0, NEU-DET, long schedule, 8 orientations, the kept 67.7 teacher (and `MODEL.TKD.CRD.TRUST`)", [
        ("baseline", [(_ORIENT, "baseline")]), ("CRD", [(_ORIENT, "crd")]),
        ("CRD + DED", [(_ORIENT, "crd_ded")]), ("CRD + DRD", [(_ORIENT, "crd_drd")]),
        ("TKD (all three)", [(_ORIENT, "tkd")]), ("CRD, trusted where better", [(_ORIENT + "_trust", "crd")])]),
    ("RetinaNet Lite2 → Lite0, NEU-DET, long schedule, 8 orientations, the 72.6 teacher (4,800 it)", [
        ("baseline", [(_ORIENT, "baseline")]), ("CRD", [(_ORIENT_T4800, "crd")]),
        ("CRD + DED", [(_ORIENT_T4800, "crd_ded")]), ("CRD + DRD", [(_ORIENT_T4800, "crd_drd")]),
        ("TKD (all three)", [(_ORIENT_T4800, "tkd")])]),
    ("RetinaNet Lite2 → Lite0, DeepPCB, `--budget 1h` (591 it), the run's 89.6 teacher: `MODEL.TKD.CRD.TRUST`", [
        ("baseline", [(_PCB_TRUST, "baseline")]), ("CRD", [(_PCB_TRUST, "crd")]),
        ("CRD, trusted where better", [(_PCB_TRUST, "tkd")])]),
]


def seeded_bboxes_of(sources, results_dir=RESULTS):
    """(seed, bbox results) of every run the sources name (a key ``prefix``, seed None, or
    ``prefix@N``, seed N), in seed order."""
    found = []
    for name, prefix in sources:
        runs = json.loads((Path(results_dir) / f"{name}.json").read_text())["runs"]
        keys = sorted((k for k in runs if k.split("@")[0] == prefix), key=lambda k: (len(k), k))
        found += [(int(k.split("@")[1]) if "@" in k else None, runs[k]["bbox"]) for k in keys]
    return found


def bboxes_of(sources, results_dir=RESULTS):
    """The bbox results of every run the sources name (a key ``prefix`` or ``prefix@N``), in seed order."""
    return [bbox for _, bbox in seeded_bboxes_of(sources, results_dir)]


def runs_of(sources, results_dir=RESULTS):
    """AP50 of every run the sources name, in seed order."""
    return [b["AP50"] for b in bboxes_of(sources, results_dir)]


def ap50_by_seed(found, label):
    """{seed: AP50} of (seed, bbox) runs, for pairing; runs without a seed are left out. Two runs
    of one seed under one label (two source files holding the same seed) would pair only one of
    them, so they are an error naming the label and the seed."""
    by_seed = {}
    for seed, bbox in found:
        if seed is None:
            continue
        if seed in by_seed:
            raise ValueError(f"{label}: two runs of seed {seed}; pairing by seed needs one run per seed")
        by_seed[seed] = bbox["AP50"]
    return by_seed


def paired_difference(runs, reference):
    """AP50 of ``runs`` minus ``reference``'s, seed by seed over the seeds both ran (dicts seed ->
    AP50): "mean ± standard error (pairs)", the mean alone with one pair, "–" with none. The
    standard error is the per-seed differences' own (sd / sqrt(pairs)), so what one seed shares
    between the two students (the sampler's image order, the student's initial weights) drops out."""
    diffs = [runs[s] - reference[s] for s in sorted(set(runs) & set(reference) - {None})]
    if not diffs:
        return "–"
    mean = round(statistics.mean(diffs), 1) + 0.0  # + 0.0: no "-0.0"
    if len(diffs) == 1:
        return f"{mean:+.1f} (1)"
    return f"{mean:+.1f} ± {statistics.stdev(diffs) / len(diffs) ** 0.5:.1f} ({len(diffs)})"


def parts_table(results_dir=RESULTS):
    lines = ["| setting | student | AP50 per run | AP50 mean | − baseline | − CRD | − CRD, paired by seed (± SE, pairs) | AP mean |",
             "|---|---|---|---|---|---|---|---|"]
    for setting, rows in PARTS_ROWS:
        seeded = {label: seeded_bboxes_of(sources, results_dir) for label, sources in rows}
        seeded = {label: found for label, found in seeded.items() if found}
        runs = {label: [b["AP50"] for _, b in found] for label, found in seeded.items()}
        by_seed = {label: ap50_by_seed(found, f"{setting} / {label}") for label, found in seeded.items()}
        mean = {label: round(statistics.mean(v), 1) for label, v in runs.items()}
        for label, values in runs.items():
            ap = statistics.mean(b["AP"] for _, b in seeded[label])
            diff = [f"{mean[label] - mean[ref]:+.1f}" if ref in mean and ref != label else "–"
                    for ref in ("baseline", "CRD")]
            diff.append(paired_difference(by_seed[label], by_seed["CRD"])
                        if "CRD" in by_seed and label != "CRD" else "–")
            lines.append(f"| {setting} | {label} | " + ", ".join(f"{v:.1f}" for v in values)
                         + f" | {mean[label]:.1f} | " + " | ".join(diff) + f" | {ap:.1f} |")
            setting = ""  # once per block
    return "\n".join(lines) + "\n\n" + seed_spread(results_dir)


# settings run with two or more seeds at the NEU-DET FCOS long schedule: (label, sources)
SPREAD_SOURCES = [
    ("baseline", [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "baseline")]),
    ("teacher", [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "teacher")]),
    ("TKD, fixed weights", [("accuracy_neu_det_fcos_Lite2_Lite0_long200", "tkd")]),
    ("TKD, the 70.4 teacher", [(_FCOS_LONG_70, "tkd")]),
]


def seed_spread(results_dir=RESULTS):
    """One line: the run-to-run standard deviation of AP50 pooled over the NEU-DET FCOS long
    settings with several seeds, and the seeds per arm a difference of 1 and 0.5 AP50 needs to
    stand two standard errors clear (n = 2 (2 sd / d)^2)."""
    groups = {label: runs_of(sources, results_dir) for label, sources in SPREAD_SOURCES}
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    dof = sum(len(v) - 1 for v in groups.values())
    sd = (sum(statistics.variance(v) * (len(v) - 1) for v in groups.values()) / dof) ** 0.5
    need = {d: math.ceil(2 * (2 * sd / d) ** 2) for d in (1.0, 0.5)}
    return (f"Seed spread at the NEU-DET FCOS long schedule, pooled over {len(groups)} settings with two or more "
            f"runs ({'; '.join(groups)}): sd {sd:.1f} AP50 per run, so a 1 AP50 difference between two "
            f"students needs about {need[1.0]} runs of each, and 0.5 AP50 about {need[0.5]}, to stand two "
            "standard errors clear.")


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


def _table_span(text, begin=BEGIN, end=END):
    """(start, end) of the text between README's markers."""
    return text.index(begin) + len(begin), text.index(end)


def readme_table(text, begin=BEGIN, end=END):
    """The table between README's markers."""
    start, stop = _table_span(text, begin, end)
    return text[start:stop].strip("\n")


TABLES = ((BEGIN, END, table), (PARTS_BEGIN, PARTS_END, parts_table))

RUNS_BLOCK = re.compile(r"(<!-- runs-table: (?P<spec>.*?) -->)\n(?P<table>.*?)\n?(<!-- /runs-table -->)", re.S)
# run labels: the variant's model, {0} the teacher's backbone, {1} the student's; in the order
# of benchmarks/bench_accuracy.py's ORDER (the variants it writes), which tests/test_docs.py holds equal
VARIANT_LABELS = {"teacher": "{0} teacher", "baseline": "{1} baseline", "crd": "{1} CRD",
                  "ded": "{1} DED", "drd": "{1} DRD", "crd_ded": "{1} CRD + DED",
                  "crd_drd": "{1} CRD + DRD", "tkd": "{1} TKD (all three)"}


def _variant_rank(key):
    variant, _, seed = key.partition("@")
    order = list(VARIANT_LABELS)
    return (order.index(variant) if variant in order else len(order), variant, int(seed) if seed else 0)


def runs_table(spec, results_dir=RESULTS):
    """Markdown: every run of the results files ``spec`` names ("NAME; NAME = note", see the module
    docstring), file by file, each in variant then seed order, with AP50, AP, AP75 and AP50 per class."""
    from tkd_d2.evaluation import per_class_ap50_of

    lines, classes = [], None
    for source in (part.strip() for part in spec.split(";") if part.strip()):
        name, _, note = (x.strip() for x in source.partition("="))
        path = Path(results_dir) / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"runs-table: no results file {path}")
        data = json.loads(path.read_text())
        backbones = data.get("pair", "teacher-student").split("-")
        for key in sorted(data["runs"], key=_variant_rank):
            bbox = data["runs"][key]["bbox"]
            per_class = per_class_ap50_of(bbox)
            if classes is None:
                classes = list(per_class)
            elif list(per_class) != classes:
                raise ValueError(f"runs-table: {name} run {key} has classes {list(per_class)}, not {classes}")
            variant, _, seed = key.partition("@")
            label = VARIANT_LABELS.get(variant, variant).format(*backbones)
            label += "".join(f", {x}" for x in (note, f"`SEED {seed}`" if seed else "") if x)
            lines.append(f"| {label} | {bbox['AP50']:.1f} | {bbox['AP']:.1f} | {bbox['AP75']:.1f} | "
                         + " | ".join(f"{v:.1f}" for v in per_class.values()) + " |")
    header = ["| run | AP50 | AP | AP75 | " + " | ".join(c.replace("_", " ") for c in classes or []) + " |",
              "|---|---|---|---|" + "---|" * len(classes or [])]
    return "\n".join(header + lines)


def runs_blocks(text):
    """(spec, the table as written) of every runs-table block of ``text``."""
    return [(m["spec"], m["table"].strip("\n")) for m in RUNS_BLOCK.finditer(text)]


def write_runs_tables(text, results_dir=RESULTS):
    """``text`` with every runs-table block filled from its results files."""
    return RUNS_BLOCK.sub(lambda m: f"{m[1]}\n{runs_table(m['spec'], results_dir)}\n{m[4]}", text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true",
                   help="replace the tables between their markers in README.md and BENCHMARKS.md, runs tables included")
    args = p.parse_args(argv)
    tables = [(begin, end, make()) for begin, end, make in TABLES]
    for _, _, out in tables:
        print(out + "\n")
    if args.write:  # each table into every document that holds its markers
        for doc in (README, BENCHMARKS):
            text = doc.read_text()
            for begin, end, out in tables:
                if begin in text:
                    start, stop = _table_span(text, begin, end)
                    text = text[:start] + "\n" + out + "\n" + text[stop:]
            doc.write_text(write_runs_tables(text))


if __name__ == "__main__":
    sys.exit(main())
