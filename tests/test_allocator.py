"""keep_freed_memory (TKD_D2_MALLOC): once applied, a large tensor freed and allocated again
reuses the process's memory instead of page-faulting fresh pages in; ``default`` keeps
glibc's behaviour; a wrong value is one line naming the variable. Each case runs in its own
process, since malloc's settings belong to the process."""
import os
import subprocess
import sys

import pytest

from tkd_d2.engine import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# Allocates and fills a 64 MiB tensor 10 times (freeing it each time, as a training step frees
# its activations) and prints whether the setting was applied and the page faults of the
# last 8 rounds.
PROBE = """
import resource, torch
ROUNDS = 8
from tkd_d2.engine.allocator import keep_freed_memory
applied = keep_freed_memory()
for _ in range(2):  # the heap settles in its first two rounds
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(ROUNDS):
    torch.empty(16 << 20).fill_(1.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_ROUND = (64 << 20) // 4096


def _probe(value):
    env = dict(os.environ)
    env.pop(allocator.ENV_VAR, None)
    if value is not None:
        env[allocator.ENV_VAR] = value
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    return done


def test_kept_memory_is_reused_without_page_faults():
    done = _probe(None)
    assert done.returncode == 0, done.stderr
    applied, faults = done.stdout.split()
    assert applied == "True"
    # fresh mmap'd memory would fault 16,384 pages in each of the 8 rounds; kept memory faults
    # in none of most runs' rounds, in one or two of a few (the heap settling late)
    assert int(faults) < 3 * PAGES_PER_ROUND, faults


def test_default_keeps_glibc_behaviour():
    done = _probe("default")
    assert done.returncode == 0, done.stderr
    applied, faults = done.stdout.split()
    assert applied == "False"
    # the fresh mapping of each round is faulted in again: the contrast the setting removes
    assert int(faults) >= 8 * PAGES_PER_ROUND * 0.95, faults


def test_bad_value_is_one_line_naming_the_variable():
    done = _probe("jemalloc")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert allocator.ENV_VAR in last and "'jemalloc'" in last and "default" in last
