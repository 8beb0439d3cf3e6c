#!/usr/bin/env python
"""Large images, small defects: crops at native scale + tiled inference against shrinking
the whole image, at the same pixels per training step (BENCHMARKS.md, "Large images").

Each route is one run of the main job (``tools/tkd_pipeline.py``: teacher, baseline, TKD
student, evaluation) on the same data with the same iterations:

  shrink  every image resized to SIZE px (the defects shrink with it)
  crops   the image at NATIVE px, training on SIZE px crops centred on defects
          (INPUT.DEFECT_CROP), inference in SIZE px tiles (TEST.TILE)

A step sees SIZE x SIZE pixels per image on both routes, so they cost about the same; the
stage times each route's report records say how close. Reruns reuse finished stages; the
results file is written after each route.

    python benchmarks/bench_large_images.py                           # synthetic 1024 px, 10-40 px defects
    python benchmarks/bench_large_images.py --dataset custom --native 640 --size 320 \\
        --train pcb_train:coco:IMAGES:train.json --test pcb_test:coco:IMAGES:test.json
    python benchmarks/bench_large_images.py --tiny                    # smoke test
    python benchmarks/bench_large_images.py --routes crops --redo eval  # evaluate one route again
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_results_dir_argument, command_line, machine, results_dir, write_result  # noqa: E402

from tkd_d2.evaluation import load_ap_results  # noqa: E402

MODELS = ("teacher", "baseline", "tkd")


def route_opts(route, native, size, overlap, tile=None):
    """The overrides of one route (both: test at the route's scale; crops: tiles of ``tile`` px,
    the crop size when None, 0 for whole images)."""
    if route == "shrink":
        return ["INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(size),
                "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(size)]
    return ["INPUT.MIN_SIZE_TRAIN", f"({native},)", "INPUT.MAX_SIZE_TRAIN", str(native),
            "INPUT.MIN_SIZE_TEST", str(native), "INPUT.MAX_SIZE_TEST", str(native),
            "INPUT.DEFECT_CROP.ENABLED", "True", "INPUT.DEFECT_CROP.SIZE", str(size),
            "TEST.TILE.SIZE", str(size if tile is None else tile), "TEST.TILE.OVERLAP", str(overlap)]


def collect(out):
    """AP50 (and AP) of each model and the wall time of each stage, from the route's files."""
    stages = json.loads((out / "stages.json").read_text())["stages"]
    models = {}
    for m in MODELS:
        found = list((out / f"eval_{m}" / "inference").glob("*/ap_results.json"))
        bbox = load_ap_results(str(found[0])).get("bbox", {}) if found else {}
        models[m] = {"AP50": bbox.get("AP50"), "AP": bbox.get("AP"),
                     "train_seconds": stages.get(m, {}).get("seconds"),
                     "eval_seconds": stages.get(f"eval_{m}", {}).get("seconds")}
    return {"models": models, "report": str(out / "report.md"),
            "planned": (stages.get("plan", {}).get("result") or {}).get("planned")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["synthetic", "custom"], default="synthetic")
    p.add_argument("--train", action="append", default=[], help="--dataset custom: as tkd_pipeline.py")
    p.add_argument("--test", action="append", default=[], help="--dataset custom: as tkd_pipeline.py")
    p.add_argument("--native", type=int, default=1024, help="the crops route's input (px; synthetic: the image size)")
    p.add_argument("--size", type=int, default=256, help="shrunk input = crop = tile side (px)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap (px)")
    p.add_argument("--tile", type=int, default=None,
                   help="the crops route's inference tile (px; default: --size; 0: whole images)")
    p.add_argument("--defect-size", type=int, default=48,
                   help="synthetic: canvas of each defect (DATASETS.SYNTHETIC.DEFECT_SIZE; 48: 10-40 px defects)")
    p.add_argument("--max-iter", type=int, default=1000, help="iterations of every model on both routes")
    p.add_argument("--teacher-epochs", type=float, default=1.0, metavar="R",
                   help="the teacher trains R times --max-iter on both routes (a larger model needs longer)")
    p.add_argument("--detector", choices=["retinanet", "fcos"], default="retinanet")
    p.add_argument("--routes", nargs="+", choices=["shrink", "crops"], default=["shrink", "crops"])
    p.add_argument("--output-root", default="output/bench_large_images")
    p.add_argument("--name", default=None, help="results file (default large_images_<dataset>_<detector>)")
    p.add_argument("--tiny", action="store_true", help="smoke test: a few 256 px images, 2 iterations")
    p.add_argument("--redo", action="append", default=[], metavar="STAGE",
                   help="passed to each route's pipeline (e.g. eval: evaluate again after a change)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="overrides for both routes (last)")
    add_results_dir_argument(p)
    args = p.parse_args()
    data = []
    if args.dataset == "synthetic":
        data = ["DATASETS.SYNTHETIC.IMAGE_SIZE", str(args.native),
                "DATASETS.SYNTHETIC.DEFECT_SIZE", str(args.defect_size)]
    if args.tiny:
        args.native, args.size, args.overlap, args.max_iter = 256, 128, 32, 2
        data = ["DATASETS.SYNTHETIC.IMAGE_SIZE", "256", "DATASETS.SYNTHETIC.DEFECT_SIZE", "48"]
    name = args.name or f"large_images_{args.dataset}_{args.detector}" + ("_tiny" if args.tiny else "")
    root = Path(args.output_root).resolve() / name
    result = {"machine": machine(), "command": command_line(),
              "setting": {k: getattr(args, k) for k in ("dataset", "native", "size", "overlap",
                                                        "defect_size", "max_iter", "detector", "tiny")},
              "routes": {}}
    if args.teacher_epochs != 1.0:  # (results files written before the option hold no such key)
        result["setting"]["teacher_epochs"] = args.teacher_epochs
    if args.tile is not None:  # (nor this one)
        result["setting"]["tile"] = args.tile
    earlier = results_dir(args.results_dir) / f"{name}.json"
    if earlier.exists():  # the routes not run now stay, when they ran the same setting
        kept = json.loads(earlier.read_text())
        def same(a, b, route):  # the tile is the crops route's alone
            if route == "shrink":
                a, b = ({k: v for k, v in x.items() if k != "tile"} for x in (a, b))
            return a == b
        result["routes"] = {r: v for r, v in kept.get("routes", {}).items()
                            if r not in args.routes and same(kept.get("setting", {}), result["setting"], r)}
    for route in args.routes:
        out = root / route
        cmd = [sys.executable, str(ROOT / "tools" / "tkd_pipeline.py"), "--dataset", args.dataset,
               "--detector", args.detector, "--output", str(out), "--max-iter", str(args.max_iter),
               "--teacher-epochs", str(args.teacher_epochs), "--no-derive" if args.dataset == "custom" else None]
        cmd += [x for e in args.train for x in ("--train", e)] + [x for e in args.test for x in ("--test", e)]
        cmd += ["--tiny"] if args.tiny else []
        cmd += [x for stage in args.redo for x in ("--redo", stage)]
        cmd += ["--opts", *data, *route_opts(route, args.native, args.size, args.overlap, args.tile), *args.opts]
        cmd = [c for c in cmd if c is not None]
        print(f"[{route}] $ {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        result["routes"][route] = {"opts": route_opts(route, args.native, args.size, args.overlap, args.tile),
                                   "command": command_line(), "date": machine()["date"], **collect(out)}
        write_result(name, result, args.results_dir)
    print(f"| route | " + " | ".join(f"{m} AP50" for m in MODELS) + " | train s (T/B/K) |")
    print("|---|---|---|---|---|")
    for route, r in result["routes"].items():
        m = r["models"]
        ap = " | ".join("n/a" if m[k]["AP50"] is None else f"{m[k]['AP50']:.1f}" for k in MODELS)
        secs = "/".join(f"{(m[k]['train_seconds'] or 0):.0f}" for k in MODELS)
        print(f"| {route} | {ap} | {secs} |")


if __name__ == "__main__":
    main()
