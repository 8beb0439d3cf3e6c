"""The main job's report: teacher / baseline / TKD student, written as Markdown + PNG from a
typed record (:class:`Report`).

Everything in the report is read from files the runs wrote or measured by the pipeline:

* accuracy: the evaluator's ``ap_results.json`` (see :mod:`tkd_d2.evaluation.coco`), shown
  rounded to 2 decimals in the tables and verbatim in a "raw numbers" section;
* training curves: detectron2's ``metrics.json`` (one JSON object per line);
* size and speed: :mod:`tkd_d2.pipeline.speed` (batch 1, warm-up, then timed iterations on
  real test images);
* wall times: what the pipeline measured and stored in its stage status file.
"""
import dataclasses
import json
import math
import os
from collections import OrderedDict
from typing import List, Optional, Tuple

from ..evaluation import load_ap_results, per_class_ap50_of
from ..fileio import atomic_write

__all__ = [
    "KD_PREFIXES",
    "DeployRow",
    "DeploySection",
    "ModelResult",
    "Report",
    "SpeedRow",
    "SpeedSection",
    "StageTime",
    "fmt_number",
    "load_metrics",
    "plot_training_curves",
    "speed_section",
    "split_loss_keys",
    "write_report",
]

# Loss names of the three distillers (tkd_d2.modeling.distiller); any other "loss_*" key
# in metrics.json is a detection loss of the detector being trained.
KD_PREFIXES = ("loss_crd_", "loss_ded_", "loss_drd_")


# ------------------------------------------------------------------------------ the record
@dataclasses.dataclass
class ModelResult:
    key: str  # "teacher", "baseline", "tkd"
    label: str
    ap_results: Optional[str] = None  # the evaluator's ap_results.json


@dataclasses.dataclass
class SpeedRow:
    label: str
    params: int
    images_per_second: float
    ms_per_image: float


@dataclasses.dataclass
class SpeedSection:
    rows: List[SpeedRow]
    note: str = ""


@dataclasses.dataclass
class DeployRow:
    label: str
    runtime: str  # "PyTorch eager", "ONNX Runtime"
    size_mb: float
    images_per_second: float
    ap_results: Optional[str] = None


@dataclasses.dataclass
class DeploySection:
    rows: List[DeployRow]
    note: str = ""


@dataclasses.dataclass
class StageTime:
    label: str
    seconds: Optional[float] = None
    status: str = ""
    note: str = ""
    planned: Optional[float] = None  # what the plan said before training (None: no plan)


@dataclasses.dataclass
class Report:
    """What :func:`write_report` writes, in display order."""

    title: str
    dataset: str  # the test set's name
    models: List[ModelResult]
    intro: List[str] = dataclasses.field(default_factory=list)
    speed: Optional[SpeedSection] = None
    deploy: Optional[DeploySection] = None
    stages: List[StageTime] = dataclasses.field(default_factory=list)
    plan_note: str = ""  # where the planned times come from (and what --budget chose)
    curves: Optional[str] = None  # PNG
    pictures: List[str] = dataclasses.field(default_factory=list)  # PNGs
    pictures_note: str = ""
    commands: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (stage, command)
    teacher_given: bool = False  # --teacher: trained before the run, not by it


# ------------------------------------------------------------------------------ reading
def load_metrics(path):
    """The records of a detectron2 ``metrics.json``, one per iteration, sorted.

    A resumed run re-logs iterations after its last checkpoint: the later line wins. Lines
    of the same iteration (training scalars and evaluation results) are merged.
    """
    by_iter = OrderedDict()
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run
            if "iteration" not in record:
                continue
            by_iter.setdefault(int(record["iteration"]), {}).update(record)
    return [by_iter[k] for k in sorted(by_iter)]


def split_loss_keys(records):
    """(detection loss keys, KD loss keys) present in ``records``, in a stable order."""
    keys = []
    for r in records:
        for k in r:
            if k.startswith("loss_") and k not in keys:
                keys.append(k)
    kd = [k for k in keys if k.startswith(KD_PREFIXES)]
    det = [k for k in keys if k not in kd]
    return det, kd


# ------------------------------------------------------------------------------ plotting
def plot_training_curves(runs, out_png, kd_run=None):
    """Plot the detection loss (sum of the detector's own ``loss_*`` terms) of every run and
    each KD term of ``kd_run`` against the iteration; save a PNG. ``runs``: label → path of
    metrics.json (missing files are skipped). Returns the keys plotted per run."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    fig, (ax_det, ax_kd) = plt.subplots(1, 2, figsize=(12, 4.5))
    plotted = {}
    kd_records = []
    for label, path in runs.items():
        records = load_metrics(path)
        det_keys, kd_keys = split_loss_keys(records)
        plotted[label] = {"detection": det_keys, "kd": kd_keys}
        points = [
            (r["iteration"], sum(r[k] for k in det_keys))
            for r in records
            if det_keys and all(k in r for k in det_keys)
        ]
        if points:
            x, y = zip(*points)
            ax_det.plot(x, y, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        if label == kd_run:
            kd_records = records
            for key in kd_keys:
                pts = [(r["iteration"], r[key]) for r in records if key in r]
                if pts:
                    x, y = zip(*pts)
                    ax_kd.plot(x, y, marker="o" if len(pts) < 30 else None, markersize=3,
                               label=key)
    ax_det.set_title("detection loss (sum of the detector's loss terms)")
    ax_det.set_xlabel("iteration")
    ax_det.set_ylabel("loss")
    ax_det.grid(alpha=0.3)
    if ax_det.lines:
        ax_det.legend()
    else:
        ax_det.text(0.5, 0.5, "no training metrics found", ha="center", va="center",
                    transform=ax_det.transAxes)
    ax_kd.set_title(f"KD terms ({kd_run})" if kd_run else "KD terms")
    ax_kd.set_xlabel("iteration")
    ax_kd.set_ylabel("weighted loss")
    ax_kd.grid(alpha=0.3)
    if ax_kd.lines:
        ax_kd.legend(fontsize=8)
        positive = [v for line in ax_kd.lines for v in line.get_ydata() if v > 0]
        if positive and max(positive) / min(positive) > 100:
            ax_kd.set_yscale("log")  # the terms differ by orders of magnitude
    else:
        msg = "no KD terms in metrics.json" if kd_records or kd_run else "no KD run"
        ax_kd.text(0.5, 0.5, msg, ha="center", va="center", transform=ax_kd.transAxes)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return plotted


# ------------------------------------------------------------------------------ sections
def speed_section(result, teacher_label, student_label):
    """The report's size-and-speed section from ``{"teacher": ..., "student": ...}`` results
    of :func:`tkd_d2.pipeline.speed.measure_cpu_speed` with a ``params`` count each; None when
    nothing was measured."""
    if not result:
        return None
    shown = ("params", "images_per_second", "ms_per_image")
    rows = [SpeedRow(teacher_label, *(result["teacher"][k] for k in shown)),
            SpeedRow(student_label, *(result["student"][k] for k in shown))]
    student = result["student"]
    sizes = ", ".join("x".join(map(str, hw)) for hw in student["input_sizes"])
    note = (
        f"Measured on this machine's CPU, batch 1, {student['warmup']} warm-up + {student['iters']} "
        f"timed iterations over test images (input {sizes} px after resizing, whole "
        f"forward pass including post-processing), {student['threads']} torch threads; "
        "images/s and ms/image from the median iteration. Other processes on the "
        "machine affect the numbers."
    )
    return SpeedSection(rows, note)


# ------------------------------------------------------------------------------ writing
def fmt_number(value, digits=2):
    """``value`` rounded for a table; NaN / missing → ``n/a``."""
    if value is None:
        return "n/a"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_seconds(seconds):
    if seconds is None:
        return "n/a"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def _rel(path, start):
    return os.path.relpath(path, start).replace(os.sep, "/")


def _md_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_number(value):
    """A real number, not NaN (an AP that COCO could compute)."""
    return isinstance(value, (int, float)) and not math.isnan(value)


def _weak_teacher_note(results, teacher_given=False):
    """A warning when the teacher's AP50 is not above the baseline student's: distillation
    passes on what the teacher knows, so from such a teacher it cannot be expected to help."""
    teacher = results.get("teacher", {}).get("bbox", {}).get("AP50")
    baseline = results.get("baseline", {}).get("bbox", {}).get("AP50")
    if not (_is_number(teacher) and _is_number(baseline)):
        return None
    if teacher > baseline:
        return None
    return (f"**The teacher is not above the baseline student** (AP50 {teacher:.2f} vs {baseline:.2f}): "
            "distillation passes on what the teacher knows, so from this teacher TKD cannot be expected "
            "to help. " + ("Distil from a stronger one: train it longer and pass its folder as `--teacher`."
                           if teacher_given else
                           "Train the teacher longer (a larger `--budget` or `--epochs`, then `--redo teacher`), "
                           "or train one apart and pass its folder as `--teacher`."))


def write_report(path, report):
    """Write the Markdown report ``path`` from ``report`` (a :class:`Report`, built by
    :meth:`tkd_d2.pipeline.Pipeline.summary`); returns its text."""
    out_dir = os.path.dirname(os.path.abspath(path))
    models = report.models
    results = {}
    for m in models:
        if m.ap_results and os.path.isfile(m.ap_results):
            results[m.key] = load_ap_results(m.ap_results)
    lines = [f"# {report.title}", ""]
    lines += list(report.intro) + [""]

    # ---- accuracy
    lines += [f"## Accuracy on `{report.dataset or '?'}` (COCO bbox AP, %)", ""]
    rows = []
    for m in models:
        bbox = results.get(m.key, {}).get("bbox", {})
        link = f"[ap_results.json]({_rel(m.ap_results, out_dir)})" if m.key in results else "missing"
        rows.append([m.label] + [fmt_number(bbox.get(k)) for k in ("AP", "AP50", "AP75")] + [link])
    lines += [_md_table(["model", "AP", "AP50", "AP75", "source"], rows), ""]
    if "baseline" in results and "tkd" in results:
        base, tkd = results["baseline"]["bbox"], results["tkd"]["bbox"]
        deltas = []
        for k in ("AP", "AP50", "AP75"):
            a, b = base.get(k), tkd.get(k)
            if _is_number(a) and _is_number(b):
                deltas.append(f"{k} {b - a:+.2f}")
        if deltas:
            lines += ["TKD student minus baseline student: " + ", ".join(deltas) + " points.", ""]
    weak = _weak_teacher_note(results, report.teacher_given)
    if weak:
        lines += [weak, ""]
    per_class = {m.key: per_class_ap50_of(results.get(m.key, {}).get("bbox", {})) for m in models}
    classes = list(dict.fromkeys(c for m in models for c in per_class[m.key]))
    if classes:
        lines += ["### Per-class AP50 (%)", ""]
        rows = [[c] + [fmt_number(per_class[m.key].get(c)) for m in models] for c in classes]
        lines += [_md_table(["class"] + [m.label for m in models], rows), ""]
        lines += ["n/a: the class has no ground truth in the test set, or no result.", ""]

    # ---- size and speed
    speed = report.speed
    lines += ["## Size and CPU speed", ""]
    if speed and speed.rows:
        rows = [[r.label, f"{r.params / 1e6:.2f} M", fmt_number(r.images_per_second),
                 fmt_number(r.ms_per_image, 1)] for r in speed.rows]
        lines += [_md_table(["model", "parameters", "images/s", "ms/image"], rows), ""]
        if speed.note:
            lines += [speed.note, ""]
    else:
        lines += ["Not measured.", ""]

    # ---- deploy
    deploy = report.deploy
    if deploy and deploy.rows:
        rows = []
        for r in deploy.rows:
            ap_file = r.ap_results
            bbox = load_ap_results(ap_file).get("bbox", {}) if ap_file and os.path.isfile(ap_file) else {}
            rows.append([r.label, r.runtime, fmt_number(r.size_mb, 1), fmt_number(r.images_per_second),
                         fmt_number(bbox.get("AP")), fmt_number(bbox.get("AP50"))])
        lines += ["## Deploy", "", _md_table(["model", "runtime", "size (MB)", "images/s", "AP",
                                              "AP50"], rows), ""]
        if deploy.note:
            lines += [deploy.note, ""]

    # ---- time
    lines += ["## Wall time of each stage", ""]
    if report.plan_note:
        lines += [report.plan_note, ""]
    planned = [s.planned for s in report.stages if s.planned is not None]
    if planned:  # a run with a plan: planned beside actual, and the totals
        rows = [[s.label, fmt_seconds(s.planned), fmt_seconds(s.seconds), s.status, s.note]
                for s in report.stages]
        actual = sum(s.seconds or 0.0 for s in report.stages)
        rows.append(["total", fmt_seconds(sum(planned)), fmt_seconds(actual), "", ""])
        lines += [_md_table(["stage", "planned", "wall time", "status", "note"], rows), ""]
    else:
        rows = [[s.label, fmt_seconds(s.seconds), s.status, s.note] for s in report.stages]
        lines += [_md_table(["stage", "wall time", "status", "note"], rows), ""]

    # ---- curves
    lines += ["## Training curves", ""]
    curves = report.curves
    if curves and os.path.isfile(curves):
        lines += [f"![training curves]({_rel(curves, out_dir)})", "",
                  "Left: detection loss (sum of the detector's own loss terms) of each run; "
                  "right: each weighted KD term of the TKD run (from metrics.json).", ""]
    else:
        lines += ["No curves (metrics.json missing).", ""]

    # ---- pictures
    lines += ["## Predictions on test images", ""]
    pictures = report.pictures
    if pictures:
        lines += [report.pictures_note, ""]
        lines += [f"- [{os.path.basename(p)}]({_rel(p, out_dir)})" for p in pictures] + [""]
        lines += [f"![{os.path.basename(pictures[0])}]({_rel(pictures[0], out_dir)})", ""]
    else:
        lines += ["No pictures.", ""]

    # ---- commands and raw numbers
    if report.commands:
        lines += ["## Commands", "", "```"]
        for label, command in report.commands:
            lines += [f"# {label}", command]
        lines += ["```", ""]
    if results:
        lines += ["## Raw numbers", "",
                  "The evaluator's `ap_results.json` of each model, verbatim (the tables above "
                  "round these to 2 decimals).", ""]
        for m in models:
            if m.key in results:
                lines += [f"### {m.label}", "", "```json", json.dumps(results[m.key], indent=2),
                          "```", ""]
    text = "\n".join(lines).rstrip() + "\n"
    atomic_write(path, text)
    return text
