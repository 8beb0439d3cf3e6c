#!/usr/bin/env python
"""Why do the DED / DRD feature terms not help? Every loss term of a TKD step, measured (issue #31).

Builds the distiller of a TKD config (``build_model``) and the real training loader (the
project's ``Trainer.build_train_loader``), then for ``--batches`` training batches, in
training mode inside detectron2's ``EventStorage`` at iteration ``--iter`` + batch index
(default: MODEL.TKD.WARMUP_ITERS, so every KD weight is at full value), measures per batch
and reports the mean, std, min and max over the batches of:

  losses            every named loss the distiller returns (the student's detection terms
                    and the KD terms loss_crd_* / loss_ded_* / loss_drd_*), as weighted, and
                    as a ratio to the summed detection loss ("detection"); "kd" is the sum of
                    the KD terms, "total" of everything
  fpn_grad_norm     per term, ||d loss / d FPN map|| of the student's backbone outputs at each
                    level of MODEL.TKD.IN_FEATURES ("all": over all levels)
  fpn_grad_cosine_with_detection
                    cosine between a term's FPN gradient and the detection loss's, per level
                    and flattened over all levels ("all")
  param_grad_norm   per term, the gradient norm on the student's trainable parameters as a
                    whole; ``param_grad_cosine_with_detection`` as above; ``param_grad_max_tensor_norm``
                    the largest per-tensor norm (SOLVER.CLIP_GRADIENTS "norm" clips per tensor)
  align             (where the student's FPN width differs from the teacher's) the gradient
                    norm on the 1x1 align conv's weight per term, over the term's FPN and
                    parameter gradient norms; ``relative_error`` ||align(S) - T|| / ||T|| per level
  feature_scale     per level, mean |x| and std of the student's FPN maps, after the align
                    conv, and the teacher's
Besides, ``masks``: what DED's foreground / background masks cover at the batches' input size
(per level: share of feature cells with foreground mass > 0, GT boxes' mean cell count, boxes
covering zero / one cell, images whose background mask is empty), summed over all batches.

Gradients are one ``torch.autograd.grad`` per returned loss (graph retained); the detection,
kd and total gradients are sums of the per-term ones. A level's FPN gradient is the total
derivative: where detectron2's top block computes P6 / P7 from P5, P5's includes what reaches
it through them. The detection terms are the losses the plain student returns (any other
non-KD loss the distiller may add is listed under "other" and counts in "total" only).
Before measuring, ``--prime-batches`` student-only forwards (no grad) let the student's
running loss normaliser (detectron2's EMA, which a fresh model starts far from the batch's
positives count; CRD divides by it too) settle as in training past the warm-up. With the KD
balance on (the default), its calibration window is then closed on the next batches, as in
training, so the terms are measured at the scales training uses
(``setting.calibration_batches``).
``MODEL.WEIGHTS`` (a student or TKD checkpoint) measures a partly trained student.

    python benchmarks/bench_kd_terms.py --opts MODEL.TKD.TEACHER.WEIGHTS output/NEU-DET/fcos_Lite2_FPN/model_final.pth
    python benchmarks/bench_kd_terms.py --config-file configs/NEU-DET/tkd_retinanet_R_50_to_R_18.yaml \\
        --batches 10 --opts MODEL.TKD.TEACHER.WEIGHTS teacher.pth MODEL.WEIGHTS output/tkd/model_0000299.pth
    python benchmarks/bench_kd_terms.py --tiny           # smoke test: tiny synthetic set, random teacher
"""
import argparse
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_results_dir_argument, command_line, load_cfg, machine, write_result  # noqa: E402

import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from tkd_d2.checkpoint import SafeCheckpointer  # noqa: E402
from tkd_d2.data import register_from_cfg  # noqa: E402
from tkd_d2.distill.masks import box_cell_ranges, boxes_with_batch_index, foreground_background_masks  # noqa: E402
from tkd_d2.engine import Trainer  # noqa: E402
from tkd_d2.modeling.family import family_of  # noqa: E402

DEFAULT_CONFIG = "configs/NEU-DET/tkd_fcos_Lite2_to_Lite0.yaml"
TINY_CONFIG = "configs/Synthetic/tkd_fcos_Lite2_to_Lite0.yaml"
KD_PREFIXES = ("loss_crd_", "loss_ded_", "loss_drd_")
FEATURE_PREFIXES = ("loss_ded_", "loss_drd_")  # the terms on the (aligned) FPN maps
SUMS = ("detection", "kd", "total")
# a tiny synthetic set at 64 px, random backbones; student 64 wide, teacher 128 (so the align
# conv is there); GN in the FCOS head needs multiples of 32, and 64 keeps two channels per
# group, so the 1x1 top levels of a 64 px image still pass a gradient
TINY_DATA = ["DATASETS.SYNTHETIC.NUM_TRAIN", "4", "DATASETS.SYNTHETIC.NUM_TEST", "2",
             "DATASETS.SYNTHETIC.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "107",
             "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "MODEL.EFFICIENTNET.PRETRAINED", "False"]
TINY_STUDENT = TINY_DATA + ["MODEL.FPN.OUT_CHANNELS", "64"]
TINY_TEACHER = TINY_DATA + ["MODEL.FPN.OUT_CHANNELS", "128"]


# ------------------------------------------------------------------------------------------
# setup


def tiny_teacher(cfg_path, tmp):
    """A random teacher of the config's own teacher yaml at the tiny size, saved in ``tmp``:
    the overrides that make the distiller load it."""
    teacher_yaml = load_cfg(cfg_path).MODEL.TKD.TEACHER.CONFIG  # resolved to an absolute path
    teacher_cfg = load_cfg(teacher_yaml, TINY_TEACHER)
    torch.manual_seed(0)  # the same random teacher every run
    SafeCheckpointer(build_model(teacher_cfg), str(tmp)).save("teacher")
    (tmp / "teacher.yaml").write_text(teacher_cfg.dump())
    return ["MODEL.TKD.TEACHER.CONFIG", str(tmp / "teacher.yaml"),
            "MODEL.TKD.TEACHER.WEIGHTS", str(tmp / "teacher.pth")]


def build(args, tmp):
    """(config, distiller in training mode, training batch iterator)."""
    opts = ["DATASETS.CHECK_IMAGES", "False"]  # a diagnostic need not decode the whole set first
    if args.tiny:
        opts += TINY_STUDENT + tiny_teacher(args.config_file, tmp)
    cfg = load_cfg(args.config_file, opts + list(args.opts))
    if args.device:
        cfg.MODEL.DEVICE = args.device
    args.seed = max(cfg.SEED, 0) if args.seed is None else args.seed
    seed_all_rng(args.seed)  # the new modules' init and the loader's batch order (drawn when it is built)
    # the tiny set is generated in the temporary folder, the others live under $DETECTRON2_DATASETS
    register_from_cfg(cfg, root=str(tmp) if args.tiny else None)
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:  # as the Trainer: a plain student's checkpoint leaves the align convs as built
        SafeCheckpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    model.train()
    return cfg, model, iter(Trainer.build_train_loader(cfg))


@contextmanager
def captured_outputs(**modules):
    """``{name: module}`` → a dict filled with each module's latest forward output."""
    outputs = {}
    handles = [m.register_forward_hook(lambda _m, _in, out, name=name: outputs.__setitem__(name, out))
               for name, m in modules.items()]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def prime_student(model, batches, num):
    """``num`` (at least one) student-only training forwards without grad, so its running loss
    normaliser settles. Returns the names of the student's own losses and the normaliser."""
    with EventStorage(0), torch.no_grad():
        for _ in range(max(1, num)):
            names = list(model.student(next(batches)))
    value = getattr(model.student, "loss_normalizer", None)
    return names, None if value is None else float(value)


def calibrate_balance(model, batches, start):
    """Close the KD balance's calibration window (forwards without grad at iteration ``start``)
    as training would: while it is open the KD terms are observed and count 0, so a measurement
    inside it would see no KD at all. Returns the batches it took (0 without a balance)."""
    balancer = model.distill_balance
    if balancer is None:
        return 0
    taken = 0
    with EventStorage(start), torch.no_grad():
        while not balancer.calibrated:
            model(next(batches))
            taken += 1
    return taken


# ------------------------------------------------------------------------------------------
# measurement of one batch


def term_gradients(losses, fpn_maps, params, align_weight):
    """Per loss: (FPN map grads, parameter grads, align weight grad or None), zeros where unused."""
    inputs = list(fpn_maps) + list(params) + ([align_weight] if align_weight is not None else [])
    out = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True) \
            if loss.requires_grad else [None] * len(inputs)
        grads = [torch.zeros_like(x) if g is None else g.detach() for g, x in zip(grads, inputs)]
        n_fpn, n_params = len(fpn_maps), len(params)
        out[name] = (grads[:n_fpn], grads[n_fpn:n_fpn + n_params],
                     grads[-1] if align_weight is not None else None)
    return out


def sum_gradients(grads):
    fpn = [sum(g) for g in zip(*(g[0] for g in grads))]
    params = [sum(g) for g in zip(*(g[1] for g in grads))]
    align = None if grads[0][2] is None else sum(g[2] for g in grads)
    return fpn, params, align


def _zeros_like(grads):
    fpn, params, align = grads
    return ([torch.zeros_like(g) for g in fpn], [torch.zeros_like(g) for g in params],
            None if align is None else torch.zeros_like(align))


def tensor_norms(tensors):
    """(len(tensors),) float64: the norm of each tensor (one device sync for all of them)."""
    return torch.stack([t.double().norm() for t in tensors])


def norm(tensors):
    """Norm of a tensor list seen as one flat vector."""
    return float(tensor_norms(tensors).norm())


def cosine(a, b):
    """Cosine between two tensor lists seen as one flat vector each; None if either is zero."""
    na, nb = norm(a), norm(b)
    if na == 0 or nb == 0:
        return None
    dot = float(torch.stack([(x.double() * y.double()).sum() for x, y in zip(a, b)]).sum())
    return max(-1.0, min(1.0, dot / (na * nb)))


def scale(x):
    return {"mean_abs": float(x.abs().mean()), "std": float(x.std())}


def measure_batch(model, batch, outputs, levels, detection_names):
    """One training step's losses and gradients (nothing is updated): a per-batch record.
    ``detection_names``: the student's own losses; any loss neither those nor a KD term counts
    in "total" alone."""
    losses = {k: v for k, v in model(batch).items() if k.startswith("loss_")}
    student = [outputs["student"][f] for f in levels]
    teacher = [outputs["teacher"][f].detach() for f in levels]
    align = model.distill_feature_align
    params = [p for p in model.student.parameters() if p.requires_grad]
    grads = term_gradients(losses, student, params, None if align is None else align.weight)

    kd_names = [k for k in losses if k.startswith(KD_PREFIXES)]
    det_names = [k for k in losses if k in detection_names]
    grads["detection"] = sum_gradients([grads[k] for k in det_names])
    grads["kd"] = sum_gradients([grads[k] for k in kd_names] or [_zeros_like(grads["detection"])])
    grads["total"] = sum_gradients([grads[k] for k in losses])
    values = {k: float(v) for k, v in losses.items()}
    values["detection"] = sum(values[k] for k in det_names)
    values["kd"] = sum(values[k] for k in kd_names)
    values["total"] = sum(values[k] for k in losses)

    det_fpn, det_params, _ = grads["detection"]
    record = {"losses": values,
              "loss_ratio_to_detection": {k: _ratio(v, values["detection"]) for k, v in values.items()},
              "fpn_grad_norm": {}, "fpn_grad_cosine_with_detection": {}, "param_grad_norm": {},
              "param_grad_cosine_with_detection": {}, "param_grad_max_tensor_norm": {}}
    for name, (fpn, par, align_grad) in grads.items():
        record["fpn_grad_norm"][name] = {"all": norm(fpn), **{f: norm([g]) for f, g in zip(levels, fpn)}}
        per_tensor = tensor_norms(par)
        record["param_grad_norm"][name] = float(per_tensor.norm())
        record["param_grad_max_tensor_norm"][name] = float(per_tensor.max())
        if name != "detection":
            record["fpn_grad_cosine_with_detection"][name] = {
                "all": cosine(fpn, det_fpn), **{f: cosine([g], [d]) for f, g, d in zip(levels, fpn, det_fpn)}}
            record["param_grad_cosine_with_detection"][name] = cosine(par, det_params)

    with torch.no_grad():
        aligned = [align(x) for x in student] if align is not None else [x.detach() for x in student]
        if align is not None:
            record["align"] = {"weight_grad_norm": {}, "weight_over_fpn_grad": {}, "weight_over_param_grad": {}}
            for name, (fpn, par, align_grad) in grads.items():
                if name.startswith(FEATURE_PREFIXES) or name in SUMS:
                    a = norm([align_grad])
                    record["align"]["weight_grad_norm"][name] = a
                    record["align"]["weight_over_fpn_grad"][name] = _ratio(a, norm(fpn))
                    record["align"]["weight_over_param_grad"][name] = _ratio(a, norm(par))
        record["relative_error"] = {f: float((s - t).norm() / t.norm().clamp_min(1e-12))
                                    for f, s, t in zip(levels, aligned, teacher)}
        record["feature_scale"] = {f: {"student": scale(s), "student_aligned": scale(a), "teacher": scale(t)}
                                   for f, s, a, t in zip(levels, student, aligned, teacher)}
    return record


def _ratio(a, b):
    return a / b if b > 0 else None


def mask_counts(batch, feature_maps, levels, strides, device):
    """Per level, counts of what the DED masks cover in this batch (summed later)."""
    rois = boxes_with_batch_index([x["instances"].gt_boxes for x in batch], device=device)
    n = len(batch)
    out = {}
    for f, stride in zip(levels, strides):
        hw = tuple(feature_maps[f].shape[-2:])
        fg, bg = foreground_background_masks(rois, hw, stride, num_images=n, device=device)
        x_lo, y_lo, x_hi, y_hi, valid = box_cell_ranges(rois, hw, stride)
        cells = torch.where(valid, (x_hi - x_lo + 1) * (y_hi - y_lo + 1), torch.zeros_like(x_lo))
        out[f] = {"cells": fg.numel(), "fg_cells": int((fg > 0).sum()), "boxes": int(rois.shape[0]),
                  "box_cells": int(cells.sum()), "boxes_zero_cells": int((cells == 0).sum()),
                  "boxes_one_cell": int((cells == 1).sum()), "images": n,
                  "images_without_background": int((bg.sum(dim=(1, 2)) == 0).sum()),
                  "feature_hw": list(hw), "stride": stride}
    return out


# ------------------------------------------------------------------------------------------
# aggregation


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values),
            "min": min(values), "max": max(values), "n": len(values)}


def summarise(records):
    """Per-batch records (nested dicts of numbers) → the same nesting with stats at the leaves."""
    keys = []
    for r in records:
        keys += [k for k in r if k not in keys]
    out = {}
    for k in keys:
        present = [r[k] for r in records if k in r]
        if isinstance(present[0], dict):
            out[k] = summarise(present)
        else:
            out[k] = stats(present)
    return out


def total_masks(per_batch):
    levels = per_batch[0].keys()
    out = {}
    for f in levels:
        c = {k: sum(b[f][k] for b in per_batch) for k in ("cells", "fg_cells", "boxes", "box_cells",
                                                          "boxes_zero_cells", "boxes_one_cell", "images",
                                                          "images_without_background")}
        out[f] = {"stride": per_batch[0][f]["stride"],
                  "feature_hw": sorted({tuple(b[f]["feature_hw"]) for b in per_batch}),
                  "fg_cell_share": c["fg_cells"] / c["cells"],
                  "cells_per_box_mean": c["box_cells"] / max(c["boxes"], 1),
                  "boxes": c["boxes"], "boxes_zero_cells": c["boxes_zero_cells"],
                  "boxes_one_cell": c["boxes_one_cell"],
                  "images_without_background_share": c["images_without_background"] / c["images"]}
    return out


# ------------------------------------------------------------------------------------------
# report


def _m(entry, fmt=".3g"):
    """``mean ± std`` of a stats entry (or '-')."""
    if not entry:
        return "-"
    return f"{entry['mean']:{fmt}} ± {entry['std']:{fmt.lstrip('+')}}"


def report(result):
    r, levels = result["results"], result["setting"]["in_features"]
    terms = result["terms"]["detection"] + result["terms"]["kd"] + result["terms"]["other"] + list(SUMS)
    align = r.get("align")
    lines = ["| term | loss | / detection | FPN grad | cos(FPN grad, det) | param grad | cos(param grad, det) "
             "| align-w grad / param grad |", "|---|---|---|---|---|---|---|---|"]
    for t in terms:
        cos_fpn = r["fpn_grad_cosine_with_detection"].get(t, {}).get("all")
        ratio = align["weight_over_param_grad"].get(t) if align else None
        lines.append(f"| {t} | {_m(r['losses'][t])} | {_m(r['loss_ratio_to_detection'][t])} | "
                     f"{_m(r['fpn_grad_norm'][t]['all'])} | {_m(cos_fpn, '+.2f')} | {_m(r['param_grad_norm'][t])} | "
                     f"{_m(r['param_grad_cosine_with_detection'].get(t), '+.2f')} | {_m(ratio)} |")
    lines += ["", "FPN gradient norm per level (mean over batches)", "",
              "| term | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
    for t in terms:
        lines.append(f"| {t} | " + " | ".join(f"{r['fpn_grad_norm'][t][f]['mean']:.3g}" for f in levels) + " |")
    lines += ["", "| level | stride | H×W | fg cells | cells / box | boxes 0 / 1 cell | no-bg images | "
              "S mean abs | align(S) mean abs | T mean abs | ‖align(S)−T‖/‖T‖ |", "|---|" + "---|" * 10]
    for f in levels:
        m, s = result["masks"][f], r["feature_scale"][f]
        hw = ", ".join(f"{h}×{w}" for h, w in m["feature_hw"])
        lines.append(f"| {f} | {m['stride']} | {hw} | {m['fg_cell_share']:.1%} | {m['cells_per_box_mean']:.1f} | "
                     f"{m['boxes_zero_cells']} / {m['boxes_one_cell']} of {m['boxes']} | "
                     f"{m['images_without_background_share']:.0%} | {s['student']['mean_abs']['mean']:.3g} | "
                     f"{s['student_aligned']['mean_abs']['mean']:.3g} | {s['teacher']['mean_abs']['mean']:.3g} | "
                     f"{_m(r['relative_error'][f])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=None, help=f"a TKD distiller config (default {DEFAULT_CONFIG})")
    p.add_argument("--batches", type=int, default=20, help="training batches measured")
    p.add_argument("--iter", type=int, default=None,
                   help="training iteration of the first batch (default MODEL.TKD.WARMUP_ITERS: full KD weights)")
    p.add_argument("--prime-batches", type=int, default=20,
                   help="student-only forwards first (at least 1), so its running loss normaliser settles")
    p.add_argument("--seed", type=int, default=None, help="RNG seed (batch order; default the config's SEED)")
    p.add_argument("--device", default=None, help="MODEL.DEVICE (default: the config's, the CPU without a GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="smoke test: tiny synthetic set, random teacher (seconds)")
    p.add_argument("--name", default=None, help="results file name (default kd_terms_<dataset>_<detector>)")
    add_results_dir_argument(p)
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = p.parse_args()
    args.config_file = args.config_file or (TINY_CONFIG if args.tiny else DEFAULT_CONFIG)
    if args.tiny:
        args.batches, args.prime_batches = min(args.batches, 2), min(args.prime_batches, 1)
        args.threads = args.threads or 1  # smoke test on a shared machine
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        cfg, model, batches = build(args, Path(tmp))
        start = cfg.MODEL.TKD.WARMUP_ITERS if args.iter is None else args.iter
        detection_names, normaliser = prime_student(model, batches, args.prime_batches)
        calibration_batches = calibrate_balance(model, batches, start)
        levels, strides = list(model.in_features), list(model.strides)
        records, masks = [], []
        with captured_outputs(student=model.student.backbone, teacher=model.teacher.backbone) as outputs, \
                EventStorage(start) as storage:
            for b in range(args.batches):
                storage.iter = start + b  # the distiller reads its iteration (KD warm-up, DRD units) here
                batch = next(batches)
                records.append(measure_batch(model, batch, outputs, levels, detection_names))
                masks.append(mask_counts(batch, outputs["student"], levels, strides, model.device))
                print(f"batch {b + 1}/{args.batches}: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in records[-1]["losses"].items()), file=sys.stderr, flush=True)

    kd = [k for k in records[0]["losses"] if k.startswith(KD_PREFIXES)]
    det = [k for k in records[0]["losses"] if k in detection_names]
    other = [k for k in records[0]["losses"] if k not in kd + det + list(SUMS)]
    dataset = cfg.DATASETS.TRAIN[0].removesuffix("_train")
    name = args.name or f"kd_terms_{dataset}_{family_of(cfg).name}" + ("_tiny" if args.tiny else "")
    result = {
        "machine": machine(), "command": command_line(),
        "setting": {"config_file": args.config_file, "opts": list(args.opts), "batches": args.batches,
                    "iter": start, "prime_batches": args.prime_batches, "seed": args.seed, "tiny": args.tiny,
                    "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH, "min_size_train": list(cfg.INPUT.MIN_SIZE_TRAIN),
                    "in_features": levels, "strides": strides, "warmup_iters": cfg.MODEL.TKD.WARMUP_ITERS,
                    "feature_weight": cfg.MODEL.TKD.FEATURE_WEIGHT, "parts": list(cfg.MODEL.TKD.PARTS),
                    "calibrate_fraction": cfg.MODEL.TKD.CALIBRATE_FRACTION,
                    "balance": cfg.MODEL.TKD.BALANCE.ENABLED, "balance_measure": cfg.MODEL.TKD.BALANCE.MEASURE,
                    "calibration_batches": calibration_batches,
                    "clip_gradients": {"enabled": cfg.SOLVER.CLIP_GRADIENTS.ENABLED,
                                       "type": cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE,
                                       "value": cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE},
                    "student_weights": cfg.MODEL.WEIGHTS, "teacher_weights": cfg.MODEL.TKD.TEACHER.WEIGHTS,
                    "align_conv": model.distill_feature_align is not None,
                    "student_loss_normalizer_after_priming": normaliser},
        "notes": ("per-batch values, then mean/std(population)/min/max over batches; losses as the distiller "
                  "returns them (weighted); gradients w.r.t. the student's FPN maps (before the align conv) "
                  "and its trainable parameters; detection / kd / total = sums of the terms; "
                  "masks summed over all batches"),
        "terms": {"detection": det, "kd": kd, "other": other},
        "results": summarise(records),
        "masks": total_masks(masks),
    }
    path = write_result(name, result, args.results_dir)
    print(report(result))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
