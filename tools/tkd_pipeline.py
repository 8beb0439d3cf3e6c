#!/usr/bin/env python
"""Distil a small defect detector end to end, in one command.

    python tools/tkd_pipeline.py                          # synthetic defects, RetinaNet
    python tools/tkd_pipeline.py --dataset neu_det --detector fcos
    python tools/tkd_pipeline.py --tiny --output /tmp/try # a 1-minute smoke run

Stages (each prints "[stage k/6] ..."; training streams detectron2's own log with its ETA):

  1. data       generate the synthetic set (seeded, cached under $DETECTRON2_DATASETS) or
                check that NEU-DET is in place
  2. teacher    train the teacher (R-50-FPN) with `train_net.py --config-file ...`
  3. baseline   train the student (R-18-FPN) without KD
     tkd        train the student with TKD from the teacher (the baseline's schedule and seed)
  4. eval_*     evaluate all three with `train_net.py --eval-only` (the TKD checkpoint with
                the plain student config)
  5. pictures   ground truth | teacher | baseline | TKD, side by side, for --num-images images
  6. speed      parameters and CPU images/s (batch 1) of teacher and student
     report     report.md + curves.png from the files the runs wrote

Every train_net.py command is printed before it runs, and its output is also saved in
OUTPUT/logs/<stage>.log. Stage outputs go under --output: teacher/, baseline/, tkd/,
eval_teacher/, eval_baseline/, eval_tkd/, pictures/, curves.png, report.md, and stages.json
(status, wall time and command of every stage).

Rerunning the same command reuses every finished stage (found from its outputs:
model_final.pth, ap_results.json, ...), resumes an interrupted training from its
last_checkpoint, and redoes what depends on a stage that was redone. --redo STAGE (or all)
starts stages over. A stage whose settings changed since it ran is not silently reused: the
pipeline stops and asks for --redo or another --output.
"""
import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

NUM_STAGES = 6
CONFIG_DIRS = {"synthetic": "Synthetic", "neu_det": "NEU-DET"}
# detector → (teacher, baseline student, TKD student) config names in configs/<dataset>/
CONFIG_NAMES = {
    "retinanet": ("retinanet_R_50_FPN", "retinanet_R_18_FPN", "tkd_retinanet_R_50_to_R_18"),
    "fcos": ("fcos_R_50_FPN", "fcos_R_18_FPN", "tkd_fcos_R_50_to_R_18"),
}
DETECTOR_NAMES = {"retinanet": "RetinaNet", "fcos": "FCOS"}
# --tiny: a smoke-test scale (a few small synthetic images, tiny batches, no workers).
TINY_OPTS = [
    "DATASETS.SYNTHETIC.NUM_TRAIN", "16",
    "DATASETS.SYNTHETIC.NUM_TEST", "8",
    "DATASETS.SYNTHETIC.IMAGE_SIZE", "128",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "213",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "213",
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
]
TINY_MAX_ITER = 3
TINY_SPEED = (1, 3)  # warm-up, timed iterations

# name → (stage number, what it waits for). Order = execution order.
STAGES = {
    "data": (1, ()),
    "teacher": (2, ()),
    "baseline": (3, ()),
    "tkd": (3, ("teacher",)),
    "eval_teacher": (4, ("teacher",)),
    "eval_baseline": (4, ("baseline",)),
    "eval_tkd": (4, ("tkd",)),
    "pictures": (5, ("teacher", "baseline", "tkd")),
    "speed": (6, ("teacher", "tkd")),
    "report": (6, ()),
}
REDO_CHOICES = ["teacher", "baseline", "tkd", "eval", "eval_teacher", "eval_baseline",
                "eval_tkd", "pictures", "speed", "all"]
MODELS = ("teacher", "baseline", "tkd")
USER_ERRORS = ("VisualizationError", "DatasetFormatError", "ImageReadError", "DatasetNotRegisteredError")


class StageError(RuntimeError):
    """A stage failed; the message names the stage and where its log is."""


class SettingsChanged(RuntimeError):
    """A finished (or interrupted) stage ran with other settings than this command's."""


# ------------------------------------------------------------------------------ CLI
def parse_args(argv=None):
    doc_head, doc_body = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(
        prog="tkd_pipeline.py",
        description=doc_head,
        epilog=doc_body,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(CONFIG_DIRS), default="synthetic",
                        help="synthetic (generated, default) or neu_det ($DETECTRON2_DATASETS/NEU-DET)")
    parser.add_argument("--detector", choices=sorted(CONFIG_NAMES), default="retinanet",
                        help="detector family of teacher and students (default retinanet)")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="output folder (default output/pipeline_<dataset>_<detector>)")
    parser.add_argument("--num-images", type=int, default=6, metavar="N",
                        help="test images drawn side by side (default 6)")
    parser.add_argument("--score-thresh", type=float, default=0.3,
                        help="boxes drawn in the pictures score at least this (default 0.3)")
    parser.add_argument("--max-iter", type=int, default=None, metavar="N",
                        help="train every model for N iterations (SOLVER.STEPS, SOLVER.WARMUP_ITERS "
                             "and MODEL.TKD.WARMUP_ITERS are scaled to match)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke-test scale: 16 train / 8 test synthetic images of 128 px, "
                             f"batch 2, no loader workers, {TINY_MAX_ITER} iterations unless "
                             "--max-iter, short speed measurement")
    parser.add_argument("--seed", type=int, default=None,
                        help="SEED of every training (default: the student config's SEED, so "
                             "baseline and TKD student share it)")
    parser.add_argument("--redo", action="append", default=[], metavar="STAGE",
                        help=f"start STAGE over, and what depends on it (one of {', '.join(REDO_CHOICES)}; "
                             "repeat or comma-separate for several)")
    parser.add_argument("--speed-iters", type=int, nargs=2, default=None, metavar=("WARMUP", "TIMED"),
                        help="speed measurement iterations (default 5 20; --tiny 1 3)")
    parser.add_argument("--teacher-config", default=None, metavar="YAML",
                        help="teacher config (default configs/<dataset>/<detector>_R_50_FPN.yaml)")
    parser.add_argument("--student-config", default=None, metavar="YAML",
                        help="plain student config (default configs/<dataset>/<detector>_R_18_FPN.yaml)")
    parser.add_argument("--tkd-config", default=None, metavar="YAML",
                        help="TKD student config (default configs/<dataset>/tkd_<detector>_R_50_to_R_18.yaml)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides passed to every train_net.py call (last option)")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"--opts takes KEY VALUE pairs, got {args.opts}")
    redo = set()
    for item in args.redo:
        for name in filter(None, (x.strip() for x in item.split(","))):
            if name not in REDO_CHOICES:
                parser.error(f"--redo {name}: choose from {', '.join(REDO_CHOICES)}")
            if name == "all":
                redo.update(n for n in STAGES if n not in ("data", "report"))
            elif name == "eval":
                redo.update(f"eval_{m}" for m in MODELS)
            else:
                redo.add(name)
    args.redo = redo
    if args.num_images < 0:
        parser.error("--num-images must be >= 0")
    if args.max_iter is not None and args.max_iter < 1:
        parser.error("--max-iter must be >= 1")
    if args.tiny and args.max_iter is None:
        args.max_iter = TINY_MAX_ITER
    if args.speed_iters is None:
        args.speed_iters = list(TINY_SPEED) if args.tiny else [5, 20]
    if args.speed_iters[1] < 1 or args.speed_iters[0] < 0:
        parser.error("--speed-iters needs WARMUP >= 0 and TIMED >= 1")
    if args.output is None:
        args.output = os.path.join("output", f"pipeline_{args.dataset}_{args.detector}")
    args.output = os.path.abspath(args.output)
    return args


# ------------------------------------------------------------------------------ helpers
def now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def shown_path(path):
    """``path`` relative to the project root when inside it (train_net runs from there)."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel


def command_text(cmd):
    return shlex.join([shown_path(c) if os.path.isabs(c) and c.startswith(REPO) else c for c in cmd])


def atomic_write_json(path, data):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def read_yaml_cfg(path):
    """A project config from ``path`` alone (no overrides, no dataset registration)."""
    from detectron2.config import get_cfg

    from tkd_d2 import add_tkd_config

    cfg = get_cfg()
    add_tkd_config(cfg)
    cfg.merge_from_file(path)
    return cfg


def schedule_opts(cfg, max_iter, tkd=False):
    """Overrides that train ``cfg`` for ``max_iter`` iterations with its schedule scaled."""
    base = max(1, int(cfg.SOLVER.MAX_ITER))
    scale = max_iter / base
    steps = sorted({max(1, int(round(s * scale))) for s in cfg.SOLVER.STEPS})
    steps = [s for s in steps if s < max_iter]
    opts = [
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.STEPS", "(" + "".join(f"{s}," for s in steps) + ")",
        "SOLVER.WARMUP_ITERS", str(min(max_iter, int(round(cfg.SOLVER.WARMUP_ITERS * scale)))),
    ]
    if tkd:
        opts += ["MODEL.TKD.WARMUP_ITERS", str(int(round(cfg.MODEL.TKD.WARMUP_ITERS * scale)))]
    return opts


class Status:
    """``stages.json``: per stage its status, wall time, command and settings."""

    def __init__(self, path):
        self.path = path
        self.data = {"version": 1, "stages": {}}
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    self.data = json.load(f)
                self.data.setdefault("stages", {})
            except (OSError, json.JSONDecodeError):
                print(f"warning: {path} is unreadable; stage times of earlier runs are lost",
                      flush=True)

    def get(self, name):
        return self.data["stages"].get(name, {})

    def update(self, name, **fields):
        self.data["stages"].setdefault(name, {}).update(fields)
        self.save()

    def forget(self, name):
        self.data["stages"].pop(name, None)
        self.save()

    def save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write_json(self.path, self.data)


# ------------------------------------------------------------------------------ pipeline
class Pipeline:
    def __init__(self, args):
        self.args = args
        self.out = args.output
        os.makedirs(self.out, exist_ok=True)
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.status = Status(os.path.join(self.out, "stages.json"))
        self.ran = set()  # stages executed (not reused) by this invocation
        config_dir = os.path.join(REPO, "configs", CONFIG_DIRS[args.dataset])
        names = CONFIG_NAMES[args.detector]
        given = (args.teacher_config, args.student_config, args.tkd_config)
        self.configs = {}
        for key, name, path in zip(MODELS, names, given):
            path = os.path.abspath(path) if path else os.path.join(config_dir, name + ".yaml")
            if not os.path.isfile(path):
                raise StageError(f"config file not found: {path}")
            self.configs[key] = path
        self.dirs = {m: os.path.join(self.out, m) for m in MODELS}
        self.weights = {m: os.path.join(self.dirs[m], "model_final.pth") for m in MODELS}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["DETECTRON2_DATASETS"] = os.environ["DETECTRON2_DATASETS"]
        self._prepare_opts()

    # ---------------------------------------------------------------- settings
    def _prepare_opts(self):
        args = self.args
        yaml = {}
        for m in MODELS:
            try:
                yaml[m] = read_yaml_cfg(self.configs[m])
            except Exception as e:
                raise StageError(f"cannot read config {self.configs[m]}: {type(e).__name__}: {e}") from e
        for key, cfg in yaml.items():  # fail before hours of training, not after
            arch = cfg.MODEL.META_ARCHITECTURE
            if key == "tkd" and arch != "TKDDistiller":
                raise StageError(f"--tkd-config {self.configs[key]} is a {arch}, not a TKDDistiller config")
            if key != "tkd" and arch == "TKDDistiller":
                raise StageError(f"{self.configs[key]} is a TKD config; the {key} needs a plain detector config")
        seed = args.seed
        if seed is None:
            seed = yaml["baseline"].SEED if yaml["baseline"].SEED >= 0 else 0
        self.common = list(TINY_OPTS) if args.tiny else []
        self.train_opts = {}
        for m in MODELS:
            sched = schedule_opts(yaml[m], args.max_iter, tkd=m == "tkd") if args.max_iter else []
            # No end-of-training evaluation: stage 4 evaluates every model the same way.
            self.train_opts[m] = (self.common + sched + ["SEED", str(seed), "DATASETS.TEST", "()"]
                                  + list(args.opts))
        self.eval_opts = self.common + list(args.opts)
        # depth (labels) and iterations (report) as each model trains: config + overrides
        self.depth, self.iters = {}, {}
        for m in MODELS:
            shown = yaml[m].clone()
            try:  # a bad key in --opts is reported by stage 1
                shown.merge_from_list(list(self.train_opts[m]))
            except Exception:
                pass
            self.depth[m] = shown.MODEL.RESNETS.DEPTH
            self.iters[m] = shown.SOLVER.MAX_ITER

    def label(self, key):
        det = DETECTOR_NAMES[self.args.detector]
        return {
            "teacher": f"teacher ({det} R-{self.depth['teacher']})",
            "baseline": f"baseline student ({det} R-{self.depth['baseline']})",
            "tkd": f"TKD student ({det} R-{self.depth['tkd']})",
        }[key]

    def log_path(self, name):
        return os.path.join(self.logs, f"{name}.log")

    def header(self, name, text):
        print(f"\n[stage {STAGES[name][0]}/{NUM_STAGES}] {text}", flush=True)

    def forced(self, name):
        """Whether ``name`` must run again: --redo, or a stage it depends on was (re)run."""
        if name in self.args.redo:
            return f"--redo {name}"
        for dep in STAGES[name][1]:
            if dep in self.ran:
                return f"{dep} was run again"
        return None

    def check_settings(self, name, settings):
        recorded = self.status.get(name).get("settings")
        if recorded is not None and recorded != settings:
            old, new = recorded, settings
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise SettingsChanged(
                f"stage {name} in {self.out} ran with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]} then, {[new.get(k) for k in diff]} now). "
                f"Pass --redo {name} to run it again with the new settings, or choose another --output."
            )

    def remove(self, path):
        path = os.path.abspath(path)
        if not path.startswith(self.out + os.sep):
            raise RuntimeError(f"refusing to delete {path}: outside {self.out}")
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    # ---------------------------------------------------------------- subprocesses
    def run_command(self, name, cmd):
        """Run ``cmd`` from the project root, streaming its output to the console and to
        the stage's log; raise :class:`StageError` if it fails."""
        log_path = self.log_path(name)
        text = command_text(cmd)
        print(f"$ {text}", flush=True)
        with open(log_path, "a") as log:
            log.write(f"\n[{now()}] $ {text}\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            try:
                for line in iter(proc.stdout.readline, b""):
                    line = line.decode("utf-8", errors="replace")
                    sys.stdout.write(line)
                    sys.stdout.flush()
                    log.write(line)
                code = proc.wait()
            except BaseException:
                # Ctrl-C reaches the child too and it stops by itself; otherwise stop it.
                for stop, grace in ((None, 5), (proc.terminate, 10), (proc.kill, None)):
                    if stop is not None:
                        stop()
                    try:
                        proc.wait(timeout=grace)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                raise
        if code != 0:
            raise StageError(
                f"stage {STAGES[name][0]}/{NUM_STAGES} ({name}) failed: train_net.py exited with "
                f"code {code}. Log: {log_path}"
            )

    def timed(self, name, func, resumed=False):
        """Run ``func()``; record the stage's wall time (added to the interrupted attempt's
        when ``resumed``) and status in stages.json."""
        previous = self.status.get(name).get("seconds", 0.0) if resumed else 0.0
        self.status.update(name, status="running", started=now(), log=os.path.relpath(self.log_path(name), self.out))
        start = time.perf_counter()
        try:
            result = func()
        except KeyboardInterrupt:
            self.status.update(name, status="interrupted", seconds=previous + time.perf_counter() - start)
            raise
        except BaseException:
            self.status.update(name, status="failed", seconds=previous + time.perf_counter() - start)
            raise
        seconds = previous + time.perf_counter() - start
        self.status.update(name, status="done", seconds=seconds, finished=now(), resumed=bool(resumed))
        self.ran.add(name)
        return result

    def in_process(self, name, func):
        """Run an in-process stage; on error write the traceback to its log and raise a
        :class:`StageError` naming the stage and the log."""
        try:
            return func()
        except (StageError, SettingsChanged, KeyboardInterrupt):
            raise
        except Exception as e:
            log_path = self.log_path(name)
            with open(log_path, "a") as log:
                log.write(f"\n[{now()}] stage {name} failed:\n{traceback.format_exc()}")
            # The project's own errors explain themselves; others are named by their type.
            kind = "" if type(e).__name__ in USER_ERRORS else f"{type(e).__name__}: "
            raise StageError(
                f"stage {STAGES[name][0]}/{NUM_STAGES} ({name}) failed: {kind}{str(e).rstrip('.')}. "
                f"Log: {log_path}"
            ) from e

    def train_net(self, *args):
        return [sys.executable, os.path.join(REPO, "train_net.py"), *args]

    # ---------------------------------------------------------------- stage 1
    def stage_data(self):
        self.header("data", f"preparing the {self.args.dataset} dataset")

        def run():
            from detectron2.data import DatasetCatalog, MetadataCatalog

            from tkd_d2.visualization import load_config

            cfg = load_config(self.configs["teacher"], self.eval_opts)
            self.test_dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
            if not self.test_dataset:
                raise StageError(f"{self.configs['teacher']} has no DATASETS.TEST to evaluate on")
            generated = False
            for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
                folder = MetadataCatalog.get(name).get("dirname", None)
                params = MetadataCatalog.get(name).get("synthetic_params", None)
                cached = params is None or os.path.isfile(os.path.join(folder, "DONE"))
                start = time.perf_counter()
                dicts = DatasetCatalog.get(name)
                what = "generated" if not cached else ("reused cached" if params else "read")
                generated |= not cached
                print(f"  {name}: {len(dicts)} images ({what}, {folder}) "
                      f"in {time.perf_counter() - start:.1f} s", flush=True)
            return generated

        start = time.perf_counter()
        try:
            generated = self.in_process("data", run)
        except StageError:
            self.status.update("data", status="failed", log=os.path.relpath(self.log_path("data"), self.out))
            raise
        if generated or self.status.get("data").get("status") != "done":
            self.status.update("data", status="done", seconds=time.perf_counter() - start,
                               finished=now(), note="generated" if generated else "already cached")

    # ---------------------------------------------------------------- stages 2-3
    def stage_train(self, key):
        name = key
        out_dir = self.dirs[key]
        titles = {
            "teacher": f"training teacher: {self.label('teacher')}",
            "baseline": f"training baseline student (no KD): {self.label('baseline')}",
            "tkd": f"training TKD student: {self.label('teacher')} -> {self.label('tkd')}",
        }
        self.header(name, titles[key])
        opts = list(self.train_opts[key])
        if key == "tkd":
            opts += ["MODEL.TKD.TEACHER.CONFIG", self.configs["teacher"],
                     "MODEL.TKD.TEACHER.WEIGHTS", self.weights["teacher"]]
        opts += ["OUTPUT_DIR", out_dir]
        settings = {"config": self.configs[key], "opts": opts}
        reason = self.forced(name)
        if reason and os.path.exists(out_dir):
            print(f"  starting over ({reason}): removing {out_dir}", flush=True)
            self.remove(out_dir)
            self.status.forget(name)
        if os.path.isfile(self.weights[key]):
            self.check_settings(name, settings)
            print(f"  done before: {self.weights[key]} (reused; --redo {name} to train again)",
                  flush=True)
            return
        resume = os.path.isfile(os.path.join(out_dir, "last_checkpoint"))
        if resume:
            self.check_settings(name, settings)
            print(f"  resuming the interrupted training in {out_dir}", flush=True)
        elif os.path.exists(os.path.join(out_dir, "metrics.json")):
            # Nothing of an attempt without a checkpoint survives; neither should its curves.
            self.remove(os.path.join(out_dir, "metrics.json"))
        self.status.update(name, settings=settings)
        cmd = self.train_net("--config-file", self.configs[key], *(["--resume"] if resume else []), *opts)
        self.status.update(name, command=command_text(cmd))

        def run():
            self.run_command(name, cmd)
            if not os.path.isfile(self.weights[key]):
                raise StageError(
                    f"stage {STAGES[name][0]}/{NUM_STAGES} ({name}): train_net.py finished but "
                    f"wrote no {self.weights[key]}. Log: {self.log_path(name)}"
                )

        self.timed(name, run, resumed=resume)

    # ---------------------------------------------------------------- stage 4
    def ap_results_path(self, key):
        return os.path.join(self.out, f"eval_{key}", "inference", self.test_dataset, "ap_results.json")

    def stage_eval(self, key):
        name = f"eval_{key}"
        self.header(name, f"evaluating {self.label(key)} on {self.test_dataset}")
        out_dir = os.path.join(self.out, name)
        config = self.configs["baseline" if key == "tkd" else key]  # TKD: plain student config
        opts = self.eval_opts + ["MODEL.WEIGHTS", self.weights[key], "OUTPUT_DIR", out_dir]
        settings = {"config": config, "opts": opts}
        results = self.ap_results_path(key)
        reason = self.forced(name)
        if not reason and os.path.isfile(results):
            if os.path.getmtime(results) < os.path.getmtime(self.weights[key]):
                reason = f"{self.weights[key]} is newer than the results"
        if reason and os.path.exists(out_dir):
            print(f"  evaluating again ({reason})", flush=True)
            self.remove(out_dir)
            self.status.forget(name)
        if os.path.isfile(results):
            self.check_settings(name, settings)
            print(f"  done before: {results} (reused; --redo {name} to evaluate again)", flush=True)
            return
        self.status.update(name, settings=settings)
        cmd = self.train_net("--eval-only", "--config-file", config, *opts)
        self.status.update(name, command=command_text(cmd))

        def run():
            self.run_command(name, cmd)
            if not os.path.isfile(results):
                raise StageError(
                    f"stage {STAGES[name][0]}/{NUM_STAGES} ({name}): train_net.py --eval-only "
                    f"finished but wrote no {results}. Log: {self.log_path(name)}"
                )

        self.timed(name, run)

    # ---------------------------------------------------------------- stage 5
    def stage_pictures(self):
        name = "pictures"
        args = self.args
        self.header(name, f"drawing ground truth | teacher | baseline | TKD on {args.num_images} test image(s)")
        out_dir = os.path.join(self.out, "pictures")
        index_path = os.path.join(out_dir, "pictures.json")
        settings = {"num_images": args.num_images, "score_thresh": args.score_thresh,
                    "opts": self.eval_opts}
        reason = self.forced(name)
        if not reason and os.path.isfile(index_path):
            newest = max(os.path.getmtime(self.weights[m]) for m in MODELS)
            if os.path.getmtime(index_path) < newest:
                reason = "a model is newer than the pictures"
        if not reason and os.path.isfile(index_path):
            try:
                with open(index_path) as f:
                    index = json.load(f)
            except (OSError, json.JSONDecodeError):
                index = {}
            pictures = [os.path.join(out_dir, p) for p in index.get("pictures", [])]
            if index.get("settings") != settings:
                reason = "--num-images / --score-thresh changed"
            elif all(os.path.isfile(p) for p in pictures):
                print(f"  done before: {len(pictures)} pictures in {out_dir} (reused)", flush=True)
                self.pictures = pictures
                return
        if os.path.exists(out_dir):
            self.remove(out_dir)
            self.status.forget(name)

        def run():
            self.pictures = self.in_process(name, lambda: self._draw_pictures(out_dir, index_path, settings))

        self.timed(name, run)

    def _draw_pictures(self, out_dir, index_path, settings):
        import numpy as np
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from tkd_d2.visualization import (
            Predictor, class_metadata, draw_ground_truth, draw_predictions, load_config,
            read_image, save_png, side_by_side,
        )

        os.makedirs(out_dir, exist_ok=True)
        cfgs = {
            "teacher": load_config(self.configs["teacher"], self.eval_opts),
            "baseline": load_config(self.configs["baseline"], self.eval_opts),
        }
        cfgs["tkd"] = cfgs["baseline"]
        dicts = DatasetCatalog.get(self.test_dataset)
        metadata = class_metadata(MetadataCatalog.get(self.test_dataset).get("thing_classes", None))
        count = min(self.args.num_images, len(dicts))
        picks = sorted({int(i) for i in np.linspace(0, len(dicts) - 1, count)}) if count else []
        predictors = {m: Predictor(cfgs[m], self.weights[m]) for m in MODELS}
        titles = {"teacher": f"teacher R-{self.depth['teacher']}",
                  "baseline": f"baseline R-{self.depth['baseline']}",
                  "tkd": f"TKD R-{self.depth['tkd']}"}
        pictures = []
        for n, i in enumerate(picks):
            d = dicts[i]
            image_bgr = read_image(d["file_name"], format="BGR")
            image_rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
            panels = [("ground truth", draw_ground_truth(image_rgb, d, metadata))]
            for m in MODELS:
                instances = predictors[m](image_bgr)
                panels.append((titles[m], draw_predictions(image_rgb, instances, metadata,
                                                           self.args.score_thresh)))
            stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
            path = save_png(os.path.join(out_dir, f"{n:02d}_{stem}.png"), side_by_side(panels))
            print(f"  {path}", flush=True)
            pictures.append(path)
        atomic_write_json(index_path, {"settings": settings,
                                       "pictures": [os.path.basename(p) for p in pictures]})
        return pictures

    # ---------------------------------------------------------------- stage 6
    def stage_speed(self):
        name = "speed"
        warmup, iters = self.args.speed_iters
        self.header(name, f"measuring parameters and CPU speed (batch 1, {warmup} warm-up + {iters} timed iterations)")
        settings = {"warmup": warmup, "iters": iters, "opts": self.eval_opts}
        reason = self.forced(name)
        recorded = self.status.get(name)
        if not reason and recorded.get("status") == "done" and recorded.get("result"):
            if recorded.get("settings") == settings:
                print("  done before (reused; --redo speed to measure again)", flush=True)
                return
        self.status.forget(name)
        self.status.update(name, settings=settings)

        def run():
            result = self.in_process(name, lambda: self._measure_speed(warmup, iters))
            self.status.update(name, result=result)

        self.timed(name, run)

    def _measure_speed(self, warmup, iters):
        from detectron2.data import DatasetCatalog

        from tkd_d2.report import count_parameters, measure_cpu_speed
        from tkd_d2.visualization import Predictor, load_config, read_image

        dicts = DatasetCatalog.get(self.test_dataset)[: max(1, min(iters, 8))]
        result = {}
        # The TKD student is the student architecture with distilled weights.
        for key, config, weights in (("teacher", self.configs["teacher"], self.weights["teacher"]),
                                     ("student", self.configs["baseline"], self.weights["tkd"])):
            cfg = load_config(config, self.eval_opts, device="cpu")
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

    def stage_report(self):
        name = "report"
        self.header(name, "writing report.md and curves.png")
        from tkd_d2.report import plot_training_curves, write_report

        def run():
            curves = os.path.join(self.out, "curves.png")
            runs = {self.label(m): os.path.join(self.dirs[m], "metrics.json") for m in MODELS}
            plot_training_curves(runs, curves, kd_run=self.label("tkd"))
            speed = self.status.get("speed").get("result")
            speed_section = None
            if speed:
                rows = [
                    dict(label=self.label("teacher"), **{k: speed["teacher"][k] for k in
                         ("params", "images_per_second", "ms_per_image")}),
                    dict(label=f"student R-{self.depth['tkd']} (baseline and TKD: same network)",
                         **{k: speed["student"][k] for k in ("params", "images_per_second", "ms_per_image")}),
                ]
                s = speed["student"]
                sizes = ", ".join("x".join(map(str, hw)) for hw in s["input_sizes"])
                speed_section = {"rows": rows, "note": (
                    f"Measured on this machine's CPU, batch 1, {s['warmup']} warm-up + {s['iters']} "
                    f"timed iterations over test images (input {sizes} px after resizing, whole "
                    f"forward pass including post-processing), {s['threads']} torch threads; "
                    "images/s and ms/image from the median iteration. Other processes on the "
                    "machine affect the numbers."
                )}
            stages = []
            labels = {"data": "1 data", "teacher": "2 train teacher", "baseline": "3 train baseline student",
                      "tkd": "3 train TKD student", "eval_teacher": "4 evaluate teacher",
                      "eval_baseline": "4 evaluate baseline", "eval_tkd": "4 evaluate TKD student",
                      "pictures": "5 pictures", "speed": "6 speed"}
            for stage, label in labels.items():
                st = self.status.get(stage)
                note = st.get("note", "")
                if stage not in self.ran and st.get("status") == "done" and stage != "data":
                    note = "reused from an earlier run"
                if st.get("resumed"):
                    note = (note + "; " if note else "") + "resumed after an interruption (time summed)"
                stages.append({"label": label, "seconds": st.get("seconds"),
                               "status": st.get("status", "not recorded"), "note": note})
            commands = [(stage, self.status.get(stage)["command"])
                        for stage in ("teacher", "baseline", "tkd", "eval_teacher", "eval_baseline", "eval_tkd")
                        if self.status.get(stage).get("command")]
            a = self.args
            intro = [
                f"{DETECTOR_NAMES[a.detector]} on `{a.dataset}`: a R-{self.depth['teacher']} teacher, "
                f"a R-{self.depth['baseline']} student trained alone (baseline) and the same student "
                "trained with Triple Knowledge Distillation (TKD) from the teacher, same schedule "
                f"({self.iters['tkd']} iterations) and seed; the teacher trained "
                f"{self.iters['teacher']} iterations.",
                "",
                f"Written by `tools/tkd_pipeline.py` on {now()}. Configs: "
                + ", ".join(f"`{shown_path(self.configs[m])}`" for m in MODELS)
                + (f"; overrides: `{' '.join(self.train_opts['baseline'])}`" if self.train_opts["baseline"] else "")
                + ".",
            ]
            pictures = getattr(self, "pictures", [])
            summary = {
                "title": f"TKD report: {DETECTOR_NAMES[a.detector]} R-{self.depth['teacher']} -> "
                         f"R-{self.depth['tkd']} on {a.dataset}",
                "intro": intro,
                "dataset": self.test_dataset,
                "models": [{"key": m, "label": self.label(m), "ap_results": self.ap_results_path(m)}
                           for m in MODELS],
                "speed": speed_section,
                "stages": stages,
                "curves": curves,
                "pictures": pictures,
                "pictures_note": f"Each picture: ground truth | teacher | baseline | TKD student "
                                 f"(boxes scoring at least {a.score_thresh:g}).",
                "commands": commands,
            }
            path = os.path.join(self.out, "report.md")
            write_report(path, summary)
            return path

        path = self.in_process(name, run)
        print(f"  {path}\n  {os.path.join(self.out, 'curves.png')}", flush=True)
        return path

    # ---------------------------------------------------------------- all
    def run(self):
        a = self.args
        print(f"TKD pipeline: {a.dataset} / {a.detector} -> {self.out}", flush=True)
        if a.redo:
            print(f"redo: {', '.join(sorted(a.redo))}", flush=True)
        self.stage_data()
        for key in MODELS:
            self.stage_train(key)
        for key in MODELS:
            self.stage_eval(key)
        self.stage_pictures()
        self.stage_speed()
        report = self.stage_report()
        print(f"\nDone. Report: {report}", flush=True)


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv)
    # A `kill` is handled like Ctrl-C: the running stage is recorded as interrupted (with
    # its time so far) and its train_net.py is stopped.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    # One dataset root for this process and every train_net.py it starts (they run from
    # the project root, so a relative root would point elsewhere).
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(
        os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    )
    try:
        import tkd_d2  # noqa: F401  (detectron2 compatibility + registrations)
    except ImportError as e:
        print(f"tkd_pipeline.py: error: cannot import tkd_d2 ({type(e).__name__}: {e}). "
              f"Install the project (see setup.sh) and run with its Python.", file=sys.stderr)
        return 1
    try:
        Pipeline(args).run()
    except (StageError, SettingsChanged) as e:
        print(f"\ntkd_pipeline.py: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ntkd_pipeline.py: interrupted. Run the same command again to resume "
              "(finished stages are reused, training continues from its last checkpoint).",
              file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
