"""``numbacnn warmup``: fill Numba's disk cache ahead of time."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_warmup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=("float32", "float64"),
                   help="the dtypes to compile for (default float32)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default cpu")
    # 'auto' by default: on a quiet 2-core machine 2 workers warmed float32 in 72.2 s against 134.9 s in
    # one process (2026-12-03); warmup() from Python keeps jobs=1 (workers are spawned: scripts need a guard).
    p.add_argument("--jobs", type=_jobs, default="auto", metavar="N",
                   help="worker processes compiling at once (default 'auto': the CPUs here, at most 4; "
                        "1: everything in this process)")
    p.add_argument("--quiet", action="store_true", help="only the final line")


def _jobs(text: str) -> int:
    if text == "auto":
        from .._warmup_jobs import default_jobs

        return default_jobs()
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'auto', found {text!r}")
    return n


def cmd_warmup(args: argparse.Namespace) -> int:
    """Fill Numba's disk cache: every layer, loss, optimizer and zoo model, run once on tiny data."""
    from tqdm import tqdm

    from ..warmup import WarmupItem, warmup

    bar: Any = None
    jobs = args.jobs

    def progress(item: WarmupItem, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # the first item is done: caching and the device were fine
            if not args.quiet:
                on = f", {jobs} processes compiling at once" if jobs > 1 else ""
                print(f"warm-up for {', '.join(args.dtype)} on {args.device}: every layer, loss, optimizer "
                      f"and zoo model runs once on tiny data{on}", flush=True)
            bar = tqdm(total=total, unit="item", desc="warm-up", file=sys.stderr,
                       disable=True if args.quiet else None, dynamic_ncols=True, leave=False)
        if not args.quiet:
            bar.write(f"  {item.line()}", file=sys.stdout)
        bar.set_postfix_str(item.name, refresh=False)
        bar.update(1)

    try:
        report = warmup(dtypes=args.dtype, devices=[args.device], progress=progress, jobs=jobs)
    finally:
        if bar is not None:
            bar.close()
    print(report.summary())
    print(f"Numba cache: {', '.join(report.cache_dirs) or 'none'}")
    return 0
