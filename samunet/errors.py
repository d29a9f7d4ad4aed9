"""User-facing errors and the wrapper that turns them into one-line messages."""
import functools
import os
import sys

from samunet.malloc_tuning import tune_malloc


class SamunetError(Exception):
    """A problem with the user's input or environment: shown as one line, never as a traceback."""


def _os_error_line(err):
    """One line for an OSError (permission denied, disk full, read-only folder, ...) naming the path."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


def cli_entry(func):
    """Run a console-script main: user errors and operating-system errors (permissions, a full disk)
    become `prog: error: message` and exit code 2. The process's allocator is tuned first
    (malloc_tuning.py: a CPU-speed matter, not a correctness one)."""

    @functools.wraps(func)
    def wrapper(argv=None):
        prog = os.path.basename(sys.argv[0]) or func.__module__
        tune_malloc()
        try:
            return func(argv)
        except SamunetError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:
            print(f"{prog}: error: {_os_error_line(err)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
