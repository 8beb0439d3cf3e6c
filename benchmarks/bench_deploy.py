#!/usr/bin/env python
"""What does the distilled student save at deployment? Params, FLOPs and CPU images/s.

For each detector (RetinaNet, FCOS), student = ``configs/NEU-DET/<det>_R_18_FPN.yaml`` vs
teacher = ``<det>_R_50_FPN.yaml``:

  params   fvcore ``parameter_count`` of the whole model (and of backbone incl. FPN / head).
  FLOPs    fvcore ``FlopCountAnalysis`` of backbone (ResNet + FPN) + head on the tensor the
           model really runs on: a 200×200 image is padded to 224×224 (the FPN's
           ``size_divisibility`` 32; 200 itself does not fit the FPN's ×2 top-down path), so
           the input is 1×3×224×224. fvcore counts one multiply-add as one flop (its "flops"
           are MACs); element-wise adds, max-pool and the normalisation of the input are not
           counted (listed under ``uncounted_ops``), nor are anchor generation, box decoding
           and NMS. (``detectron2.utils.analysis.FlopCountAnalysis`` would trace the whole
           model, but it imports ``detectron2.export``, which needs caffe2: not available.)
  images/s full inference at batch 1 on 200×200 images, ``model([{"image", "height",
           "width"}])`` in eval mode under ``torch.no_grad`` (as detectron2's
           ``inference_on_dataset``): normalisation, padding,
           backbone, head, decoding, score threshold, top-k, NMS, rescaling to the input size.

Weights are random (timing does not depend on their values, except through how many boxes
reach NMS). With random weights the heads' prior bias puts every score below the configs'
test thresholds, so almost nothing reaches NMS: that is ``postprocess = "config"``, the
light bound. ``postprocess = "all"`` sets the score threshold to 0, so every top-k
candidate of every level goes to NMS: the heavy bound. A trained model lies in between.

All variants are timed interleaved: after a warm-up, every round runs ``--images`` images
through each variant in turn; images/s = 1 / median seconds per image.

    python benchmarks/bench_deploy.py                       # RetinaNet and FCOS, 200 px
    python benchmarks/bench_deploy.py --detector fcos --rounds 10
    python benchmarks/bench_deploy.py --tiny                # smoke test (seconds)

The exported student against the eager models: ``benchmarks/bench_runtimes.py``.
"""
import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_dir_argument, command_line, load_cfg, machine, write_result  # noqa: E402

from tkd_d2.pipeline.speed import sample_seconds  # noqa: E402

ROLES = ("student", "teacher")
POSTPROCESS = ("config", "all")


def _configs(detector):
    return {"student": f"configs/NEU-DET/{detector}_R_18_FPN.yaml",
            "teacher": f"configs/NEU-DET/{detector}_R_50_FPN.yaml"}


def build(config, opts):
    import torch
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return build_model(load_cfg(config, opts)).eval()


def padded_input(model, size):
    """The normalised, padded (1, 3, H, W) tensor the model runs a size×size image on."""
    import torch

    with torch.no_grad():
        return model.preprocess_image([{"image": torch.zeros(3, size, size)}]).tensor.clone()


def count(model, size):
    """Params (whole / backbone / head) and backbone + head FLOPs (fvcore) at ``size``."""
    import torch
    from fvcore.nn import FlopCountAnalysis, parameter_count

    class BackboneHead(torch.nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.backbone, self.head = detector.backbone, detector.head
            self.in_features = detector.head_in_features

        def forward(self, x):
            features = self.backbone(x)
            return self.head([features[f] for f in self.in_features])

    params = parameter_count(model)
    x = padded_input(model, size)
    flops = FlopCountAnalysis(BackboneHead(model), (x,))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_module = flops.by_module()
    return {
        "params": params[""], "params_backbone": params["backbone"], "params_head": params["head"],
        "flops_input_shape": list(x.shape),
        "flops": flops.total(), "flops_backbone": by_module["backbone"], "flops_head": by_module["head"],
        "uncounted_ops": dict(flops.unsupported_ops()),
    }


def infer_fn(model, images, score_thresh):
    import torch

    state = {"i": 0, "detections": []}

    def run():
        model.test_score_thresh = score_thresh
        image = images[state["i"] % len(images)]
        state["i"] += 1
        with torch.no_grad():
            out = model([image])
        state["detections"].append(len(out[0]["instances"]))
    return run, state


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", choices=["retinanet", "fcos", "both"], default="both")
    p.add_argument("--size", type=int, default=200, help="square image side (NEU-DET: 200)")
    p.add_argument("--warmup", type=int, default=5, help="untimed images per variant first")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--images", type=int, default=8, help="timed images per variant per round")
    p.add_argument("--postprocess", choices=list(POSTPROCESS) + ["both"], default="both",
                   help="config: the configs' score thresholds; all: threshold 0 (every candidate to NMS)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="smoke-test setting (seconds)")
    p.add_argument("--name", default=None, help="results file name (default deploy[_tiny])")
    p.add_argument("--width", type=int, default=None,
                   help="MODEL.FPN.OUT_CHANNELS of both models (FPN and head width; default: the configs' 256)")
    add_results_dir_argument(p)
    args = p.parse_args()
    opts = ["MODEL.FPN.OUT_CHANNELS", str(args.width)] if args.width else []
    if args.tiny:
        args.size, args.warmup, args.rounds, args.images = 64, 1, 2, 2
        args.threads = args.threads or 1  # smoke test on a shared machine: no thread oversubscription
        opts = ["MODEL.FPN.OUT_CHANNELS", "64"]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    detectors = ["retinanet", "fcos"] if args.detector == "both" else [args.detector]
    modes = list(POSTPROCESS) if args.postprocess == "both" else [args.postprocess]
    name = args.name or "deploy" + ("_tiny" if args.tiny else "")
    result = {"machine": machine(), "command": command_line(),
              "setting": {"detectors": detectors, "postprocess": modes, "size": args.size, "batch": 1,
                          "warmup": args.warmup, "rounds": args.rounds, "images_per_round": args.images,
                          "timed_images_per_variant": args.rounds * args.images, "tiny": args.tiny,
                          "extra_opts": opts},
              "notes": ("random weights; FLOPs = fvcore multiply-adds of backbone+FPN+head on the padded input; "
                        "images/s = full inference incl. postprocessing/NMS at batch 1"),
              "models": {}}

    g = torch.Generator().manual_seed(0)
    images = [{"image": torch.randint(0, 256, (3, args.size, args.size), generator=g).float(),
               "height": args.size, "width": args.size} for _ in range(4)]
    fns, states = {}, {}
    for det in detectors:
        for role, config in _configs(det).items():
            model = build(config, opts)
            entry = {"config": config, "meta_architecture": type(model).__name__, **count(model, args.size),
                     "config_score_thresh": model.test_score_thresh}
            result["models"].setdefault(det, {})[role] = entry
            for mode in modes:
                thresh = model.test_score_thresh if mode == "config" else 0.0
                fns[(det, role, mode)], states[(det, role, mode)] = infer_fn(model, images, thresh)
            print(f"{det} {role}: {entry['params'] / 1e6:.2f} M params, {entry['flops'] / 1e9:.2f} GFLOPs",
                  file=sys.stderr, flush=True)
    write_result(name, result, args.results_dir)

    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    for state in states.values():
        state["detections"].clear()
    samples = {key: [] for key in fns}
    for r in range(args.rounds):
        for key, fn in fns.items():
            samples[key] += sample_seconds(lambda _: fn(), args.images)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{'/'.join(k)} {statistics.median(v[-args.images:]) * 1e3:.0f}ms" for k, v in samples.items()),
            file=sys.stderr, flush=True)

    speed = {}
    for (det, role, mode), times in samples.items():
        sec = statistics.median(times)
        speed.setdefault(det, {}).setdefault(mode, {})[role] = {
            "ms_per_image": sec * 1e3, "images_per_s": 1.0 / sec, "timed_images": len(times),
            "mean_detections": statistics.mean(states[(det, role, mode)]["detections"]),
            "samples_ms": [t * 1e3 for t in times]}
    result["speed"] = speed
    result["student_vs_teacher"] = {
        det: {"params_ratio": m["teacher"]["params"] / m["student"]["params"],
              "flops_ratio": m["teacher"]["flops"] / m["student"]["flops"],
              **{f"speedup_{mode}": speed[det][mode]["teacher"]["ms_per_image"]
                 / speed[det][mode]["student"]["ms_per_image"] for mode in modes}}
        for det, m in result["models"].items()}
    write_result(name, result, args.results_dir)

    print("| detector | model | params M | GFLOPs (MACs) | " + " | ".join(
        f"img/s ({mode})" for mode in modes) + " |")
    print("|---|---|---|---|" + "---|" * len(modes))
    for det, m in result["models"].items():
        for role in ROLES:
            print(f"| {det} | {role} ({Path(m[role]['config']).stem}) | {m[role]['params'] / 1e6:.2f} | "
                  f"{m[role]['flops'] / 1e9:.2f} | " + " | ".join(
                      f"{speed[det][mode][role]['images_per_s']:.1f}" for mode in modes) + " |")
        r = result["student_vs_teacher"][det]
        print(f"| {det} | teacher / student | {r['params_ratio']:.2f}× | {r['flops_ratio']:.2f}× | " + " | ".join(
            f"{r['speedup_' + mode]:.2f}× faster" for mode in modes) + " |")
    shape = "×".join(map(str, next(iter(result["models"].values()))["student"]["flops_input_shape"]))
    print(f"FLOPs: backbone+FPN+head on {shape}; random weights; batch 1; "
          f"{args.rounds * args.images} timed images per variant")


if __name__ == "__main__":
    main()
