"""The plan's measurements (:class:`~.budget.Timings`): a few real training steps of each
model the main job trains and a few test images through teacher and student, in this
process, at the settings the runs will use.

The probe trains throw-away copies (a random teacher stands in for the trained one: a step
costs the same), so the runs themselves are untouched: they start in fresh processes with
their own seeds. A given teacher (``--teacher``) is not trained: only its inference is timed,
and the TKD probe distils from it.
"""
import os
import statistics
import subprocess
import tempfile
import time

from ..checkpoint import SafeCheckpointer
from ..config import load_config
from ..engine import Trainer
from ..engine.allocator import keep_freed_memory
from .budget import TRAININGS, Timings
from .speed import sample_seconds, time_calls

__all__ = ["probe_timings", "process_age"]


def process_age():
    """Seconds since this process started (its imports included), or None off Linux."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _sync(cfg):
    """Wait for the GPU's queued work, so a step's wall time is its real cost there."""
    import torch

    if str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def _train_steps(cfg, warmup, iters):
    """(model, build seconds, first batch seconds, median step seconds) of training ``cfg``."""
    from detectron2.utils.events import EventStorage

    start = time.perf_counter()
    model = Trainer.build_model(cfg)
    built = time.perf_counter() - start
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    start = time.perf_counter()
    loader = iter(Trainer.build_train_loader(cfg))
    batches = [next(loader)]
    first = time.perf_counter() - start

    def step(i):
        batch = batches.pop() if batches else next(loader)
        with EventStorage(i):
            losses = model(batch)
            sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(cfg)

    times = sample_seconds(step, iters, warmup)
    del loader
    return model, built, first, statistics.median(times)


def _inference_seconds(cfg, model, dataset, warmup, iters):
    """Median seconds per test image of ``model`` as the evaluation runs it (test loader,
    batch 1, tiles where TEST.TILE.SIZE > 0), timed by :func:`~.speed.time_calls`."""
    import torch

    from ..modeling.tiled import tiled

    model.eval()
    detector = tiled(cfg, model)
    loader = iter(Trainer.build_test_loader(cfg, dataset))
    inputs = [next(loader, None) for _ in range(max(1, min(warmup + iters, 8)))]
    inputs = [x for x in inputs if x is not None]

    def infer(batch):
        detector(batch)
        _sync(cfg)

    with torch.no_grad():
        return time_calls(infer, inputs, warmup=warmup, iters=iters)["ms_per_image"] / 1000.0


def probe_timings(plan, warmup=2, iters=3, process_start=None, start_command=None):
    """:class:`~.budget.Timings` of ``plan``'s runs (its datasets registered): ``warmup`` +
    ``iters`` training steps of each model and of test inference. A process's start-up (its
    imports and exit) is timed by running ``start_command`` (the entry's ``--help``), else
    taken as ``process_start`` seconds (default: this process's age at the call, which
    imported the same libraries). Memory is allocated as the training entry does it
    (:func:`~tkd_d2.engine.allocator.keep_freed_memory`)."""
    keep_freed_memory()
    began = time.perf_counter()
    if start_command:
        start = time.perf_counter()
        subprocess.run(start_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=plan.project_root, check=False)
        age = time.perf_counter() - start
    else:
        age = process_age() if process_start is None else process_start
    cfgs = plan.trained_configs()
    step, infer, builds, firsts = {}, {}, [], []
    with tempfile.TemporaryDirectory(prefix="tkd_probe_") as tmp:
        teacher = (os.path.join(tmp, "teacher.yaml"), os.path.join(tmp, "teacher.pth"))
        if plan.teacher_given:  # not trained: its inference timed, the TKD probe distils from it
            teacher = plan.configs["teacher"], plan.weights["teacher"]
            cfg = load_config(teacher[0], plan.eval_opts_of("teacher"))
            start = time.perf_counter()
            model = Trainer.build_model(cfg)
            builds.append(time.perf_counter() - start)
            infer["teacher"] = _inference_seconds(cfg, model, plan.test_dataset, 1, iters)
            del model
        for key in (m for m in TRAININGS if not (m == "teacher" and plan.teacher_given)):
            cfg = cfgs[key].clone()
            cfg.defrost()
            cfg.OUTPUT_DIR = tmp
            if key == "tkd":  # a random teacher of the teacher's config: the same step cost
                cfg.MODEL.TKD.TEACHER.CONFIG, cfg.MODEL.TKD.TEACHER.WEIGHTS = teacher
                cfg.MODEL.TKD.WARMUP_ITERS = 0  # KD on from the first step, as most of the run
            cfg.freeze()
            model, built, first, step[key] = _train_steps(cfg, warmup, iters)
            builds.append(built)
            firsts.append(first)
            if key == "teacher":
                with open(os.path.join(tmp, "teacher.yaml"), "w") as f:
                    f.write(cfgs["teacher"].dump())
                SafeCheckpointer(model, tmp).save("teacher")
                infer["teacher"] = _inference_seconds(cfg, model, plan.test_dataset, 1, iters)
            elif key == "baseline":
                infer["student"] = _inference_seconds(cfg, model, plan.test_dataset, 1, iters)
            del model
    build = statistics.median(builds)
    start = (age if age is not None else 5.0) + build + statistics.median(firsts)
    return Timings(step=step, infer=infer, start=start, build=build,
                   probe_seconds=time.perf_counter() - began)
