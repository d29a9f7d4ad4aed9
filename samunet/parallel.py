"""One way to run a per-case function over many cases: in a process pool, with a progress bar."""
import multiprocessing

from tqdm import tqdm

from samunet.cli_types import int_at_least


def map_with_progress(func, jobs, num_processes=1, desc=None):
    """`[func(job) for job in jobs]` in order, in `num_processes` worker processes, showing progress.

    A SamunetError raised in a worker reaches the caller unchanged (it pickles), so the command still
    prints it as one line.
    """
    jobs = list(jobs)
    if num_processes <= 1 or len(jobs) <= 1:
        return [func(job) for job in tqdm(jobs, desc=desc, leave=False)]
    with multiprocessing.get_context("fork").Pool(min(num_processes, len(jobs))) as pool:
        return list(tqdm(pool.imap(func, jobs), total=len(jobs), desc=desc, leave=False))


def add_num_processes_argument(parser, default=4):
    parser.add_argument("-np", type=int_at_least(1), default=default, help=f"worker processes (default {default})")
