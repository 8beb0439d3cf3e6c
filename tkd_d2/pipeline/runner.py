"""The stage model: what a stage is (:class:`Stage`, a row of a stage table), what one run of it
does (:class:`Job`: settings, outputs, inputs, a command or a computation), and the one
machine that runs jobs (:class:`StageRunner`).

The one reuse rule (:meth:`StageRunner.execute`): a job whose outputs are all present, no
older than its input files, and whose settings equal those recorded in ``stages.json`` is
reused; ``--redo`` and a rerun of a stage it depends on make it run again. Outputs made with
other settings are remade, unless the stage is ``precious`` (a training, an evaluation):
then the runner stops and asks for ``--redo`` rather than discard hours of work. An
interrupted job with a checkpoint continues from it.

The runner records every stage's status, wall time, command, settings (and an in-process
job's result) in ``stages.json`` (:class:`Status`), runs commands with their output streamed
to the console and to ``logs/<stage>.log``, and turns a failure into a one-line
:class:`StageError` that names the stage and its log.
"""
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

from ..errors import TKDError
from ..fileio import atomic_write_json

__all__ = ["Job", "Stage", "StageRunner", "Status", "StageError", "SettingsChanged", "now"]


class StageError(TKDError, RuntimeError):
    """A stage failed; the message names the stage and where its log is."""


class SettingsChanged(TKDError, RuntimeError):
    """A finished (or interrupted) stage ran with other settings than this command's."""


class Stage(NamedTuple):
    """What a stage is, whatever the run: one row of a stage table ({name: Stage})."""

    number: int  # shown as "[stage number/total]"; several stages may share one
    depends_on: Tuple[str, ...] = ()  # its input stages: their rerun makes this one run again
    label: Optional[str] = None  # its row in the report's wall-time table (None: no row)
    again: str = "run again"  # what --redo does to it, as the reuse message says
    redo: bool = True  # a --redo choice
    command: bool = False  # runs the training entry; the report lists the command
    precious: bool = False  # costly outputs: other settings stop the run instead of remaking them


@dataclasses.dataclass
class Job:
    """One run of a stage: its header, settings, outputs and inputs, and how it runs (a
    ``command`` in a subprocess, or a ``compute`` in this process whose result is recorded)."""

    name: str
    title: str  # the "[stage k/N] title" header
    settings: dict  # recorded in stages.json; other settings: remade (or stopped, if precious)
    outputs: Sequence[str] = ()  # files that are there when the job is done
    newer_than: Sequence[str] = ()  # input files: outputs older than one of them are stale
    workdir: Optional[str] = None  # deleted when the job starts over
    command: Optional[Sequence[str]] = None
    compute: Optional[Callable[[], Any]] = None
    record_result: bool = False  # compute's result is an output too (kept in stages.json)
    checkpoint: Optional[str] = None  # left by an interrupted run: resume_command continues it
    resume_command: Optional[Sequence[str]] = None
    leftovers: Sequence[str] = ()  # deleted before a fresh start (an attempt's partial files)
    precondition: Optional[Callable[[], None]] = None  # raises when the job cannot run yet
    reused_text: Optional[str] = None  # "done before: <this>" (default: the first output)
    # what of the settings the reuse rule compares (default: all of them)
    settings_key: Optional[Callable[[dict], Any]] = None

    def same_settings(self, recorded):
        """Whether ``recorded`` settings (stages.json) stand for this job's."""
        key = self.settings_key or (lambda settings: settings)
        return recorded is not None and key(recorded) == key(self.settings)


def now():
    """The local time, to the second, as ISO 8601 text."""
    return datetime.datetime.now().isoformat(timespec="seconds")


class Status:
    """``stages.json``: per stage its status, wall time, command and settings."""

    def __init__(self, path):
        self.path = path  # None: kept in memory only
        self.data = {"version": 1, "stages": {}}
        if path and os.path.isfile(path):
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
        if not self.path:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write_json(self.path, self.data)


class StageRunner:
    """Runs and records the ``stages`` ({name: :class:`Stage`}) of one output folder.

    ``out_dir`` holds ``stages.json`` and ``logs/``; commands run from ``cwd`` with ``env``;
    ``redo`` names the stages to start over. ``log_file``: one log for every stage instead of
    ``logs/<stage>.log``; ``status_file=None`` keeps the status in memory; ``echo=False``
    writes commands' output to the log only, and prints no headers or reuse lines.
    """

    def __init__(self, out_dir, stages, *, cwd, env=None, redo=(), log_file=None,
                 status_file="stages.json", echo=True):
        self.out = os.path.abspath(out_dir)
        self.stages = dict(stages)
        self.total = max(stage.number for stage in self.stages.values())
        self.cwd = os.path.abspath(cwd)
        self.env = dict(os.environ if env is None else env)
        self.redo = set(redo)
        self.echo = echo
        self.log_file = log_file
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(os.path.dirname(log_file) if log_file else self.logs, exist_ok=True)
        self.status = Status(os.path.join(self.out, status_file) if status_file else None)
        self.ran = set()  # stages executed (not reused) by this runner

    # ---------------------------------------------------------------- naming
    def describe(self, name):
        """``stage k/N (name)``, as failure messages name a stage."""
        return f"stage {self.stages[name].number}/{self.total} ({name})"

    def header(self, name, text):
        self.say(f"\n[stage {self.stages[name].number}/{self.total}] {text}")

    def say(self, text):
        if self.echo:
            print(text, flush=True)

    def log_path(self, name):
        return self.log_file or os.path.join(self.logs, f"{name}.log")

    def shown_path(self, path):
        """``path`` relative to ``cwd`` when inside it (commands run from there)."""
        path = os.path.abspath(path)
        rel = os.path.relpath(path, self.cwd)
        return path if rel.startswith("..") else rel

    def command_text(self, cmd):
        return shlex.join([self.shown_path(c) if os.path.isabs(c) and c.startswith(self.cwd) else c
                           for c in cmd])

    # ---------------------------------------------------------------- reuse
    def execute(self, job):
        """Run ``job`` (a :class:`Job` of a stage in the table) unless the one reuse rule
        says its outputs stand; returns whether it ran."""
        name, stage = job.name, self.stages[job.name]
        self.header(name, job.title)
        reason = self.forced(name) or self.stale(job)
        if not reason and self.outputs_present(job):
            recorded = self.status.get(name).get("settings")
            if job.same_settings(recorded) or (recorded is None and stage.precious):
                shown = job.reused_text or (job.outputs[0] if job.outputs else None)
                self.say(f"  done before{': ' + shown if shown else ''} (reused; --redo {name} "
                         f"to {stage.again})")
                return False
            if stage.precious:
                self.check_settings(name, job.settings, job.settings_key)
            reason = "its settings changed"
        if reason and (self.status.get(name) or (job.workdir and os.path.exists(job.workdir))):
            self.say(f"  starting over ({reason})" + (f": removing {job.workdir}" if job.workdir else ""))
        if reason:
            if job.workdir:
                self.remove(job.workdir)
            self.status.forget(name)
        resumed = bool(job.checkpoint) and os.path.isfile(job.checkpoint)
        if resumed:
            self.check_settings(name, job.settings, job.settings_key)
            self.say(f"  resuming the interrupted run in {job.workdir or os.path.dirname(job.checkpoint)}")
        else:
            for path in job.leftovers:
                self.remove(path)
        if job.precondition:
            job.precondition()
        command = job.resume_command if resumed else job.command
        self.status.update(name, settings=job.settings)
        if command:
            self.status.update(name, command=self.command_text(command))

        def work():
            if command:
                self.run_command(name, command)
            result = self.in_process(name, job.compute) if job.compute else None
            missing = [p for p in job.outputs if not os.path.isfile(p)]
            if missing:
                what = self.program(command) if command else "the stage"
                raise StageError(f"{self.describe(name)}: {what} finished but wrote no {missing[0]}. "
                                 f"Log: {self.log_path(name)}")
            if job.record_result:
                self.status.update(name, result=result)
            return result

        self.timed(name, work, resumed=resumed)
        return True

    def outputs_present(self, job):
        if job.record_result and not self.status.get(job.name).get("result"):
            return False
        return all(os.path.isfile(p) for p in job.outputs)

    def stale(self, job):
        """Why ``job``'s outputs are older than its inputs, or None."""
        present = [p for p in job.outputs if os.path.isfile(p)]
        inputs = [p for p in job.newer_than if os.path.isfile(p)]
        if not present or not inputs:
            return None
        newest = max(inputs, key=os.path.getmtime)
        if os.path.getmtime(newest) > min(os.path.getmtime(p) for p in present):
            return f"{newest} is newer than the stage's outputs"
        return None

    def forced(self, name):
        """Why ``name`` must run again (``redo``, or a stage it depends on was run), or None."""
        if name in self.redo:
            return f"--redo {name}"
        for dep in self.stages[name].depends_on:
            if dep in self.ran:
                return f"{dep} was run again"
        return None

    def check_settings(self, name, settings, key=None):
        """Raise :class:`SettingsChanged` if ``name`` was recorded with other ``settings``
        (compared by ``key``, a :attr:`Job.settings_key`, where given)."""
        recorded = self.status.get(name).get("settings")
        key = key or (lambda s: s)
        if recorded is not None and key(recorded) != key(settings):
            old, new = key(recorded), key(settings)
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise SettingsChanged(
                f"stage {name} in {self.out} ran with other settings ({', '.join(diff)}: "
                f"{[old.get(k) for k in diff]} then, {[new.get(k) for k in diff]} now). "
                f"Pass --redo {name} to run it again with the new settings, or choose another --output."
            )

    def remove(self, path):
        """Delete a file or folder inside the output folder (and nothing outside it)."""
        path = os.path.abspath(path)
        if not path.startswith(self.out + os.sep):
            raise RuntimeError(f"refusing to delete {path}: outside {self.out}")
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    @staticmethod
    def program(cmd):
        """How errors name ``cmd``: the module of ``python -m``, the script of ``python
        script.py``, else the executable."""
        if len(cmd) > 2 and cmd[0] == sys.executable and cmd[1] == "-m":
            return f"python -m {cmd[2]}"
        runs_script = len(cmd) > 1 and cmd[0] == sys.executable
        return os.path.basename(cmd[1] if runs_script else cmd[0])

    # ---------------------------------------------------------------- running
    def run_command(self, name, cmd, program=None):
        """Run ``cmd`` from ``cwd``, streaming its output to the console and to the stage's
        log; raise :class:`StageError` if it fails. ``program`` names it in that error
        (default: :meth:`program`). ``echo=False``: the output goes to the log only."""
        program = program or self.program(cmd)
        log_path = self.log_path(name)
        text = self.command_text(cmd)
        print(f"$ {text}", flush=True)
        with open(log_path, "a") as log:
            log.write(f"\n[{now()}] $ {text}\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            try:
                for line in iter(proc.stdout.readline, b""):
                    line = line.decode("utf-8", errors="replace")
                    if self.echo:
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
                f"{self.describe(name)} failed: {program} exited with code {code}. Log: {log_path}"
            )

    def timed(self, name, func, resumed=False):
        """Run ``func()``; record the stage's wall time (added to the interrupted attempt's
        when ``resumed``) and status in stages.json."""
        previous = self.status.get(name).get("seconds", 0.0) if resumed else 0.0
        self.status.update(name, status="running", started=now(),
                           log=os.path.relpath(self.log_path(name), self.out))
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
            kind = "" if isinstance(e, TKDError) else f"{type(e).__name__}: "
            raise StageError(
                f"{self.describe(name)} failed: {kind}{str(e).rstrip('.')}. Log: {log_path}"
            ) from e
