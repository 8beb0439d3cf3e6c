#!/usr/bin/env python
"""How much faster are tkd_d2's feature-level losses (DED + DRD) than a naive implementation?

One P3-sized FPN level: student / teacher features N×C×H×W (default 8×256×25×25, stride 8,
i.e. 200 px images, the student requiring grad), 3 and 20 GT boxes per image; every
variant is a forward + backward of the summed unweighted terms.

  ours   ``DecoupledExpertLoss`` (fg, bg, ssim) + ``DualRelationLoss`` (instance, pixel) in
         "per_step" mode with the same step on every call (in training one step draws its
         GloRe units once, then reuses them); ``ours_new_step`` draws new units on every
         call (the upper bound: one DRD call per step).
  naive  the same semantics written the way the reference (ZhitaoWen/TKD, MMDetection)
         writes them: SSIM with a 2-D 11×11 Gaussian window built on every call and five
         depthwise conv2d; fg / bg masks from a Python loop over images and boxes; one
         RoIAlign per box; GloRe units as ``nn.Module`` (1×1 conv state / projection,
         Conv1d graph conv over nodes and states, conv extend + BatchNorm in training mode)
         constructed (default init) inside every call, their parameters requiring grad.

Where the naive code follows OUR semantics rather than the reference's (so the numbers can
be compared): the instance graph uses our layout (RoI cells as channels, boxes as positions:
a GloRe_Unit_1D(36, 18)), crops are RoIAlign(6, sampling 2, aligned) of the box in image
pixels with scale 1/stride (the reference crops integer-rounded cell boxes, unaligned, with
the boxes of the batch as the channels of one sample); the fg weight is 1 / (clipped cell
count) (the reference uses the unclipped count, which differs only for boxes touching the
right / bottom border).

Agreement is checked before timing: fg, bg, ssim must match to 1e-4 relative; for the check
the naive GloRe modules are loaded with the units ours draws for that step, so instance and
pixel must match too (to 1e-3: BatchNorm / reassociated products in float32). For timing,
the naive units keep their own random init (the reference's cost: construct + init each call).

Each part (fg+bg, ssim, instance, pixel) is also timed on its own, for both implementations;
``naive_share`` is the part's time over the naive total.

    python benchmarks/bench_feature_kd.py                 # 8×256×25×25, 3 and 20 boxes
    python benchmarks/bench_feature_kd.py --rounds 30 --inner 10
    python benchmarks/bench_feature_kd.py --tiny          # smoke test (seconds)
"""
import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_results_dir_argument, command_line, interleaved_rounds, machine, write_result  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.ops import RoIAlign  # noqa: E402

from tkd_d2.distill.ded import DecoupledExpertLoss  # noqa: E402
from tkd_d2.distill.drd import DualRelationLoss  # noqa: E402

PARTS = ("fg_bg", "ssim", "instance", "pixel")
TEMPERATURE = 0.5
ROI = 6
STEP = 1000  # any fixed training step
TOLERANCE = {"fg": 1e-4, "bg": 1e-4, "ssim": 1e-4, "instance": 1e-3, "pixel": 1e-3}


# ------------------------------------------------------------------------------------------
# inputs


def make_inputs(batch, channels, side, stride, boxes_per_image, seed=0):
    """Random student (requires grad) / teacher features and per-image XYXY boxes in pixels."""
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, channels, side, side, generator=g).requires_grad_()
    teacher = torch.randn(batch, channels, side, side, generator=g)
    size = side * stride
    boxes = []
    for _ in range(batch):
        xy = torch.rand(boxes_per_image, 2, generator=g) * size * 0.7
        wh = torch.rand(boxes_per_image, 2, generator=g) * size * 0.35 + 8
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1))
    return student, teacher, boxes


# ------------------------------------------------------------------------------------------
# naive implementation (reference style)


class NaiveGraphReasoning(nn.Module):
    """GloRe unit as modules: 1×1 conv state / projection, graph conv, conv extend + BN."""

    def __init__(self, in_channels, mid, conv=nn.Conv2d, norm=nn.BatchNorm2d):
        super().__init__()
        self.num_state, self.num_node = 2 * mid, mid
        self.state = conv(in_channels, self.num_state, kernel_size=1)
        self.proj = conv(in_channels, self.num_node, kernel_size=1)
        self.node_conv = nn.Conv1d(self.num_node, self.num_node, kernel_size=1)
        self.state_conv = nn.Conv1d(self.num_state, self.num_state, kernel_size=1, bias=False)
        self.extend = conv(self.num_state, in_channels, kernel_size=1, bias=False)
        self.norm = norm(in_channels, eps=1e-4)

    def load_units(self, unit):
        """Copy a :class:`GraphUnitParams` in (for the agreement check)."""
        with torch.no_grad():
            extra = (1,) * (self.state.weight.dim() - 2)
            self.state.weight.copy_(unit.state_weight.view(*unit.state_weight.shape, *extra))
            self.state.bias.copy_(unit.state_bias)
            self.proj.weight.copy_(unit.proj_weight.view(*unit.proj_weight.shape, *extra))
            self.proj.bias.copy_(unit.proj_bias)
            self.node_conv.weight.copy_(unit.node_weight[..., None])
            self.node_conv.bias.copy_(unit.node_bias)
            self.state_conv.weight.copy_(unit.channel_weight[..., None])
            self.extend.weight.copy_(unit.extend_weight.view(*unit.extend_weight.shape, *extra))
        return self

    def forward(self, x):
        n = x.shape[0]
        states = self.state(x).reshape(n, self.num_state, -1)
        proj = self.proj(x).reshape(n, self.num_node, -1)
        nodes = torch.matmul(states, proj.transpose(1, 2)) / states.shape[2]  # (n, S, K)
        h = self.node_conv(nodes.transpose(1, 2)).transpose(1, 2) + nodes
        h = self.state_conv(torch.relu(h))
        back = torch.matmul(h, proj).reshape(n, self.num_state, *x.shape[2:])
        return x + self.norm(self.extend(back))


def naive_attention(feat):
    n, c, h, w = feat.shape
    value = feat.abs()
    spatial = (h * w * F.softmax((value.mean(dim=1) / TEMPERATURE).reshape(n, -1), dim=1)).reshape(n, h, w)
    channel = c * F.softmax(value.mean(dim=(2, 3)) / TEMPERATURE, dim=1)
    return spatial, channel


def naive_masks(boxes, n, h, w, stride):
    fg = torch.zeros(n, h, w)
    bg = torch.ones(n, h, w)
    for i in range(n):
        for box in boxes[i]:
            x1, y1, x2, y2 = (float(v) / stride for v in box)
            x_lo, y_lo = int(math.floor(x1)), int(math.floor(y1))
            x_hi, y_hi = min(int(math.ceil(x2)), w - 1), min(int(math.ceil(y2)), h - 1)
            area = 1.0 / ((y_hi - y_lo + 1) * (x_hi - x_lo + 1))
            fg[i, y_lo:y_hi + 1, x_lo:x_hi + 1] = torch.clamp(fg[i, y_lo:y_hi + 1, x_lo:x_hi + 1], min=area)
        bg[i] = torch.where(fg[i] > 0, 0.0, 1.0)
        if bg[i].sum() > 0:
            bg[i] = bg[i] / bg[i].sum()
    return fg, bg


def naive_fg_bg(student, teacher, fg, bg, spatial_t, channel_t):
    n = student.shape[0]
    weight = torch.sqrt(spatial_t[:, None]) * torch.sqrt(channel_t[:, :, None, None])
    fea_s, fea_t = student * weight, teacher * weight
    out = {}
    for name, mask in (("fg", fg), ("bg", bg)):
        root = torch.sqrt(mask[:, None])
        out[name] = F.mse_loss(fea_s * root, fea_t * root, reduction="sum") / n
    return out


def naive_ssim(x, y, window_size=11, sigma=1.5):
    c = x.shape[1]
    g = torch.tensor([math.exp(-(i - window_size // 2) ** 2 / (2 * sigma ** 2)) for i in range(window_size)])
    g = (g / g.sum())[:, None]
    window = g.mm(g.t())[None, None].expand(c, 1, window_size, window_size).contiguous()
    pad = window_size // 2

    def blur(z):
        return F.conv2d(z, window, padding=pad, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return {"ssim": (1 - ssim_map.mean()) / 2}


def naive_instance(student, teacher, boxes, stride, attention_s, attention_t, unit=None):
    def enhanced(feat, attention):
        spatial, channel = attention
        return (feat * spatial[:, None] * channel[:, :, None, None]).mean(dim=1, keepdim=True)

    maps_s, maps_t = enhanced(student, attention_s), enhanced(teacher, attention_t)
    crops_s, crops_t = [], []
    for i in range(student.shape[0]):
        for box in boxes[i]:
            pooler = RoIAlign(output_size=ROI, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)
            crops_s.append(pooler(maps_s[i:i + 1], [box[None]]).reshape(ROI * ROI))
            crops_t.append(pooler(maps_t[i:i + 1], [box[None]]).reshape(ROI * ROI))
    if not crops_s:
        return {"instance": student.sum() * 0.0}
    graph = NaiveGraphReasoning(ROI * ROI, ROI * ROI // 2, conv=nn.Conv1d, norm=nn.BatchNorm1d)
    if unit is not None:
        graph.load_units(unit)
    relation_s = graph(torch.stack(crops_s, dim=1)[None])  # (1, roi², boxes)
    relation_t = graph(torch.stack(crops_t, dim=1)[None])
    return {"instance": F.mse_loss(relation_s, relation_t, reduction="sum") / relation_s.numel()}


def naive_pixel(student, teacher, unit=None):
    c = student.shape[1]
    graph = NaiveGraphReasoning(c, c // 2)
    if unit is not None:
        graph.load_units(unit)
    relation_s, relation_t = graph(student), graph(teacher)
    return {"pixel": F.mse_loss(relation_s, relation_t, reduction="sum") / relation_s.numel()}


def naive_losses(student, teacher, boxes, stride, parts=PARTS, units=None):
    units = units or {}
    n, _, h, w = student.shape
    losses = {}
    # as the reference: each model's attention once, shared by the terms that use it
    attention_t = naive_attention(teacher) if {"fg_bg", "instance"} & set(parts) else None
    if "fg_bg" in parts:
        fg, bg = naive_masks(boxes, n, h, w, stride)
        losses.update(naive_fg_bg(student, teacher, fg, bg, *attention_t))
    if "ssim" in parts:
        losses.update(naive_ssim(student, teacher))
    if "instance" in parts:
        losses.update(naive_instance(student, teacher, boxes, stride, naive_attention(student), attention_t,
                                     units.get("instance")))
    if "pixel" in parts:
        losses.update(naive_pixel(student, teacher, units.get("pixel")))
    return losses


# ------------------------------------------------------------------------------------------
# ours


class Ours:
    def __init__(self, channels):
        self.ded = DecoupledExpertLoss(temperature=TEMPERATURE)
        self.drd = DualRelationLoss(in_channels=channels, roi_size=ROI, temperature=TEMPERATURE,
                                    mode="per_step", seed=0)

    def losses(self, student, teacher, boxes, stride, parts=PARTS, step=STEP):
        ded_terms = (("fg", "bg") if "fg_bg" in parts else ()) + (("ssim",) if "ssim" in parts else ())
        drd_terms = tuple(p for p in ("instance", "pixel") if p in parts)
        losses = {}
        if ded_terms:
            losses.update(self.ded([student], [teacher], boxes, [stride], compute=ded_terms))
        if drd_terms:
            losses.update(self.drd([student], [teacher], boxes, [stride], step=step, compute=drd_terms))
        return losses

    def units(self, step=STEP):
        return {"instance": self.drd.instance_units.units_for_step(step),
                "pixel": self.drd.pixel_units.units_for_step(step)}


def step_fn(losses_fn, student):
    def run():
        sum(losses_fn().values()).backward()
        student.grad = None
    return run


def check_agreement(ours, student, teacher, boxes, stride):
    """Loss values and student gradients of ours vs naive (naive GloRe loaded with our units)."""
    got = {}
    for name, fn in (("ours", lambda: ours.losses(student, teacher, boxes, stride)),
                     ("naive", lambda: naive_losses(student, teacher, boxes, stride, units=ours.units()))):
        losses = fn()
        sum(losses.values()).backward()
        got[name] = ({k: v.item() for k, v in losses.items()}, student.grad.clone())
        student.grad = None
    (ours_values, ours_grad), (naive_values, naive_grad) = got["ours"], got["naive"]
    terms = {}
    for k in ours_values:
        rel = abs(ours_values[k] - naive_values[k]) / max(abs(naive_values[k]), 1e-12)
        terms[k] = {"ours": ours_values[k], "naive": naive_values[k], "rel_diff": rel,
                    "tolerance": TOLERANCE[k], "agree": rel <= TOLERANCE[k]}
    grad_rel = ((ours_grad - naive_grad).norm() / naive_grad.norm()).item()
    return {"terms": terms, "student_grad_rel_diff": grad_rel,
            "all_agree": all(t["agree"] for t in terms.values()) and grad_rel <= 1e-3}


def measure(args, boxes_per_image):
    torch.manual_seed(0)
    student, teacher, boxes = make_inputs(args.batch, args.channels, args.side, args.stride, boxes_per_image)
    ours = Ours(args.channels)
    agreement = check_agreement(ours, student, teacher, boxes, args.stride)
    if not agreement["all_agree"]:
        raise SystemExit(f"naive and ours disagree ({boxes_per_image} boxes/image): {agreement}")

    counter = iter(range(STEP + 1, 1 << 62))
    fns = {}
    for impl in ("ours", "naive"):
        for part in ("total",) + PARTS:
            parts = PARTS if part == "total" else (part,)
            if impl == "ours":
                fn = (lambda parts=parts: ours.losses(student, teacher, boxes, args.stride, parts))
            else:
                fn = (lambda parts=parts: naive_losses(student, teacher, boxes, args.stride, parts))
            fns[f"{impl}/{part}"] = step_fn(fn, student)
    fns["ours_new_step/total"] = step_fn(
        lambda: ours.losses(student, teacher, boxes, args.stride, step=next(counter)), student)
    for fn in fns.values():  # warm-up
        for _ in range(args.warmup):
            fn()
    medians, samples = interleaved_rounds(fns, args.rounds, args.inner,
                                          log=f"{boxes_per_image} boxes/img" if args.verbose else None)
    ms = {}
    for key, sec in medians.items():
        impl, part = key.split("/")
        ms.setdefault(impl, {})[part] = sec * 1e3
    return {
        "agreement": agreement,
        "ms": ms,
        "speedup": {part: ms["naive"][part] / ms["ours"][part] for part in ("total",) + PARTS},
        "speedup_vs_ours_new_step": ms["naive"]["total"] / ms["ours_new_step"]["total"],
        "naive_share": {part: ms["naive"][part] / ms["naive"]["total"] for part in PARTS},
        "ours_share": {part: ms["ours"][part] / ms["ours"]["total"] for part in PARTS},
        "samples_ms": {k: [s * 1e3 for s in v] for k, v in samples.items()},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--side", type=int, default=25, help="feature map side (P3 of a 200 px image)")
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--boxes", type=int, nargs="+", default=[3, 20], help="GT boxes per image (one run each)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median over them)")
    p.add_argument("--inner", type=int, default=5, help="calls per variant per round (their mean is one sample)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="smoke-test setting (seconds)")
    p.add_argument("--verbose", action="store_true", help="print every round to stderr")
    p.add_argument("--name", default=None, help="results file name (default feature_kd[_tiny])")
    add_results_dir_argument(p)
    args = p.parse_args()
    if args.tiny:
        args.batch, args.channels, args.side, args.rounds, args.inner, args.warmup = 2, 32, 13, 2, 1, 1
        args.threads = args.threads or 1  # smoke test on a shared machine: no thread oversubscription
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or "feature_kd" + ("_tiny" if args.tiny else "")
    result = {"machine": machine(), "command": command_line(),
              "setting": {k: getattr(args, k) for k in ("batch", "channels", "side", "stride", "boxes", "rounds",
                                                        "inner", "warmup", "tiny")},
              "notes": ("fwd+bwd ms, median over interleaved rounds; naive GloRe units constructed per call "
                        "(timing) / loaded with ours' units (agreement check); instance relation in our layout "
                        "(RoI cells as channels, boxes as positions) for both"),
              "results": {}}
    for n_boxes in args.boxes:
        result["results"][str(n_boxes)] = measure(args, n_boxes)
        write_result(name, result, args.results_dir)

    print("| boxes/img | part | naive ms | ours ms | speed-up | share of naive total |")
    print("|---|---|---|---|---|---|")
    for n_boxes, r in result["results"].items():
        for part in ("total",) + PARTS:
            share = "" if part == "total" else f"{r['naive_share'][part]:.1%}"
            print(f"| {n_boxes} | {part} | {r['ms']['naive'][part]:.2f} | {r['ms']['ours'][part]:.2f} | "
                  f"{r['speedup'][part]:.1f}× | {share} |")
        print(f"| {n_boxes} | total, ours drawing new units each call | {r['ms']['naive']['total']:.2f} | "
              f"{r['ms']['ours_new_step']['total']:.2f} | {r['speedup_vs_ours_new_step']:.1f}× | |")
    worst = max(t["rel_diff"] for r in result["results"].values() for t in r["agreement"]["terms"].values())
    print(f"naive vs ours: largest relative loss difference {worst:.1e} (all within tolerance)")


if __name__ == "__main__":
    main()
