#!/usr/bin/env python
"""How big and how fast is each backbone's detector? (BENCHMARKS.md, "Backbones")

For the RetinaNet (or FCOS) NEU-DET configs of ResNet-18/50 (from scratch) and
EfficientNet-Lite0/2 (ImageNet-pretrained): parameters (whole detector and backbone),
inference FLOPs (fvcore, one image) and eager CPU images/s at batch 1, at every model's own
config input size and at one common size.

    python benchmarks/bench_backbones.py                   # RetinaNet, 160 px common size
    python benchmarks/bench_backbones.py --detector fcos --size 200
    python benchmarks/bench_backbones.py --tiny            # smoke test (seconds)
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_dir_argument, command_line, fake_batch, load_cfg, machine, write_result  # noqa: E402

MODELS = {  # name -> config file name in configs/NEU-DET/ ({det}: retinanet or fcos)
    "R-18": "{det}_R_18_FPN.yaml",
    "R-50": "{det}_R_50_FPN.yaml",
    "Lite0": "{det}_Lite0_FPN.yaml",
    "Lite2": "{det}_Lite2_FPN.yaml",
}


def measure(name, config, size, iters, warmup):
    import torch
    from detectron2.modeling import build_model
    from fvcore.nn import FlopCountAnalysis

    from tkd_d2.pipeline.speed import count_parameters, measure_cpu_speed

    cfg = load_cfg(f"configs/NEU-DET/{config}")
    model = build_model(cfg).eval()
    own = cfg.INPUT.MIN_SIZE_TEST
    row = {"config": config, "params_M": count_parameters(model) / 1e6,
           "backbone_params_M": count_parameters(model.backbone.bottom_up) / 1e6,
           "fpn_width": cfg.MODEL.FPN.OUT_CHANNELS, "own_size": own}
    for label, side in (("own", own), ("common", size)):
        batch = fake_batch(4, side)
        for b in batch:
            del b["instances"]
        image = model.preprocess_image(batch[:1]).tensor
        with torch.no_grad():
            analysis = FlopCountAnalysis(model.backbone, image)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            backbone_flops = analysis.total()
            features = [f for f in model.backbone(image).values()]
            if hasattr(model, "head"):
                head = FlopCountAnalysis(model.head, (features,))
                head.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                head_flops = head.total()
            else:
                head_flops = float("nan")
        speed = measure_cpu_speed(model, batch, warmup=warmup, iters=iters)
        row[label] = {"size": side, "gflops_backbone_fpn": backbone_flops / 1e9,
                      "gflops_head": head_flops / 1e9, "images_per_second": speed["images_per_second"]}
    print(name, row, flush=True)
    return row


def table(results):
    size = results["size"]
    lines = [
        f"| model | params (M) | backbone params (M) | FPN/head width | GFLOPs @ own size | images/s @ own size | GFLOPs @ {size} px | images/s @ {size} px |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        own, common = r["own"], r["common"]
        lines.append(
            f"| {name} | {r['params_M']:.2f} | {r['backbone_params_M']:.2f} | {r['fpn_width']} | "
            f"{own['gflops_backbone_fpn'] + own['gflops_head']:.2f} ({own['size']} px) | "
            f"{own['images_per_second']:.1f} | {common['gflops_backbone_fpn'] + common['gflops_head']:.2f} | "
            f"{common['images_per_second']:.1f} |"
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", choices=["retinanet", "fcos"], default="retinanet")
    p.add_argument("--size", type=int, default=160, help="the common input side (pixels)")
    p.add_argument("--iters", type=int, default=30, help="timed images per measurement")
    p.add_argument("--tiny", action="store_true", help="smoke test: 64 px, 2 timed images")
    p.add_argument("--name", default=None, help="results file name (default backbones_<detector>)")
    add_results_dir_argument(p)
    args = p.parse_args()
    import torch

    torch.manual_seed(0)
    size, iters, warmup = (64, 2, 1) if args.tiny else (args.size, args.iters, 5)
    results = {"machine": machine(), "command": command_line(), "detector": args.detector,
               "size": size, "setting": {"tiny": args.tiny, "size": size, "iters": iters, "batch": 1,
                                         "threads": torch.get_num_threads()}, "models": {}}
    for name, config in MODELS.items():
        results["models"][name] = measure(name, config.format(det=args.detector), size, iters, warmup)
    path = write_result(args.name or f"backbones_{args.detector}" + ("_tiny" if args.tiny else ""),
                        results, args.results_dir)
    print(table(results))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
