"""Stage 6: size and CPU speed of teacher and student, the ONNX export of the student; and the
one timing helper the pipeline and the benchmarks share (:func:`sample_seconds`)."""
import os
import statistics
import time

import numpy as np
from detectron2.data import DatasetCatalog

from ..config import load_config
from ..engine import Predictor, Trainer, resize_for_inference
from ..evaluation import RESULTS_FILE
from ..visualization import read_image
from .report import DeployRow, DeploySection
from .runner import Job

__all__ = ["count_parameters", "deploy_job", "deploy_section", "export_and_measure",
           "measure_cpu_speed", "measure_speed", "sample_seconds", "speed_job", "time_calls"]


# ------------------------------------------------------------------------------ timing
def sample_seconds(call, iters, warmup=0):
    """Wall-clock seconds of ``call(i)`` for i in range(iters), after ``warmup`` untimed calls
    ``call(0)``, ``call(1)``, ...: the one timing loop of the pipeline and the benchmarks."""
    for i in range(warmup):
        call(i)
    times = []
    for i in range(iters):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return times


def count_parameters(model):
    """Number of parameters of ``model`` (all of them, trainable or not)."""
    return int(sum(p.numel() for p in model.parameters()))


def time_calls(fn, inputs, warmup=3, iters=10):
    """Median wall clock of ``fn(x)`` over ``inputs`` (cycled): ``warmup`` untimed calls, then
    ``iters`` timed ones. The rate is taken from the median call, which other processes
    competing for the CPU disturb less than the mean; the mean is kept too."""
    if not inputs:
        raise ValueError("timing needs at least one input")
    if iters < 1:
        raise ValueError("iters must be >= 1")
    times = sample_seconds(lambda i: fn(inputs[i % len(inputs)]), iters, warmup)
    median = statistics.median(times)
    return {
        "images_per_second": 1.0 / median,
        "ms_per_image": 1000.0 * median,
        "mean_ms_per_image": 1000.0 * sum(times) / len(times),
        "warmup": int(warmup),
        "iters": int(iters),
    }


def measure_cpu_speed(model, inputs, warmup=3, iters=10):
    """Images per second of ``model`` at batch 1 on ``inputs`` (a list of model input dicts,
    cycled), as :func:`time_calls` (wall clock of the whole forward, post-processing
    included). Returns a dict with the numbers and the settings."""
    import torch

    model.eval()
    with torch.no_grad():
        result = time_calls(lambda x: model([x]), inputs, warmup=warmup, iters=iters)
    result["threads"] = torch.get_num_threads()
    result["input_sizes"] = sorted({tuple(x["image"].shape[-2:]) for x in inputs})
    return result


# ------------------------------------------------------------------------------ stage 6
def speed_job(plan):
    warmup, iters = plan.options.speed_iters
    settings = {"warmup": warmup, "iters": iters, "opts": plan.eval_opts}
    if plan.teacher_given:
        settings["teacher"] = plan.dirs["teacher"]
    return Job("speed", "measuring parameters and CPU speed (batch 1, "
               f"{warmup} warm-up + {iters} timed iterations)", settings,
               compute=lambda: measure_speed(plan, warmup, iters), record_result=True)


def deploy_job(plan, recorded):
    """Stage deploy as a job; ``recorded``: the result of an earlier run (names the export)."""
    warmup, iters = plan.options.speed_iters
    model_path = (recorded or {}).get("model_path") or os.path.join(plan.out, "deploy", "onnx", "model.onnx")
    return Job("deploy", "exporting the TKD student to ONNX; its AP and ONNX Runtime speed",
               {"warmup": warmup, "iters": iters, "opts": plan.eval_opts}, outputs=[model_path],
               compute=lambda: export_and_measure(plan, warmup, iters), record_result=True)


def measure_speed(plan, warmup, iters):
    """Parameters and CPU images/s (batch 1) of the teacher and the TKD student, on test
    images: ``{"teacher": ..., "student": ...}`` as :func:`measure_cpu_speed`
    returns them, with ``params``."""
    dicts = DatasetCatalog.get(plan.test_dataset)[: max(1, min(iters, 8))]
    result = {}
    # The TKD student is the student architecture with distilled weights.
    for key, model in (("teacher", "teacher"), ("student", "tkd")):
        config = plan.configs["baseline" if model == "tkd" else model]
        cfg = load_config(config, plan.eval_opts_of(model), device="cpu")
        weights = plan.weights[model]
        predictor = Predictor(cfg, weights)
        inputs = [predictor.preprocess(read_image(d["file_name"], format="BGR")) for d in dicts]
        speed = measure_cpu_speed(predictor.model, inputs, warmup=warmup, iters=iters)
        speed["params"] = count_parameters(predictor.model)
        speed["input_sizes"] = [list(s) for s in speed["input_sizes"]]
        print(f"  {key}: {speed['params'] / 1e6:.2f} M parameters, "
              f"{speed['images_per_second']:.2f} images/s ({speed['ms_per_image']:.1f} ms/image)",
              flush=True)
        result[key] = speed
    return result


def export_and_measure(plan, warmup, iters):
    """Export the TKD student to ONNX (``deploy/onnx``), evaluate the export with the same
    loader and evaluator (``eval_deploy``) and time it with ONNX Runtime."""
    from ..deploy import ExportedModelAdapter, export_model  # onnx / onnxruntime: only here

    export_dir = os.path.join(plan.out, "deploy", "onnx")
    cfg = load_config(plan.configs["baseline"], plan.eval_opts + [
        "OUTPUT_DIR", os.path.join(plan.out, "eval_deploy")], device="cpu")
    info = export_model(cfg, export_dir, weights=plan.weights["tkd"],
                        source_config=plan.configs["baseline"])
    adapter = ExportedModelAdapter.from_config(export_dir, cfg)
    Trainer.test(cfg, adapter)  # writes eval_deploy/inference/<test set>/ap_results.json
    dicts = DatasetCatalog.get(plan.test_dataset)[: max(1, min(iters, 8))]
    # the eager timing's resized images, as the numpy BGR uint8 a deployment passes,
    # prepared before timing: the timed call is what a deployment runs (OnnxPredictor:
    # graph, rescaling to the original size), and no torch op runs in the loop, whose idle
    # OpenMP threads would spin beside ONNX Runtime's
    resize = resize_for_inference(cfg)
    inputs = []
    for d in dicts:
        image = read_image(d["file_name"], format="BGR")
        inputs.append((np.ascontiguousarray(resize.get_transform(image).apply_image(image)), image.shape[:2]))
    predictor = adapter.predictor
    speed = time_calls(lambda x: predictor.predict(*x), inputs, warmup=warmup, iters=iters)
    speed["threads"] = "onnxruntime default"
    size_mb = os.path.getsize(info["model_path"]) / 1e6
    print(f"  ONNX {size_mb:.1f} MB: {speed['images_per_second']:.2f} images/s "
          f"({speed['ms_per_image']:.1f} ms/image)", flush=True)
    return {"model_path": info["model_path"], "size_mb": size_mb,
            "images_per_second": speed["images_per_second"],
            "ms_per_image": speed["ms_per_image"],
            "ap_results": os.path.join(plan.out, "eval_deploy", "inference",
                                       plan.test_dataset, RESULTS_FILE)}


def deploy_section(plan, status, shown_path):
    """The report's deploy table: teacher and student eager (stage speed), student ONNX."""
    speed, deploy = status.get("speed").get("result"), status.get("deploy").get("result")
    if not speed or not deploy:
        return None
    mb = 4 / 1e6  # float32 parameters
    rows = [
        DeployRow(plan.label("teacher"), "PyTorch eager", speed["teacher"]["params"] * mb,
                  speed["teacher"]["images_per_second"], plan.ap_results_path("teacher")),
        DeployRow(plan.label("tkd"), "PyTorch eager", speed["student"]["params"] * mb,
                  speed["student"]["images_per_second"], plan.ap_results_path("tkd")),
        DeployRow(plan.label("tkd"), "ONNX Runtime", deploy["size_mb"], deploy["images_per_second"],
                  deploy["ap_results"]),
    ]
    note = (f"Export: `{shown_path(deploy['model_path'])}` (whole detector with "
            "NMS; `tkd_d2.deploy.OnnxPredictor`). Size: float32 parameters (eager), the "
            ".onnx file (ONNX Runtime). images/s as in the speed table, on the same resized "
            "images (ONNX Runtime: `OnnxPredictor.predict`, timed after the eager models, "
            "not interleaved with them); AP of the export through the same loader and "
            "evaluator.")
    return DeploySection(rows, note)
