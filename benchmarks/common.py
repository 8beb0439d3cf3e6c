"""Shared pieces of the benchmarks: build models from the project's configs, fake batches,
robust timing, results files written as they go."""
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import tkd_d2  # noqa: F401,E402  (adapts detectron2; must precede any detectron2 import)
from tkd_d2.checkpoint import SafeCheckpointer
from tkd_d2.config import load_config
from tkd_d2.engine.allocator import keep_freed_memory
from tkd_d2.fileio import atomic_write_json
from tkd_d2.pipeline.speed import sample_seconds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_ENV = "TKD_BENCH_RESULTS_DIR"  # overrides RESULTS (the smoke tests write to a tmp dir)
# as the training entry does (TKD_D2_MALLOC=default times glibc's own settings)
MALLOC = "keep" if keep_freed_memory() else "default"


def machine():
    """Machine facts recorded with every result."""
    import torch

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git_rev(),
        "malloc": MALLOC,
    }


def _git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except Exception:
        return "unknown"


def results_dir(override=None):
    """Where results go: ``override`` (``--results-dir``), else ``$TKD_BENCH_RESULTS_DIR``, else RESULTS."""
    return Path(override or os.environ.get(RESULTS_ENV) or RESULTS)


def add_results_dir_argument(parser):
    parser.add_argument("--results-dir", default=None,
                        help=f"folder of the results JSON (default ${RESULTS_ENV} or benchmarks/results)")


def write_result(name, payload, directory=None):
    """Write ``<results dir>/<name>.json`` atomically (a killed run leaves the old file)."""
    directory = results_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    atomic_write_json(path, payload, default=float)
    return path


def load_cfg(path, opts=()):
    """A CPU config of the project (``path`` relative to the project root), not frozen."""
    path = str(ROOT / path) if not os.path.isabs(path) else path
    return load_config(path, opts, device="cpu", register_datasets=False, freeze=False)


def random_teacher_weights(teacher_yaml, out_dir):
    """Weights of an untrained teacher (timing does not depend on the values)."""
    from detectron2.modeling import build_model

    model = build_model(load_cfg(teacher_yaml))
    SafeCheckpointer(model, str(out_dir)).save("random_teacher")
    return str(Path(out_dir) / "random_teacher.pth")


def fake_batch(num_images, size, boxes_per_image=3, seed=0):
    import torch
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(num_images):
        xy = torch.rand(boxes_per_image, 2, generator=g) * size * 0.6
        wh = torch.rand(boxes_per_image, 2, generator=g) * size * 0.35 + 8
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        inst = Instances((size, size), gt_boxes=Boxes(boxes),
                         gt_classes=torch.randint(0, 6, (boxes_per_image,), generator=g))
        batch.append({"image": torch.rand(3, size, size, generator=g) * 255, "instances": inst})
    return batch


def median_time(fn, repeats, warmup=1):
    """(median seconds, all samples) of ``repeats`` calls ``fn()`` after ``warmup`` ones."""
    times = sample_seconds(lambda _: fn(), repeats, warmup)
    return statistics.median(times), times


def interleaved_rounds(fns, rounds, inner=1, log=None):
    """Time every ``fns[name]()`` round-robin, ``rounds`` times (so drift hits all alike).

    Each sample is the mean seconds of ``inner`` back-to-back calls. Returns
    ``(medians {name: s}, samples {name: [s, ...]})``. No warm-up: do it before.
    """
    samples = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            samples[name].append(statistics.mean(sample_seconds(lambda _: fn(), inner)))
        if log:
            print(f"{log} round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {v[-1] * 1e3:.1f}ms" for k, v in samples.items()), file=sys.stderr, flush=True)
    return {name: statistics.median(v) for name, v in samples.items()}, samples


def command_line():
    """The exact command, as recorded in every results file."""
    return " ".join(["python"] + sys.argv)


def peak_rss_mb():
    """Peak resident memory of this process, MB.

    ``VmHWM`` of /proc/self/status: ``getrusage().ru_maxrss`` keeps the parent's peak across
    fork + exec on Linux, so a child started from a big parent would report the parent's.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_python(args, timeout=3600):
    """Run a benchmark script in a fresh process (own peak memory) and return its JSON line."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
