"""Reliability: a killed run resumes, checkpoints are whole or absent, same seed → same
losses, 2-process (gloo) TKD keeps ranks in sync, bad input is refused clearly."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ALL_PARTS, ROOT, TINY, run_train_net

import tkd_d2  # noqa: F401
from detectron2.modeling import build_model

from tkd_d2.checkpoint import SafeCheckpointer, load_weights
from tkd_d2.config import load_config
import tkd_d2.checkpoint as checkpoint_module

STUDENT = "configs/Synthetic/retinanet_R_18_FPN.yaml"
TKD = "configs/Synthetic/tkd_retinanet_R_50_to_R_18.yaml"


def _random_teacher(tmp_path):
    """An (untrained) R-18 teacher saved like a real one: fast, and enough for mechanics."""
    cfg = load_config(ROOT / STUDENT, device="cpu", register_datasets=False)
    SafeCheckpointer(build_model(cfg), str(tmp_path)).save("teacher")
    # every part, whatever the default runs: resume and seeding must hold for all of them
    return ["MODEL.TKD.TEACHER.CONFIG", STUDENT, "MODEL.TKD.TEACHER.WEIGHTS", tmp_path / "teacher.pth",
            "MODEL.TKD.PARTS", ALL_PARTS]


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_then_resume_completes(tmp_path):
    teacher = _random_teacher(tmp_path)
    out = tmp_path / "run"
    args = ["--config-file", TKD, *TINY, *teacher, "SOLVER.MAX_ITER", "24", "SOLVER.CHECKPOINT_PERIOD", "4",
            "MODEL.TKD.WARMUP_ITERS", "20", "OUTPUT_DIR", out]
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"), PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_net.py"), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill as soon as a second checkpoint is being/has been written: mid-run, maybe mid-save
    _sigkill_when(proc, lambda: (out / "model_0000007.pth").exists() or any(out.glob("model_0000007.pth.tmp*")))
    assert not (out / "model_final.pth").exists()
    last = (out / "last_checkpoint").read_text().strip()
    # whatever was last tagged loads completely
    state = torch.load(out / last, weights_only=True)
    resumed_from = state["iteration"] + 1

    proc = run_train_net(["--resume", *args], tmp_path / "data")
    log = proc.stdout + proc.stderr
    assert f"Starting training from iteration {resumed_from}" in log
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 23
    assert max(m["iteration"] for m in _metrics(out) if "total_loss" in m) == 23
    assert not list(out.glob("*.tmp*"))


def _train_killed_after(args, out, checkpoint, data):
    """Start train_net.py with ``args``; SIGKILL it as soon as ``checkpoint`` is tagged last in ``out``."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(data), PYTHONWARNINGS="ignore", PYTORCH_JIT="0")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_net.py"), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tag = out / "last_checkpoint"
    _sigkill_when(proc, lambda: tag.exists() and tag.read_text() == checkpoint)


def _sigkill_when(proc, ready, timeout=600):
    """SIGKILL the training ``proc`` as soon as ``ready()``; it must still be running then."""
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()


# Both runs with PYTORCH_JIT=0: detectron2's focal loss is a TorchScript function, and
# TorchScript's profiling executor re-optimises it after its first calls (other fused kernels,
# float32 results 1 ulp apart), so a fresh process's first iterations round differently from
# the same iterations later in a long-lived one. Without it the two runs differ by ~1e-7
# relative in the classification gradients; with it they are bitwise equal, and so required.
@pytest.mark.slow
@pytest.mark.shared_trainings
@pytest.mark.parametrize("kind", ["student", "tkd_balanced", "student_ema"])
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, request, kind):
    monkeypatch.setenv("PYTORCH_JIT", "0")
    max_iter, period = 8, 4  # checkpoints after iterations 3 and 7; killed after the first
    common = [*TINY, "SOLVER.MAX_ITER", max_iter, "SOLVER.CHECKPOINT_PERIOD", period, "SEED", 3,
              "DATASETS.TEST", "()"]
    parts = tmp_path / "parts"
    if kind == "student":
        args = ["--config-file", STUDENT, *common]
        # the uninterrupted run: the session's tiny student (tests/tiny_runs.py), these very
        # arguments under PYTORCH_JIT=0, on its datasets
        shared = request.getfixturevalue("tiny_student")
        assert [str(a) for a in shared["args"]] == [str(a) for a in args]
        whole, data = shared["out"], shared["data"]
    elif kind == "student_ema":  # the weight average goes on from the checkpoint
        args = ["--config-file", STUDENT, *common, "MODEL.EMA.ENABLED", "True", "MODEL.EMA.DECAY", "0.9"]
        whole, data = tmp_path / "whole", tmp_path / "data"
        run_train_net([*args, "OUTPUT_DIR", whole], data)
    else:
        # the balance window (2 KD iterations) closes before the kill; the KD warm-up does not
        args = ["--config-file", TKD, *common, *_random_teacher(tmp_path), "MODEL.TKD.BALANCE.ENABLED", "True",
                "MODEL.TKD.CALIBRATE_ITERS", 2, "MODEL.TKD.WARMUP_ITERS", 6]
        whole, data = tmp_path / "whole", tmp_path / "data"
        run_train_net([*args, "OUTPUT_DIR", whole], data)
    _train_killed_after([*args, "OUTPUT_DIR", parts], parts, f"model_{period - 1:07d}.pth", data)
    assert not (parts / "model_final.pth").exists()
    assert (parts / "last_checkpoint").read_text().strip() == f"model_{period - 1:07d}.pth"
    proc = run_train_net(["--resume", *args, "OUTPUT_DIR", parts], data)
    assert f"Starting training from iteration {period}" in proc.stdout + proc.stderr

    a = torch.load(whole / "model_final.pth", weights_only=True)
    b = torch.load(parts / "model_final.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    if kind == "student_ema":  # the final weights are the average, resumed or not
        averages = a["trainer"]["ema"]["averages"]
        assert a["trainer"]["ema"]["updates"] == b["trainer"]["ema"]["updates"] == max_iter
        for key, value in averages.items():
            assert torch.equal(a["model"][key], value) and torch.equal(b["trainer"]["ema"]["averages"][key], value), key
    if kind == "tkd_balanced":
        scales = a["model"]["distill_balance.scales"]
        assert (scales != 1).all(), scales  # calibrated, at iteration 1: before the kill
        assert torch.equal(scales, b["model"]["distill_balance.scales"])
    # the optimizer (SGD momentum), the LR scheduler and the detector's loss normalizer
    opt_a, opt_b = a["trainer"]["_trainer"]["optimizer"], b["trainer"]["_trainer"]["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys() and opt_a["state"]
    for i in opt_a["state"]:
        assert torch.equal(opt_a["state"][i]["momentum_buffer"], opt_b["state"][i]["momentum_buffer"]), i
    assert a["trainer"]["hooks"] == b["trainer"]["hooks"]
    assert a["trainer"]["loss_normalizers"] == b["trainer"]["loss_normalizers"] != {}
    # the logged losses (medians over the last 20 iterations: the window is carried over too)
    logged_a = {m["iteration"]: m for m in _metrics(whole) if "total_loss" in m}
    logged_b = {m["iteration"]: m for m in _metrics(parts) if "total_loss" in m}
    assert max(logged_a) == max_iter - 1 and logged_a.keys() == logged_b.keys()
    for it in logged_a:
        losses = {k: v for k, v in logged_a[it].items() if "loss" in k}
        assert losses == {k: v for k, v in logged_b[it].items() if "loss" in k}, it
    if kind == "tkd_balanced":
        assert "loss_ded_fg" in losses


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = SafeCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000004")
    real_save = torch.save

    def dying_save(data, f, *a, **k):
        real_save(data, f, *a, **k)
        f.truncate(10)  # a torn write, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000009")
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not (tmp_path / "model_0000009.pth").exists()
    assert not list(tmp_path.glob("*.tmp*"))
    # and resuming loads it: a fresh (differently initialised) model gets the saved weights
    fresh = torch.nn.Linear(3, 2)
    assert not torch.equal(fresh.weight, model.weight)
    SafeCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(RuntimeError, match="broken.pth.*truncated"):
        load_weights(torch.nn.Linear(3, 2), str(path))


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "x": Evil()}, path)
    with pytest.raises(RuntimeError, match="weights-only"):
        load_weights(torch.nn.Linear(3, 2), str(path))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_same_seed_same_losses(tmp_path):
    teacher = _random_teacher(tmp_path)
    losses = []
    for run in ("a", "b"):
        out = tmp_path / run
        run_train_net(["--config-file", TKD, *TINY, *teacher, "SOLVER.MAX_ITER", "5", "SEED", "7",
                       "MODEL.TKD.WARMUP_ITERS", "0", "OUTPUT_DIR", out], tmp_path / "data")
        last = [m for m in _metrics(out) if "total_loss" in m][-1]
        losses.append({k: v for k, v in last.items() if k.startswith("loss_")})
    assert losses[0] == losses[1]
    assert "loss_drd_pixel" in losses[0]


@pytest.mark.slow
def test_two_process_tkd_keeps_ranks_in_sync(tmp_path):
    teacher = _random_teacher(tmp_path)
    out = tmp_path / "ddp"
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"), PYTHONWARNINGS="ignore")
    opts = [*TINY, "SOLVER.MAX_ITER", "3", teacher[1], teacher[3]]
    proc = subprocess.run([sys.executable, str(ROOT / "tests/distributed_check.py"), str(out), STUDENT,
                           str(teacher[3]), *map(str, TINY), "SOLVER.MAX_ITER", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    del opts
    r0 = torch.load(out / "rank0.pth", weights_only=True)
    r1 = torch.load(out / "rank1.pth", weights_only=True)
    assert r0["wrapper"] == r1["wrapper"] == "DistributedDataParallel"
    assert not r0["teacher_wrapped"] and r0["teacher_in_ddp_params"] == 0
    assert r0["params"].keys() == r1["params"].keys()
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    # training moved the weights from where this run started (the ranks did not agree by standing still)
    assert r0["initial_params"].keys() == r0["params"].keys()
    assert any(not torch.equal(r0["initial_params"][k], v) for k, v in r0["params"].items() if k.startswith("student."))


@pytest.mark.parametrize("override, message", [
    (["MODEL.TKD.DED.FG_WIEGHT", "1"], "MODEL.TKD.DED.FG_WIEGHT .*does not exist.*Did you mean MODEL.TKD.DED.FG_WEIGHT"),
    (["DATASETS.TRAIN", "('no_such_set',)"], "no_such_set.*not registered"),
])
@pytest.mark.slow
def test_bad_config_is_refused_clearly(tmp_path, override, message):
    proc = run_train_net(["--config-file", STUDENT, *TINY, "OUTPUT_DIR", tmp_path / "o", *override],
                         tmp_path / "data", check=False)
    assert proc.returncode != 0
    import re

    assert re.search(message, proc.stderr, re.S), proc.stderr[-2000:]


def test_leftovers_of_a_killed_save_are_removed_on_restart(tmp_path):
    SafeCheckpointer(torch.nn.Linear(3, 2), str(tmp_path)).save("model_0000004")
    (tmp_path / "model_0000009.pth.tmp.4242").write_bytes(b"half a checkpoint")
    SafeCheckpointer(torch.nn.Linear(3, 2), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000004.pth"]


@pytest.mark.slow
def test_empty_dataset_is_refused_clearly(tmp_path):
    import cv2
    import numpy as np

    (tmp_path / "images").mkdir()
    (tmp_path / "xml").mkdir()
    # a VOC folder without annotations: the loader names the folder
    entry = f"empty_voc:voc:{tmp_path / 'images'}:{tmp_path / 'xml'}"
    common = ["--config-file", STUDENT, *TINY, "OUTPUT_DIR", tmp_path / "o", "DATASETS.TEST", "()",
              "DATASETS.CUSTOM.CLASSES", "['dent']", "MODEL.RETINANET.NUM_CLASSES", "1"]
    proc = run_train_net([*common, "DATASETS.CUSTOM.ENTRIES", f"['{entry}']", "DATASETS.TRAIN", "('empty_voc',)"],
                         tmp_path / "data", check=False)
    assert proc.returncode != 0 and "holds no .xml files" in proc.stderr, proc.stderr[-2000:]
    # a COCO file whose only image has no boxes: nothing left to train on
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "empty.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 32}], "annotations": [],
        "categories": [{"id": 1, "name": "dent"}]}))
    entry = f"empty_coco:coco:{tmp_path / 'images'}:{tmp_path / 'empty.json'}"
    proc = run_train_net([*common, "DATASETS.CUSTOM.ENTRIES", f"['{entry}']", "DATASETS.TRAIN", "('empty_coco',)"],
                         tmp_path / "data", check=False)
    assert proc.returncode != 0
    assert "empty_coco" in proc.stderr and "has no images with boxes" in proc.stderr, proc.stderr[-2000:]
