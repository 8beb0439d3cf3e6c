#!/usr/bin/env python
"""Collect the ap_results.json of runs made outside bench_accuracy.py (the pipeline's, or
train_net.py by hand) into one results file of bench_accuracy's form, so that BENCHMARKS.md
and tools/results_table.py can cite them.

    python benchmarks/collect_ap_results.py --name accuracy_deeppcb_retinanet_Lite2_Lite0_e1 \\
        teacher=OUT/eval_teacher baseline@42=OUT/eval_baseline tkd@42=OUT/eval_tkd \\
        --command "python tools/tkd_pipeline.py --dataset custom ..."

Each ``KEY=DIR`` takes ``DIR/inference/<dataset>/ap_results.json``; a key already in the file
is replaced. ``--command`` records how the runs were made.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_dir_argument, machine, results_dir, write_result  # noqa: E402

import tkd_d2  # noqa: F401,E402
from tkd_d2.evaluation import RESULTS_FILE, load_ap_results  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="KEY=EVAL_DIR (KEY: teacher, baseline@SEED, tkd@SEED, ...)")
    p.add_argument("--name", required=True, help="results file name")
    p.add_argument("--command", required=True, help="how the runs were made")
    add_results_dir_argument(p)
    args = p.parse_args(argv)
    path = Path(results_dir(args.results_dir)) / f"{args.name}.json"
    results = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    for item in args.runs:
        key, sep, folder = item.partition("=")
        files = sorted(Path(folder).glob(f"inference/*/{RESULTS_FILE}"))
        if not sep or len(files) != 1:
            raise SystemExit(f"{item}: expected KEY=DIR with one DIR/inference/*/{RESULTS_FILE}, found {len(files)}")
        results["runs"][key] = {"output": folder, "bbox": load_ap_results(files[0])["bbox"],
                                "command": args.command, "machine": machine()}
    results.update(command=args.command, machine=machine())
    write_result(args.name, results, args.results_dir)
    for key, run in results["runs"].items():
        print(f"{key}: AP50 {run['bbox']['AP50']:.1f}, AP {run['bbox']['AP']:.1f}")


if __name__ == "__main__":
    main()
