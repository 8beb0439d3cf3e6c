#!/usr/bin/env python
"""What does TKD cost per training iteration? (BENCHMARKS.md, "Training cost")

Measures, in one process and interleaved round by round (so drift hits every variant alike):
  student      a plain student training step (forward + backward)
  teacher_fwd  the teacher's forward (backbone + head, no grad)
  kd_off       the distiller with every KD weight 0: student step + teacher backbone forward
  tkd          full TKD step;  crd / ded / drd: the distiller with only that part on
Each variant's peak resident memory is measured in a fresh process (``--memory VARIANT``).

    python benchmarks/bench_cost.py                     # RetinaNet R-50 -> R-18, 200 px, batch 8
    python benchmarks/bench_cost.py --detector fcos --rounds 5
    python benchmarks/bench_cost.py --backbones lite --size 480 --batch 4 --layouts nchw nhwc --no-parts
    python benchmarks/bench_cost.py --tiny              # smoke test (seconds)
    python benchmarks/bench_cost.py --tiny --results-dir /tmp/r   # (or $TKD_BENCH_RESULTS_DIR)
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_results_dir_argument, fake_batch, load_cfg, machine, median_time, peak_rss_mb,  # noqa: E402
                    random_teacher_weights, run_python, write_result)

PARTS = ("crd", "ded", "drd")


# MODEL.CHANNELS_LAST, MODEL.HEAD_CHANNELS_LAST
LAYOUTS = {"nchw": ("False", "True"), "nhwc": ("True", "True"), "nhwc_backbone": ("True", "False")}


def _configs(detector, backbones="resnet"):
    folder, teacher, student = {"resnet": ("NEU-DET", "R_50", "R_18"),
                                "lite": ("Synthetic", "Lite2", "Lite0")}[backbones]
    return (f"configs/{folder}/{detector}_{student}_FPN.yaml", f"configs/{folder}/{detector}_{teacher}_FPN.yaml",
            f"configs/{folder}/tkd_{detector}_{teacher}_to_{student}.yaml")


def build_variants(args, tmp, only=None):
    import torch
    from detectron2.modeling import build_model

    from tkd_d2.modeling import apply_memory_format

    student_yaml, teacher_yaml, tkd_yaml = _configs(args.detector, args.backbones)
    small = ["MODEL.FPN.OUT_CHANNELS", "64"] if args.tiny else []
    teacher_file = tmp / "teacher.yaml"
    weights = tmp / "random_teacher.pth"
    if not weights.is_file():  # the memory runs reuse the parent's teacher
        teacher_file.write_text(load_cfg(teacher_yaml, small).dump())
        weights = random_teacher_weights(str(teacher_file), tmp)
    common = small + ["MODEL.TKD.TEACHER.CONFIG", str(teacher_file), "MODEL.TKD.TEACHER.WEIGHTS",
                      weights, "MODEL.TKD.WARMUP_ITERS", "0"]

    def built(yaml, opts):  # as the trainer builds it: in the config's memory layout
        cfg = load_cfg(yaml, opts)
        return apply_memory_format(cfg, build_model(cfg))

    builders = {}
    for layout in args.layouts:
        suffix = f"_{layout}" if len(args.layouts) > 1 else ""
        opts = ["MODEL.CHANNELS_LAST", LAYOUTS[layout][0], "MODEL.HEAD_CHANNELS_LAST", LAYOUTS[layout][1]]

        def distiller(keep, opts=opts):  # a part left out of MODEL.TKD.PARTS is not computed
            return built(tkd_yaml, common + opts + ["MODEL.TKD.PARTS", json.dumps(list(keep))])

        builders.update({
            f"teacher{suffix}": lambda opts=opts: built(teacher_yaml, small + opts),
            f"student{suffix}": lambda opts=opts: built(student_yaml, small + opts),
            f"kd_off{suffix}": lambda d=distiller: d([]),
            f"teacher_fwd{suffix}": lambda d=distiller: d([]).teacher,
            **({f"{part}{suffix}": (lambda part=part, d=distiller: d([part])) for part in PARTS}
               if args.parts else {}),
            f"tkd{suffix}": lambda d=distiller: d(list(PARTS)),
        })
    variants = {name: build() for name, build in builders.items() if only in (None, name)}
    for name, model in variants.items():
        if not name.startswith("teacher_fwd"):
            model.train()
    torch.manual_seed(0)
    return variants


def step_fn(name, model, batch):
    import torch
    from detectron2.utils.events import EventStorage

    if name.startswith("teacher_fwd"):
        def run():
            with torch.no_grad():
                images = model.preprocess_image(batch)
                features = model.backbone(images.tensor)
                model.head([features[f] for f in model.head_in_features])
        return run

    def run():
        with EventStorage():
            losses = model(batch)
            sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)
    return run


def measure(args, tmp):
    import statistics

    variants = build_variants(args, Path(tmp))
    batch = fake_batch(args.batch, args.size, args.boxes)
    fns = {name: step_fn(name, m, batch) for name, m in variants.items()}
    for fn in fns.values():  # warm-up
        fn()
    samples = {name: [] for name in fns}
    for r in range(args.rounds):
        for name, fn in fns.items():
            samples[name].append(median_time(fn, 1, warmup=0)[0])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {v[-1]:.3f}s" for k, v in samples.items()), file=sys.stderr, flush=True)
    sec = {name: statistics.median(v) for name, v in samples.items()}
    result = {"seconds_per_iter": sec, "samples": samples}
    for layout in args.layouts:
        suffix = f"_{layout}" if len(args.layouts) > 1 else ""
        ratios = _ratios({k[: len(k) - len(suffix)]: v for k, v in sec.items() if k.endswith(suffix)},
                         args.parts)
        if suffix:
            result.setdefault("by_layout", {})[layout] = ratios
        else:
            result.update(ratios)
    if len(args.layouts) > 1:  # how much faster the second layout is, per model
        a, b = args.layouts[:2]
        result[f"speedup_{b}_over_{a}"] = {
            k[: -len(a) - 1]: sec[k] / sec[k[: -len(a)] + b] for k in sec if k.endswith(f"_{a}")}
    return result


def _ratios(sec, parts):
    base = sec["student"] + sec["teacher_fwd"]
    ratios = {
        "tkd_over_student_plus_teacher_fwd": sec["tkd"] / base,
        "tkd_over_student": sec["tkd"] / sec["student"],
        "kd_off_over_student_plus_teacher_fwd": sec["kd_off"] / base,
        "kd_total_share_of_tkd_step": (sec["tkd"] - sec["kd_off"]) / sec["tkd"],
    }
    if parts:  # the shipped default (MODEL.TKD.PARTS ["crd"]) against its parts
        ratios["crd_over_student_plus_teacher_fwd"] = sec["crd"] / base
        ratios["kd_share_of_tkd_step"] = {p: (sec[p] - sec["kd_off"]) / sec["tkd"] for p in PARTS}
    return ratios


# op groups of the profile breakdown (aten op names, self CPU time)
OP_GROUPS = {"convolution": ("aten::mkldnn_convolution", "aten::convolution_backward"),
             "normalisation": ("aten::native_group_norm", "aten::native_group_norm_backward",
                               "aten::native_batch_norm", "aten::native_batch_norm_backward")}


def breakdown(args, tmp, steps=5, attempts=4):
    """Where the CRD-only step spends what the student step and the teacher forward do not:
    per aten op, self CPU ms per step of ``crd`` minus ``student`` minus ``teacher_fwd``, and
    how many more aten ops it dispatches (torch.profiler, which adds its own per-op overhead
    and leaves out the time between ops: read the shares and the op counts, not the sum)."""
    import resource

    from torch.profiler import ProfilerActivity, profile

    names = ("student", "teacher_fwd", "crd")
    variants = build_variants(args, Path(tmp))
    batch = fake_batch(args.batch, args.size, args.boxes)
    per_op, faults, op_count = {}, {}, {}
    for name in names:
        fn = step_fn(name, variants[name], batch)
        fn()
        # the profiler's own allocations can push the large activations onto fresh pages, which
        # then page-fault in (fill_ and the first ops on them read 10x slower): keep the pass with
        # the fewest page faults and report them
        for _ in range(attempts):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    fn()
            n = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
            if name not in faults or n < faults[name]:
                averages = prof.key_averages()
                faults[name] = n
                per_op[name] = {e.key: e.self_cpu_time_total / 1e3 / steps for e in averages}
                op_count[name] = sum(e.count for e in averages if e.key.startswith("aten::")) / steps
            if n == 0:
                break
    ops = set().union(*per_op.values())
    extra = {op: per_op["crd"].get(op, 0.0) - per_op["student"].get(op, 0.0) - per_op["teacher_fwd"].get(op, 0.0)
             for op in ops}
    groups = {g: sum(extra.get(op, 0.0) for op in members) for g, members in OP_GROUPS.items()}
    grouped = {op for members in OP_GROUPS.values() for op in members}
    groups["other ops"] = sum(v for op, v in extra.items() if op not in grouped)
    top = dict(sorted(((op, round(v, 3)) for op, v in extra.items()), key=lambda kv: -kv[1])[:15])
    return {"extra_ms_per_step_by_group": groups, "extra_ms_per_step_top_ops": top,
            "profiled_ms_per_step": {n: sum(per_op[n].values()) for n in names}, "profiled_steps": steps,
            "page_faults_per_step": faults,
            # each op costs its dispatch (and autograd bookkeeping) however small its tensors
            "aten_ops_per_step": op_count,
            "extra_aten_ops_per_step": op_count["crd"] - op_count["student"] - op_count["teacher_fwd"]}


def memory_of(args, variant):
    model = build_variants(args, Path(args.teacher_dir), only=variant)[variant]
    before = peak_rss_mb()
    fn = step_fn(variant, model, fake_batch(args.batch, args.size, args.boxes))
    for _ in range(2):
        fn()
    return {"variant": variant, "peak_rss_mb": peak_rss_mb(), "rss_before_steps_mb": before}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", choices=["retinanet", "fcos"], default="retinanet")
    p.add_argument("--backbones", choices=["resnet", "lite"], default="resnet",
                   help="R-50 -> R-18 (NEU-DET configs) or Lite2 -> Lite0 (synthetic configs)")
    p.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["nhwc"],
                   help="memory layouts to time (nchw: MODEL.CHANNELS_LAST False; nhwc: True; nhwc_backbone: and "
                        "MODEL.HEAD_CHANNELS_LAST False); two: "
                        "interleaved, with the speed-up of the second")
    p.add_argument("--no-parts", dest="parts", action="store_false",
                   help="skip the CRD-, DED- and DRD-only distillers")
    p.add_argument("--size", type=int, default=200, help="square input side (NEU-DET: 200)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--boxes", type=int, default=3, help="GT boxes per image")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--tiny", action="store_true", help="smoke-test setting (seconds)")
    p.add_argument("--memory", metavar="VARIANT", help=argparse.SUPPRESS)
    p.add_argument("--teacher-dir", help=argparse.SUPPRESS)
    p.add_argument("--no-memory", action="store_true", help="skip the per-variant memory runs")
    p.add_argument("--breakdown", action="store_true",
                   help="also profile where the CRD-only step's time over student step + teacher forward goes")
    p.add_argument("--name", default=None, help="results file name (default cost_<detector>)")
    add_results_dir_argument(p)
    args = p.parse_args()
    if args.breakdown and (not args.parts or len(args.layouts) != 1):
        p.error("--breakdown profiles the CRD-only distiller in one layout: drop --no-parts and give "
                f"one --layouts value (got parts={args.parts}, layouts={args.layouts})")
    if args.tiny:
        args.size, args.batch, args.rounds = 64, 2, 2
    if args.memory:
        print(json.dumps(memory_of(args, args.memory)))
        return
    result = {"machine": machine(), "command": " ".join(["python"] + sys.argv),
              "setting": {k: getattr(args, k) for k in ("detector", "backbones", "layouts", "size", "batch",
                                                        "boxes", "rounds", "tiny")}}
    name = args.name or f"cost_{args.detector}" + ("_tiny" if args.tiny else "")
    with tempfile.TemporaryDirectory() as tmp:
        result.update(measure(args, tmp))
        write_result(name, result, args.results_dir)
        if args.breakdown:
            result["crd_breakdown"] = breakdown(args, tmp)
            write_result(name, result, args.results_dir)
        if not args.no_memory:
            flags = ["--detector", args.detector, "--backbones", args.backbones, "--layouts",
                     *args.layouts, "--size", str(args.size), "--batch", str(args.batch),
                     "--boxes", str(args.boxes), "--teacher-dir", tmp] + (["--tiny"] if args.tiny else [])
            flags += [] if args.parts else ["--no-parts"]
            result["peak_rss_mb"] = {}
            for variant in result["seconds_per_iter"]:
                mem = run_python([str(Path(__file__)), "--memory", variant, *flags])
                result["peak_rss_mb"][variant] = mem["peak_rss_mb"]
                write_result(name, result, args.results_dir)
    sec = result["seconds_per_iter"]
    print(f"| variant | s/iter | peak RSS MB |\n|---|---|---|")
    for k, v in sec.items():
        print(f"| {k} | {v:.3f} | {result.get('peak_rss_mb', {}).get(k, float('nan')):.0f} |")
    for layout, ratios in result.get("by_layout", {"": result}).items():
        print(f"{layout + ': ' if layout else ''}TKD / (student + teacher fwd) = "
              f"{ratios['tkd_over_student_plus_teacher_fwd']:.3f}")
        if "crd_over_student_plus_teacher_fwd" in ratios:
            print(f"{layout + ': ' if layout else ''}CRD only (the default) / (student + teacher fwd) = "
                  f"{ratios['crd_over_student_plus_teacher_fwd']:.3f}")
        if "kd_share_of_tkd_step" in ratios:
            print("KD share of a TKD step: " + ", ".join(
                f"{k} {v:.1%}" for k, v in ratios["kd_share_of_tkd_step"].items()))
    if "crd_breakdown" in result:
        print("CRD step over student + teacher fwd, profiled ms per step: " + ", ".join(
            f"{k} {v:.1f}" for k, v in result["crd_breakdown"]["extra_ms_per_step_by_group"].items())
            + f"; {result['crd_breakdown']['extra_aten_ops_per_step']:.0f} more aten ops per step")
    for key in (k for k in result if k.startswith("speedup_")):
        print(f"{key}: " + ", ".join(f"{k} {v:.2f}x" for k, v in result[key].items()))

if __name__ == "__main__":
    main()
