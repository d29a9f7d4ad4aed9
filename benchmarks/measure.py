"""Run a command and record its wall time and peak memory (summed RSS of its whole process tree).

Worker pools matter here: the peak of the tree, polled from /proc, is what a machine must hold.
"""
import os
import subprocess
import time
from pathlib import Path


def _children(pid):
    kids = []
    try:  # processes come and go while we look
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


def _tree_rss_bytes(root):
    total, stack = 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError):
            continue
        stack += _children(pid)
    return total


def run_measured(cmd, env=None, poll_s=0.02):
    """Returns (seconds, peak_MiB, CompletedProcess-like returncode, output)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_bytes(proc.pid))
        time.sleep(poll_s)
    out = proc.stdout.read()
    seconds = time.perf_counter() - start
    return seconds, peak / 2**20, proc.returncode, out
