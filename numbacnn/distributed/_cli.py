"""``numbacnn train --distributed``: the command on every rank, its output on rank 0 only, and
an error on any rank ending the whole job.

The ``numbacnn`` command turns errors into one line and an exit status; a rank that simply
returned would leave the others waiting forever in their next collective, so here the error is
printed (one line for the CLI's user errors, a traceback for anything else, both naming the
rank) and the job is aborted with that status.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

# What numbacnn.cli.main prints as one line (the rest are bugs, shown with their traceback).
_USER_ERRORS = (OSError, ValueError, TypeError, LookupError, ImportError, RuntimeError, FloatingPointError)


def run(command: Callable[[Any], int], args: Any) -> int:
    """``command(args)`` as one rank of a job; rank 0 alone writes to stdout."""
    from ..cli._errors import CliError
    from ._comm import abort, init

    comm = init()
    if comm.size == 1:
        return command(args)
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")  # the header, progress and result lines: once, from rank 0
    try:
        return command(args)
    except BaseException as e:  # noqa: BLE001  (every way out of a rank must end the job)
        if isinstance(e, SystemExit) and not e.code:
            raise
        who = f"rank {comm.rank} of {comm.size}"
        if isinstance(e, KeyboardInterrupt):
            code = 130
            print(f"error: interrupted ({who}); stopping every rank", file=sys.stderr)
        elif isinstance(e, (CliError, *_USER_ERRORS)):
            code = 2 if isinstance(e, CliError) else 1
            print(f"error: {e} ({who}; stopping every rank)", file=sys.stderr)
        else:
            code = 1
            traceback.print_exc()
            print(f"error: {who} failed; stopping every rank", file=sys.stderr)
        abort(code)
        raise  # not reached: abort ends the process
