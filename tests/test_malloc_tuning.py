"""The allocator tuning that every command applies (samunet/malloc_tuning.py)."""
import os
import platform
import subprocess
import sys

import pytest

from samunet.malloc_tuning import USER_SETTINGS

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")

# Activation-sized arrays allocated and freed over and over, as a forward pass does; prints the page
# faults of the repeated part (each fault: a page the kernel had to zero-fill again).
WORKLOAD = """
import resource, sys
from samunet.malloc_tuning import tune_malloc
print(tune_malloc() if sys.argv[1] == "tune" else None)
import numpy as np

def work():
    x = np.ones((4, 64, 128, 128), np.float32)
    for _ in range(3):
        x = x + (np.exp(x) * 2).sum(axis=1)[:, None] * 0.0

work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    work()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run_workload(mode, **env):
    clean = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_tuned_process_reuses_freed_memory_instead_of_faulting_it_in_again():
    applied, tuned_faults = run_workload("tune")
    _, default_faults = run_workload("default")
    assert applied == "True"
    assert default_faults > 2000  # the problem exists with glibc's defaults ...
    assert tuned_faults < default_faults / 20  # ... and the tuning removes it


def test_a_users_own_malloc_settings_are_left_alone():
    applied, _ = run_workload("tune", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
