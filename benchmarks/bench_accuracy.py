#!/usr/bin/env python
"""Does TKD pay off on real steel defects? (BENCHMARKS.md, "Accuracy on NEU-DET")

Every run is a real training (the library's entry, as ``train_net.py`` runs it) from scratch,
then ``--eval-only`` with the plain student config. The ablations crd, ded and drd train the
TKD config with only that part (``MODEL.TKD.PARTS``). Runs are the pipeline's train and
evaluate jobs (tkd_d2.pipeline): a finished run (its ap_results.json exists) is skipped, an
interrupted one resumes from its last checkpoint; results are written to
``benchmarks/results/accuracy_<detector>.json`` after every run.

    export DETECTRON2_DATASETS=/path/holding/NEU-DET
    python benchmarks/bench_accuracy.py --stage teacher              # RetinaNet R-50
    python benchmarks/bench_accuracy.py --stage students             # R-18: every variant, 2 seeds
    python benchmarks/bench_accuracy.py --stage students --detector fcos --variants baseline tkd
    python benchmarks/bench_accuracy.py --tiny --dataset synthetic   # smoke test
"""
import argparse
import fcntl
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_results_dir_argument, machine, results_dir, write_result  # noqa: E402

from tkd_d2.config import TKD_PARTS, is_distiller_config, load_config, schedule_overrides  # noqa: E402
from tkd_d2.evaluation import RESULTS_FILE, load_ap_results, per_class_ap50_of  # noqa: E402
from tkd_d2.pipeline import TINY_OPTS, Stage, StageError, StageRunner  # noqa: E402
from tkd_d2.pipeline.training import entry_command, eval_job, train_job  # noqa: E402
from tkd_d2.pipeline.options import missing_run_files  # noqa: E402

# teacher -> student backbone pairs: (teacher config, student config, TKD config, preset)
PAIRS = {
    "R50-R18": ("{det}_R_50_FPN.yaml", "{det}_R_18_FPN.yaml", "tkd_{det}_R_50_to_R_18.yaml", "cpu"),
    # pretrained: the configs' own schedule (NEU-DET: 200 px, 2,400 iterations)
    "Lite2-Lite0": ("{det}_Lite2_FPN.yaml", "{det}_Lite0_FPN.yaml", "tkd_{det}_Lite2_to_Lite0.yaml", "none"),
}
# variant → the TKD parts it trains with (None: the plain student, the baseline)
VARIANT_PARTS = {"baseline": None, "crd": ["crd"], "ded": ["ded"], "drd": ["drd"], "crd_ded": ["crd", "ded"],
                 "crd_drd": ["crd", "drd"], "tkd": list(TKD_PARTS)}
# The CPU budget of BENCHMARKS.md: NEU-DET at 128 px, FPN/head width 128, batch 8; the
# teacher (one command) trains 3000 iterations, every student (another command) 1500.
CPU_PRESET = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "213", "INPUT.MIN_SIZE_TEST", "128",
              "INPUT.MAX_SIZE_TEST", "213", "MODEL.FPN.OUT_CHANNELS", "128", "SOLVER.IMS_PER_BATCH", "8",
              "SOLVER.CHECKPOINT_PERIOD", "250", "SOLVER.WARMUP_ITERS", "100", "MODEL.TKD.WARMUP_ITERS", "100"]
CPU_PRESET_ITERS = (3000, 1500)
# The short schedule of BENCHMARKS.md 1b (the NEU-DET Lite configs' own until 2026-12-04): 160 px,
# 600 iterations, the configs' LR steps and warm-ups scaled to it.
SHORT_PRESET = ["INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "267", "INPUT.MIN_SIZE_TEST", "160",
                "INPUT.MAX_SIZE_TEST", "267"]
SHORT_PRESET_ITERS = (600, 600)
PRESET_OPTS = {"cpu": (CPU_PRESET, CPU_PRESET_ITERS), "short": (SHORT_PRESET, SHORT_PRESET_ITERS)}
TINY = TINY_OPTS + ["SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()"]
# one run: train (reused when done, resumed when interrupted), then evaluate
RUN_STAGES = {"train": Stage(1, precious=True), "eval": Stage(2, ("train",), precious=True)}


def train_and_eval(name, train_cfg, eval_cfg, out, opts, results, key):
    """One resumable run: train (or resume), then evaluate with the plain config. True when it
    recorded a result in ``results`` (False: found done already, nothing to write)."""
    out = Path(out)
    ap_file = out / "eval" / "inference" / eval_dataset(opts) / RESULTS_FILE
    opts, entry = [str(o) for o in opts], entry_command()
    # not log.txt: detectron2's file logger writes that one, and the console's copy of each
    # line would appear there twice
    runner = StageRunner(out, RUN_STAGES, cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"),
                         log_file=str(out / "console.txt"), status_file=None, echo=False)
    try:
        trained = runner.execute(train_job("train", name, entry, train_cfg, opts + ["TEST.EVAL_PERIOD", "0"],
                                           str(out)))
        evaluated = runner.execute(eval_job("eval", name, entry, eval_cfg, opts, str(out / "model_final.pth"),
                                            str(out / "eval"), str(ap_file)))
    except StageError as e:
        raise SystemExit(str(e))
    if trained:
        (out / "train_seconds.txt").write_text(f"{runner.status.get('train')['seconds']:.1f}\n")
    if not trained and not evaluated and key in results["runs"]:
        print(f"[{name}] done already: {ap_file}")
        return False
    bbox = load_ap_results(ap_file)["bbox"]
    seconds = (out / "train_seconds.txt").read_text().strip() if (out / "train_seconds.txt").exists() else "nan"
    results["runs"][key] = {"config": train_cfg, "output": str(out), "bbox": bbox,
                            "train_seconds": float(seconds), "opts": opts,
                            "command": " ".join(["python"] + sys.argv), "machine": machine()}
    return True


def schedule(config, max_iter, preset, opts):
    """Overrides that train ``config`` (with ``opts``) for ``max_iter`` iterations; none for
    ``max_iter`` None (the config's own schedule). The cpu preset (BENCHMARKS.md): the LR steps
    at 80 % and 93 % of ``max_iter`` (none below 20 iterations), the preset's warm-ups kept.
    Otherwise the config's own schedule (LR steps, warm-ups) scaled to ``max_iter``."""
    if not max_iter:
        return []
    if preset == "cpu":
        steps = f"({int(max_iter * 0.8)}, {int(max_iter * 0.93)})" if max_iter >= 20 else "()"
        return ["SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", steps]
    cfg = load_config(ROOT / config, opts, register_datasets=False)
    return schedule_overrides(cfg, max_iter, tkd=is_distiller_config(cfg))


def eval_dataset(opts):
    return "synthetic_defects_test" if "synthetic" in " ".join(map(str, opts)) else "neu_det_test"


def summarise(results):
    groups = {}
    for key, r in results["runs"].items():
        variant = key.split("@")[0]
        groups.setdefault(variant, []).append(r["bbox"])
    summary = {}
    for variant, runs in groups.items():
        entry = {}
        for metric in ("AP50", "AP", "AP75"):
            vals = [b[metric] for b in runs if metric in b]
            entry[metric] = statistics.mean(vals)
            entry[f"{metric}_min"], entry[f"{metric}_max"] = min(vals), max(vals)
        entry["seeds"] = len(runs)
        summary[variant] = entry
    results["summary"] = summary
    return summary


def save(name, results, directory):
    """Merge ``results`` with the runs already on disk, then write: commands for different
    variants (or detectors) may run side by side and share one results file."""
    path = Path(results_dir(directory)) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".json.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            on_disk = json.loads(path.read_text()).get("runs", {})
            results["runs"] = {**on_disk, **results["runs"]}
        summarise(results)
        write_result(name, results, directory)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["teacher", "students", "all", "report"], default="all",
                   help="report: print the markdown tables of the results file, train nothing")
    p.add_argument("--detector", choices=["retinanet", "fcos"], default="retinanet")
    p.add_argument("--dataset", choices=["neu_det", "synthetic"], default="neu_det")
    p.add_argument("--pair", choices=list(PAIRS), default="R50-R18",
                   help="teacher-student backbones: R50-R18 from scratch, Lite2-Lite0 ImageNet-pretrained")
    p.add_argument("--variants", nargs="+", default=list(VARIANT_PARTS), choices=list(VARIANT_PARTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2],
                   help="the students' seeds (every variant trains each)")
    p.add_argument("--teacher-seed", type=int, default=None,
                   help="train (and distil from) a teacher with SEED N: run key teacher@N, folder teacher_seedN "
                        "(default: the config's SEED, key teacher)")
    p.add_argument("--teacher", metavar="DIR", default=None,
                   help="distil from the trained teacher in DIR (its config.yaml and model_final.pth, e.g. "
                        "benchmarks/results/teachers/...) instead of training one; --stage teacher is refused")
    p.add_argument("--teacher-iter", type=int, default=None,
                   help="SOLVER.MAX_ITER of the teacher (preset none: the config's schedule scaled to it)")
    p.add_argument("--student-iter", type=int, default=None,
                   help="SOLVER.MAX_ITER of every student (preset none: the config's schedule scaled to it)")
    p.add_argument("--output-root", default=None,
                   help="where runs go (default output/bench_<dataset>_<detector>); put it outside the "
                        "work tree to keep checkpoints across sessions")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides for every run")
    p.add_argument("--preset", choices=["cpu", "short", "none"], default=None,
                   help="cpu: the 2-core budget of BENCHMARKS.md (128 px, width 128, 3000/1500 iters); "
                        "short: section 1b's NEU-DET Lite schedule (160 px, 600 iters, the configs' "
                        "schedule scaled); none: the configs as they are (default: the pair's)")
    p.add_argument("--tiny", action="store_true", help="smoke test on a tiny synthetic set")
    p.add_argument("--name", default=None, help="results file name")
    add_results_dir_argument(p)
    args = p.parse_args()
    teacher_yaml, student_yaml, tkd_yaml = (f.format(det=args.detector) for f in PAIRS[args.pair][:3])
    args.preset = args.preset or PAIRS[args.pair][3]
    if args.preset in PRESET_OPTS and not args.tiny:
        args.teacher_iter = args.teacher_iter or PRESET_OPTS[args.preset][1][0]
        args.student_iter = args.student_iter or PRESET_OPTS[args.preset][1][1]
    if args.tiny:
        args.preset = "none"
        args.dataset = "synthetic"
        args.teacher_iter = args.teacher_iter or 3
        args.student_iter = args.student_iter or 3
        args.seeds = args.seeds[:1]
    folder = "NEU-DET" if args.dataset == "neu_det" else "Synthetic"
    det = args.detector
    pair = "" if args.pair == "R50-R18" else "_" + args.pair.replace("-", "_")
    root = Path(args.output_root or ROOT / "output" / f"bench_{args.dataset}_{det}{pair}" / ("tiny" if args.tiny else ""))
    name = args.name or f"accuracy_{args.dataset}_{det}{pair}" + ("_tiny" if args.tiny else "")
    results_path = Path(results_dir(args.results_dir)) / f"{name}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
    results.update({"machine": machine(), "command": " ".join(["python"] + sys.argv), "dataset": args.dataset,
                    "detector": det, "pair": args.pair})
    common = (TINY if args.tiny else []) + PRESET_OPTS.get(args.preset, ([], ()))[0] + list(args.opts)
    if args.dataset == "synthetic":
        common = ["DATASETS.TRAIN", "('synthetic_defects_train',)", "DATASETS.TEST", "('synthetic_defects_test',)"] + common

    teacher_cfg = f"configs/{folder}/{teacher_yaml}"
    teacher_out = root / ("teacher_R_50" if args.pair == "R50-R18" else "teacher")
    teacher_key, teacher_seed = "teacher", []
    if args.teacher_seed is not None:
        teacher_out, teacher_key = root / f"teacher_seed{args.teacher_seed}", f"teacher@{args.teacher_seed}"
        teacher_seed = ["SEED", args.teacher_seed]
    teacher_opts = common + teacher_seed + schedule(teacher_cfg, args.teacher_iter, args.preset, common)
    if args.teacher:
        if args.stage == "teacher" or args.teacher_seed is not None:
            raise SystemExit("--teacher DIR is a trained teacher: it takes neither --stage teacher nor --teacher-seed")
        teacher_out = Path(args.teacher).resolve()
        missing = missing_run_files(teacher_out)
        if missing:
            raise SystemExit(f"--teacher {args.teacher}: no {' or '.join(missing)} in it")
    elif args.stage in ("teacher", "all"):
        # a command that finds its runs done leaves the file (its date, git and command) as it was
        if train_and_eval(teacher_key, teacher_cfg, teacher_cfg, teacher_out, teacher_opts, results, teacher_key):
            save(name, results, args.results_dir)
    if args.stage in ("students", "all"):
        weights = teacher_out / "model_final.pth"
        if not weights.is_file() and set(args.variants) != {"baseline"}:
            raise SystemExit(f"teacher not trained yet ({weights}); run --stage teacher first")
        student_plain = f"configs/{folder}/{student_yaml}"
        for variant in args.variants:
            parts = VARIANT_PARTS[variant]
            cfg = student_plain if parts is None else f"configs/{folder}/{tkd_yaml}"
            student_schedule = schedule(cfg, args.student_iter, args.preset, common)
            for seed in args.seeds:
                opts = common + ["SEED", seed] + student_schedule
                if parts is not None:
                    # the config the teacher was trained with (its preset and opts included)
                    opts += ["MODEL.TKD.TEACHER.CONFIG", teacher_out / "config.yaml", "MODEL.TKD.TEACHER.WEIGHTS", weights,
                             "MODEL.TKD.PARTS", json.dumps(parts)]
                key = f"{variant}@{seed}"
                # distilled from another teacher seed: its own folder (the default teacher's runs stand)
                from_teacher = f"_teacher{args.teacher_seed}" if parts is not None and args.teacher_seed is not None else ""
                if train_and_eval(key, cfg, student_plain, root / f"{variant}_seed{seed}{from_teacher}", opts,
                                  results, key):
                    save(name, results, args.results_dir)
    print(report(results))


ORDER = ["teacher", "baseline", "crd", "ded", "drd", "crd_ded", "crd_drd", "tkd"]


def _rank(variant):
    return ORDER.index(variant) if variant in ORDER else len(ORDER)


def report(results):
    """Markdown: the mean (min-max) over seeds with the AP50 gain over the baseline, then
    every run with its per-class AP50."""
    summary = summarise(results)
    variants = sorted(summary, key=_rank)
    base = summary.get("baseline", {}).get("AP50")
    lines = ["| model | seeds | AP50 mean (min-max) | AP50 vs baseline | AP | AP75 |", "|---|---|---|---|---|---|"]
    for v in variants:
        s = summary[v]
        gain = f"{s['AP50'] - base:+.1f}" if base is not None and v != "baseline" else "-"
        lines.append(f"| {v} | {s['seeds']} | {s['AP50']:.1f} ({s['AP50_min']:.1f}-{s['AP50_max']:.1f}) | {gain} "
                     f"| {s['AP']:.1f} | {s['AP75']:.1f} |")
    runs = sorted(results["runs"].items(), key=lambda kv: (_rank(kv[0].split("@")[0]), kv[0]))
    classes = list(per_class_ap50_of(runs[0][1]["bbox"])) if runs else []
    lines += ["", "| run | AP50 | AP | " + " | ".join(classes) + " | train s |",
              "|---|---|---|" + "---|" * len(classes) + "---|"]
    for key, r in runs:
        b, per_class = r["bbox"], per_class_ap50_of(r["bbox"])
        lines.append(f"| {key} | {b['AP50']:.1f} | {b['AP']:.1f} | "
                     + " | ".join(f"{per_class.get(c, float('nan')):.1f}" for c in classes)
                     + f" | {r.get('train_seconds', float('nan')):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
