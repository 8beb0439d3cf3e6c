#!/usr/bin/env python
"""The exported student against eager models: CPU images/s at batch 1 (BENCHMARKS.md, "Deployment").

The exported student (``tkd_d2.deploy``: the whole detector with NMS in the graph) against
the eager teacher and student: teacher eager, student eager, student ONNX Runtime (graph
optimisation ALL, ``--ort-threads`` intra-op threads) and student TorchScript, for the
EfficientNet-Lite pair (Lite2 teacher, Lite0 student, the main job's default) and the ResNet
pair (R-50, R-18), at each ``--sizes`` entry: ``N`` (an N×N network input; NEU-DET: 200) or
``HxW`` (a large image run at its native scale). With ``--tile SIZE OVERLAP`` every model
runs the image as overlapping tiles merged by the project's one rule (``TEST.TILE.*``: the
eager models through ``TiledDetector``, the export through its predictor's tiling), as a
user's large images are. The configs' score thresholds, random weights, the same random
images for every variant; images/s = 1 / median seconds per image, the whole detector with
decoding, NMS, tiling and the boxes rescaled to the image.

Each round times every variant in a block of its own (``--block-warmup`` untimed images, then
``--images`` timed), the block order rotated per round. (Alternating runtimes image by image
understates ONNX Runtime on a small machine: torch's and ONNX Runtime's idle threads spin
against each other for the same cores.)

    python benchmarks/bench_runtimes.py --sizes 200 640              # → deploy_runtimes.json
    python benchmarks/bench_runtimes.py --pairs lite --detector retinanet --sizes 1024x2048 \\
        --tile 512 64 --name deploy_tiled                             # tiled, native scale
    python benchmarks/bench_runtimes.py --tiny                        # smoke test (seconds)
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_dir_argument, command_line, load_cfg, machine, write_result  # noqa: E402

from tkd_d2.pipeline.speed import sample_seconds  # noqa: E402

PAIRS = {"lite": ("Lite2", "Lite0"), "resnet": ("R_50", "R_18")}


def parse_shape(text):
    """``"200"`` → (200, 200); ``"1024x2048"`` → (1024, 2048) (height × width)."""
    try:
        h, _, w = text.lower().partition("x")
        shape = (int(h), int(w or h))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: expected N or HxW, e.g. 200 or 1024x2048") from None
    if min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: sides must be positive")
    return shape


def shape_key(shape):
    h, w = shape
    return str(h) if h == w else f"{h}x{w}"


def shape_opts(shape, tile):
    """Overrides that run an image of ``shape`` at its native scale (tiled with ``tile``)."""
    if not tile:
        return []
    h, w = shape
    return ["INPUT.MIN_SIZE_TEST", min(h, w), "INPUT.MAX_SIZE_TEST", max(h, w),
            "TEST.TILE.SIZE", tile[0], "TEST.TILE.OVERLAP", tile[1]]


def _timed(run):
    state = {"i": 0, "detections": []}

    def call():
        state["detections"].append(run(state["i"]))
        state["i"] += 1
    return call, state


def variants_for(det, pair, shape, tmp, ort_threads, formats, student_opts=(), tile=None):
    """name → (callable running one image, its state) for one detector / pair / shape, and
    facts of the models; ``student_opts``: KEY VALUE overrides of the student's config alone."""
    import numpy as np
    import torch
    from detectron2.modeling import build_model

    from tkd_d2.deploy import export_model, load_predictor
    from tkd_d2.modeling.tiled import tiled

    h, w = shape
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(4)]
    opts = ["MODEL.EFFICIENTNET.PRETRAINED", "False"] + [str(o) for o in shape_opts(shape, tile)]
    variants, info = {}, {}
    for role, name in zip(("teacher", "student"), PAIRS[pair]):
        config = f"configs/NEU-DET/{det}_{name}_FPN.yaml"
        role_opts = opts + (list(student_opts) if role == "student" else [])
        cfg = load_cfg(config, role_opts)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        rgb = cfg.INPUT.FORMAT == "RGB"
        inputs = [{"image": torch.as_tensor((im[:, :, ::-1] if rgb else im).astype("float32")
                                            .transpose(2, 0, 1).copy()), "height": h, "width": w}
                  for im in images]
        runner = tiled(cfg, model)  # itself when TEST.TILE.SIZE is 0

        def eager(i, runner=runner, inputs=inputs):
            with torch.no_grad():
                return len(runner([inputs[i % len(inputs)]])[0]["instances"])
        variants[f"{role} eager"] = _timed(eager)
        info[role] = {"config": config, "opts": role_opts, "params": sum(p.numel() for p in model.parameters()),
                      "eager_tiled": runner is not model}
        if role != "student":
            continue
        weights = Path(tmp) / f"{det}_{name}.pth"
        torch.save({"model": model.state_dict()}, weights)
        for fmt in formats:
            out = Path(tmp) / f"{det}_{name}_{fmt}_{shape_key(shape)}"
            export_model(cfg, str(out), fmt=fmt, weights=str(weights))
            label = {"onnx": "onnxruntime", "torchscript": "torchscript"}[fmt]
            info[role][f"{label}_file_mb"] = sum(f.stat().st_size for f in out.glob("model.*")) / 1e6
            # ONNX Runtime once per thread count (the first is the ratios' reference)
            for threads in (ort_threads if fmt == "onnx" else [None]):
                predictor = load_predictor(str(out), **({"threads": threads} if threads else {}))
                info[role][f"{label}_tile_size"] = int(predictor.tile["size"])

                def exported(i, predictor=predictor):  # the image at the test scale already
                    return len(predictor.predict(images[i % len(images)], (h, w)))
                variants[f"student {label}" + (f" t{threads}" if fmt == "onnx" else "")] = _timed(exported)
                if fmt == "onnx" and tile and threads == ort_threads[0]:  # what batching the tiles gains
                    single = load_predictor(str(out), tiles_per_batch=1, **({"threads": threads} if threads else {}))
                    variants[f"student {label} t{threads} one tile per call"] = _timed(
                        lambda i, single=single: exported(i, single))
            if fmt == "onnx" and openvino_available() and not tile:
                variants["student openvino"] = openvino_variant(out, images, shape, ort_threads[0])
    return variants, info


def openvino_available():
    try:
        import openvino  # noqa: F401  (optional: pip install openvino, or the [openvino] extra)
    except ImportError:
        return False
    return True


def openvino_variant(export_dir, images, shape, threads):
    """The same model.onnx compiled by OpenVINO (CPU), with the ONNX predictor's rescaling."""
    import openvino as ov

    from tkd_d2.deploy.runtime import rescale_boxes

    compiled = ov.Core().compile_model(str(Path(export_dir) / "model.onnx"), "CPU",
                                       {"INFERENCE_NUM_THREADS": threads})

    def run(i):
        image = images[i % len(images)]
        boxes, scores, classes, _ = compiled([image[None]]).values()
        return len(rescale_boxes(boxes, scores, classes, image.shape[:2], shape)[0])
    return _timed(run)


def time_blocks(variants, warmup, rounds, block_warmup, images):
    """Seconds per image of every variant: each round times each in a block of its own, the
    block order rotated per round."""
    for fn, _ in variants.values():
        for _ in range(warmup):
            fn()
    samples, order = {v: [] for v in variants}, list(variants)
    for r in range(rounds):
        for v in order[r % len(order):] + order[: r % len(order)]:
            fn = variants[v][0]
            samples[v] += sample_seconds(lambda _: fn(), images, block_warmup)
    return samples


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", choices=["retinanet", "fcos", "both"], default="both")
    p.add_argument("--pairs", choices=list(PAIRS) + ["both"], default="both", help="teacher/student backbone pairs")
    p.add_argument("--sizes", type=parse_shape, nargs="+", default=[(200, 200), (640, 640)],
                   help="N (square network input) or HxW (an image at its native scale)")
    p.add_argument("--tile", type=int, nargs=2, metavar=("SIZE", "OVERLAP"), default=None,
                   help="TEST.TILE.SIZE and .OVERLAP for every model (the image then runs at its native scale)")
    p.add_argument("--warmup", type=int, default=5, help="untimed images per variant first")
    p.add_argument("--rounds", type=int, default=5, help="rounds of blocks")
    p.add_argument("--images", type=int, default=8, help="timed images per variant per round")
    p.add_argument("--block-warmup", type=int, default=3, help="untimed images at the start of each block")
    p.add_argument("--ort-threads", type=int, nargs="+", default=[2],
                   help="ONNX Runtime intra-op thread counts (the first: the ratios')")
    p.add_argument("--student-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="overrides of the student's config alone (the Lite0 configs' head is 64 wide; "
                        "MODEL.FPN.OUT_CHANNELS 128 gives the teacher's width)")
    p.add_argument("--no-torchscript", dest="torchscript", action="store_false", help="skip the TorchScript export")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="smoke-test setting (seconds)")
    p.add_argument("--name", default=None, help="results file name (default deploy_runtimes[_tiny])")
    add_results_dir_argument(p)
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.warmup, args.rounds, args.images, args.block_warmup = 1, 2, 2, 1
        args.sizes = [(64, 64)] if not args.tile else args.sizes
    detectors = ["retinanet", "fcos"] if args.detector == "both" else [args.detector]
    pairs = list(PAIRS) if args.pairs == "both" else [args.pairs]
    formats = ["onnx"] + (["torchscript"] if args.torchscript else [])
    name = args.name or "deploy_runtimes" + ("_tiny" if args.tiny else "")
    result = {"machine": machine(), "command": command_line(), "uptime_before": uptime(),
              "setting": {"detectors": detectors, "pairs": pairs, "sizes": [shape_key(s) for s in args.sizes],
                          "tile": args.tile, "batch": 1, "warmup": args.warmup, "rounds": args.rounds,
                          "images_per_round": args.images, "block_warmup": args.block_warmup,
                          "timing": "blocks", "ort_threads": args.ort_threads, "ort_optimization": "all",
                          "student_opts": args.student_opts, "torch_threads": torch.get_num_threads(),
                          "postprocess": "config score thresholds", "tiny": args.tiny},
              "notes": "random weights; images/s = 1 / median seconds per image, whole detector "
                       "incl. decoding, NMS and tiling, boxes rescaled to the image",
              "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for det in detectors:
            for pair in pairs:
                for shape in args.sizes:
                    key = f"{det}/{pair}/{shape_key(shape)}"
                    variants, info = variants_for(det, pair, shape, tmp, args.ort_threads, formats,
                                                  args.student_opts, args.tile)
                    print(f"{key}: exported; timing {list(variants)}", file=sys.stderr, flush=True)
                    samples = time_blocks(variants, args.warmup, args.rounds, args.block_warmup, args.images)
                    speed = {v: {"images_per_s": 1.0 / statistics.median(t), "ms_per_image": 1e3 * statistics.median(t),
                                 "timed_images": len(t),
                                 "mean_detections": statistics.mean(variants[v][1]["detections"][-len(t):])}
                             for v, t in samples.items()}
                    ort = speed[f"student onnxruntime t{args.ort_threads[0]}"]["images_per_s"]
                    result["runs"][key] = {"models": info, "speed": speed,
                                           "ort_vs_student_eager": ort / speed["student eager"]["images_per_s"],
                                           "ort_vs_teacher_eager": ort / speed["teacher eager"]["images_per_s"]}
                    write_result(name, result, args.results_dir)
                    print(f"{key}: " + ", ".join(f"{v} {s['images_per_s']:.2f}/s" for v, s in speed.items()),
                          file=sys.stderr, flush=True)
    result["uptime_after"] = uptime()
    write_result(name, result, args.results_dir)
    print("| detector | pair | size | " + " | ".join(f"{v} img/s" for v in samples)
          + " | ORT / student eager | ORT / teacher eager |")
    print("|---|---|---|" + "---|" * (len(samples) + 2))
    for key, run in result["runs"].items():
        det, pair, size = key.split("/")
        print(f"| {det} | {'/'.join(PAIRS[pair])} | {size} | " + " | ".join(
            f"{run['speed'][v]['images_per_s']:.2f}" for v in samples)
              + f" | {run['ort_vs_student_eager']:.2f}× | {run['ort_vs_teacher_eager']:.2f}× |")
    print(f"load: before {result['uptime_before']}; after {result['uptime_after']}")


if __name__ == "__main__":
    main()
