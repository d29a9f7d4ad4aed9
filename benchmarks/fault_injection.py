"""The fault catalogue: every class of fault, concurrency and hostile-input check, run as one report.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/fault_injection.py

The checks live in the test suite (tests/test_reliability.py: one test per class of failure, with
SIGKILL, fake full disks, read-only folders, two processes at once, hostile dataset.json paths;
tests/test_bad_input.py: every kind of bad raw data, on the default path and under
--verify_dataset_integrity), so CI runs them on every change; this script runs exactly those and prints
"N checks, N passed" with the name of each failure. Goal: every check passes, nothing lost, no traceback.
"""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = ["tests/test_reliability.py", "tests/test_bad_input.py"]


class Tally:
    def __init__(self):
        self.passed, self.failed = [], []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            (self.passed if report.outcome == "passed" else self.failed).append(report.nodeid)


def main():
    tally = Tally()
    pytest.main(["-q", "-p", "no:cacheprovider", *[str(REPO / c) for c in CATALOGUE]], plugins=[tally])
    total = len(tally.passed) + len(tally.failed)
    for nodeid in tally.failed:
        print(f"FAILED {nodeid}")
    print(f"{total} checks, {len(tally.passed)} passed")
    return 0 if not tally.failed else 1


if __name__ == "__main__":
    sys.exit(main())
