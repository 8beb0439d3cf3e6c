"""Generic stage machinery: a status file, subprocess stages with a log, timing, reuse checks.

A :class:`StageRunner` knows only the stages it is given (name → :class:`Stage`: its number
and the stages it depends on); what a stage does is up to its caller. It records every
stage's status, wall time, command and settings in ``stages.json`` (:class:`Status`), runs
commands with their output streamed to the console and to ``logs/<stage>.log``, and turns a
failure into a one-line :class:`StageError` that names the stage and its log.
"""
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from typing import NamedTuple, Tuple

from ..errors import TKDError
from ..fileio import atomic_write_json

__all__ = ["Stage", "StageRunner", "Status", "StageError", "SettingsChanged", "now"]


class StageError(TKDError, RuntimeError):
    """A stage failed; the message names the stage and where its log is."""


class SettingsChanged(TKDError, RuntimeError):
    """A finished (or interrupted) stage ran with other settings than this command's."""


class Stage(NamedTuple):
    number: int  # shown as "[stage number/total]"; several stages may share one
    depends_on: Tuple[str, ...] = ()  # stages whose rerun makes this one run again


def now():
    """The local time, to the second, as ISO 8601 text."""
    return datetime.datetime.now().isoformat(timespec="seconds")


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


class StageRunner:
    """Runs and records the ``stages`` ({name: :class:`Stage`}) of one output folder.

    ``out_dir`` holds ``stages.json`` and ``logs/``; commands run from ``cwd`` with ``env``;
    ``redo`` names the stages to start over.
    """

    def __init__(self, out_dir, stages, *, cwd, env=None, redo=()):
        self.out = os.path.abspath(out_dir)
        self.stages = dict(stages)
        self.total = max(stage.number for stage in self.stages.values())
        self.cwd = os.path.abspath(cwd)
        self.env = dict(os.environ if env is None else env)
        self.redo = set(redo)
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.status = Status(os.path.join(self.out, "stages.json"))
        self.ran = set()  # stages executed (not reused) by this runner

    # ---------------------------------------------------------------- naming
    def describe(self, name):
        """``stage k/N (name)``, as failure messages name a stage."""
        return f"stage {self.stages[name].number}/{self.total} ({name})"

    def header(self, name, text):
        print(f"\n[stage {self.stages[name].number}/{self.total}] {text}", flush=True)

    def log_path(self, name):
        return os.path.join(self.logs, f"{name}.log")

    def shown_path(self, path):
        """``path`` relative to ``cwd`` when inside it (commands run from there)."""
        path = os.path.abspath(path)
        rel = os.path.relpath(path, self.cwd)
        return path if rel.startswith("..") else rel

    def command_text(self, cmd):
        return shlex.join([self.shown_path(c) if os.path.isabs(c) and c.startswith(self.cwd) else c
                           for c in cmd])

    # ---------------------------------------------------------------- reuse
    def forced(self, name):
        """Why ``name`` must run again (``redo``, or a stage it depends on was run), or None."""
        if name in self.redo:
            return f"--redo {name}"
        for dep in self.stages[name].depends_on:
            if dep in self.ran:
                return f"{dep} was run again"
        return None

    def check_settings(self, name, settings):
        """Raise :class:`SettingsChanged` if ``name`` was recorded with other ``settings``."""
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
        """Delete a file or folder inside the output folder (and nothing outside it)."""
        path = os.path.abspath(path)
        if not path.startswith(self.out + os.sep):
            raise RuntimeError(f"refusing to delete {path}: outside {self.out}")
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    # ---------------------------------------------------------------- running
    def run_command(self, name, cmd, program=None):
        """Run ``cmd`` from ``cwd``, streaming its output to the console and to the stage's
        log; raise :class:`StageError` if it fails. ``program`` names it in that error
        (default: the script a ``python script.py`` command runs, else the executable)."""
        if program is None:
            runs_script = len(cmd) > 1 and cmd[0] == sys.executable
            program = os.path.basename(cmd[1] if runs_script else cmd[0])
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
