#!/usr/bin/env python
"""Does TKD training leak memory? (BENCHMARKS.md, "Memory over a long run")

Runs a few hundred real TKD training steps (forward, backward, SGD step) in one process with
batches whose box counts change every step (0 to 20 boxes per image, so every per-box code
path and every per-step graph-unit draw is exercised), sampling the resident set size
(``/proc/self/status`` VmRSS) every ``--every`` steps. After the warm-up, a leak shows as a
steady upward slope; the result records the slope (MB per 100 steps) and the spread.

    python benchmarks/bench_memory.py                 # 400 steps, R-18 student, R-50 teacher
    python benchmarks/bench_memory.py --tiny          # smoke test
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_results_dir_argument, command_line, fake_batch, load_cfg, machine,  # noqa: E402
                    random_teacher_weights, write_result)


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope_per_100(xs, ys):
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 100.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=50, help="steps excluded from the slope")
    p.add_argument("--every", type=int, default=10, help="sample RSS every N steps")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--graph-mode", choices=["per_step", "fixed"], default="per_step")
    p.add_argument("--tiny", action="store_true")
    add_results_dir_argument(p)
    args = p.parse_args()
    if args.tiny:
        args.steps, args.warmup, args.every, args.size, args.batch = 12, 4, 2, 64, 2

    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    small = ["MODEL.FPN.OUT_CHANNELS", "64"] if args.tiny else []
    with tempfile.TemporaryDirectory() as tmp:
        teacher_yaml = Path(tmp) / "teacher.yaml"
        teacher_yaml.write_text(load_cfg("configs/Synthetic/retinanet_R_50_FPN.yaml", small).dump())
        weights = random_teacher_weights(str(teacher_yaml), tmp)
        cfg = load_cfg("configs/Synthetic/tkd_retinanet_R_50_to_R_18.yaml", small + [
            "MODEL.TKD.TEACHER.CONFIG", str(teacher_yaml), "MODEL.TKD.TEACHER.WEIGHTS", weights,
            "MODEL.TKD.WARMUP_ITERS", "0", "MODEL.TKD.DRD.GRAPH_MODE", args.graph_mode])
        model = build_model(cfg)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    batches = [fake_batch(args.batch, args.size, boxes_per_image=n, seed=n) for n in (0, 1, 3, 7, 20)]
    samples = []
    with EventStorage() as storage:
        for step in range(args.steps):
            storage.iter = step  # the distiller reads the iteration from here
            losses = model(batches[step % len(batches)])
            optimizer.zero_grad()
            sum(losses.values()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # as the configs' CLIP_GRADIENTS
            optimizer.step()
            if step % args.every == 0 or step == args.steps - 1:
                samples.append((step, rss_mb()))
                print(f"step {step}: {samples[-1][1]:.1f} MB", file=sys.stderr, flush=True)
    after = [(s, m) for s, m in samples if s >= args.warmup]
    xs, ys = [s for s, _ in after], [m for _, m in after]
    result = {
        "machine": machine(), "command": command_line(),
        "setting": {k: getattr(args, k) for k in ("steps", "warmup", "every", "size", "batch", "graph_mode", "tiny")},
        "samples": samples,
        "rss_after_warmup_mb": ys[0], "rss_end_mb": ys[-1],
        "rss_min_after_warmup_mb": min(ys), "rss_max_after_warmup_mb": max(ys),
        "slope_mb_per_100_steps": slope_per_100(xs, ys),
    }
    write_result("memory" + ("_tiny" if args.tiny else ""), result, args.results_dir)
    print(f"RSS after warm-up {ys[0]:.0f} MB, end {ys[-1]:.0f} MB, range {min(ys):.0f}-{max(ys):.0f} MB, "
          f"slope {result['slope_mb_per_100_steps']:+.2f} MB / 100 steps")


if __name__ == "__main__":
    main()
