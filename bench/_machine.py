"""The machine's state around a benchmark run (bench/report.py): other processes' CPU use, and
whether its CPUs ran as separate cores. Linux /proc/stat; None where it cannot be read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def _cpu_busy_s() -> float | None:
    """Seconds of CPU the whole machine has spent busy (Linux /proc/stat), None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource  # POSIX only: conftest imports this module on every platform

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(json_path: Path, threads: int, pytest_args: list[str], wait_cores: float = 0.0,
              tests: tuple[str, ...] = ("bench",)) -> tuple[int, float | None]:
    """Run pytest on ``tests`` (the suite, or some of its node ids); returns its exit status and
    the share of the machine's CPU that other processes used meanwhile (None where it cannot be
    read). Each timed row first waits up to ``wait_cores`` seconds for the CPUs to run as
    separate cores (bench/conftest.py)."""
    env = dict(os.environ, NUMBACNN_BENCH_THREADS=str(threads), NUMBACNN_BENCH_WAIT_CORES=str(wait_cores))
    cmd = [sys.executable, "-m", "pytest", *tests, f"--benchmark-json={json_path}", "-p", "no:cacheprovider",
           *pytest_args]
    print("$", " ".join(cmd), flush=True)
    busy, ours, start = _cpu_busy_s(), _children_cpu_s(), time.monotonic()
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    after = _cpu_busy_s()
    if busy is None or after is None:
        return rc, None
    # On a machine as small as 2 cores, any other load stalls every 2-thread parallel region.
    others = max(0.0, (after - busy) - (_children_cpu_s() - ours))
    return rc, others / ((time.monotonic() - start) * (os.cpu_count() or 1))


def thread_speedup(threads: int, seconds: float = 0.3) -> float | None:
    """How many times faster ``threads`` BLAS threads run a float32 matmul than one, now. On
    this project's 2-CPU virtual machines the host sometimes runs both CPUs on one core for
    minutes: two threads then run no faster than one (a batch-1 resnet_bottleneck took 2.4-2.8
    ms against 1.31-1.39 ms, with 1.76-1.87 ms on one thread either way; the matmul's speedup
    read 1.58-1.61 around such spells, 1.98-2.04 otherwise), which the other-CPU share cannot
    see. None for one thread or without threadpoolctl."""

    def rate(a: Any) -> float:  # products a second
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ a
            count += 1
        return count / (time.perf_counter() - start)

    return _speedup(threads, 768, rate)


def _speedup(threads: int, size: int, speed: Callable[[Any], float]) -> float | None:
    """``speed`` of a size x size float32 matmul on ``threads`` BLAS threads over its speed on
    one (each after one product to warm up); None for one thread or without threadpoolctl."""
    try:
        import numpy as np
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    if threads < 2:
        return None
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)

    def on(n: int) -> float:
        with threadpool_limits(n, user_api="blas"):
            a @ a
            return speed(a)

    return on(threads) / on(1)


# Where a timed row's quick_speedup readings must reach to count as separate cores, whatever the
# thread count (a 10 ms product does not scale to more threads; 1.5x says at least two cores).
# Two BLAS threads multiplied a 256x256 float32 matrix 1.7-1.8x faster than one on this
# project's 2-CPU machines, and 1.1-1.2x while the host ran both CPUs on one core (180-185
# against 262-280 us, one thread 320 us either way; 2026-12-07, Zen 4). In those spells
# resnet_bottleneck's training step took 120-134 ms against 94-98, PyTorch's 135-160 against
# 124-134: the ratio read 1.06-1.22x instead of 1.30-1.41x.
SEPARATE = 1.5


def separate(speedup: float | None) -> bool:
    """Whether a quick_speedup reading says the threads ran on separate cores (None: no reading)."""
    return speedup is not None and speedup >= SEPARATE


def quick_speedup(threads: int, size: int = 256, reps: int = 12) -> float | None:
    """thread_speedup in about 10 ms, for a reading before and after every timed row: the best
    of ``reps`` size x size float32 products on ``threads`` BLAS threads against one's best.
    None for one thread or without threadpoolctl."""

    def best(a: Any) -> float:  # the fastest product's speed
        fastest = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            a @ a
            fastest = min(fastest, time.perf_counter() - start)
        return 1.0 / fastest

    return _speedup(threads, size, best)


def after_reading(threads: int, pause_s: float = 0.1) -> float | None:
    """quick_speedup after a timed row: the better of two readings ``pause_s`` apart, so that an
    engine's threads still spinning after its last call (onnxruntime's up to 40 ms) do not read
    as the host's."""
    first = quick_speedup(threads)
    time.sleep(pause_s)
    second = quick_speedup(threads)
    return None if first is None or second is None else max(first, second)


def wait_for_cores(threads: int, timeout_s: float, poll_s: float = 1.0) -> tuple[float | None, float]:
    """Read quick_speedup until the CPUs run as separate cores (``separate``) or ``timeout_s``
    has passed: (the last reading, seconds waited). No wait where it reads None, or for more
    threads than this machine has CPUs."""
    start = time.monotonic()
    if threads > (os.cpu_count() or 1):
        timeout_s = 0.0
    while True:
        speedup, waited = quick_speedup(threads), time.monotonic() - start
        if speedup is None or separate(speedup) or waited >= timeout_s:
            return speedup, waited
        time.sleep(poll_s)


class Waits:
    """wait_for_cores for a session's rows, which stops waiting once ``most`` waits in a row ran
    out (a host whose CPUs never read as two cores would otherwise cost every row the whole wait)."""

    def __init__(self, most: int = 3) -> None:
        self.most, self.ran_out = most, 0

    def __call__(self, threads: int, timeout_s: float) -> tuple[float | None, float]:
        wait = timeout_s if self.ran_out < self.most else 0.0
        speedup, waited = wait_for_cores(threads, wait)
        if wait:
            self.ran_out = 0 if separate(speedup) else self.ran_out + 1
        return speedup, waited


def shared_core(info: dict[str, Any]) -> bool:
    """Whether a timed row's readings (its extra_info's ``cores``, before and after) saw the
    host run its CPUs on one core."""
    threads = info.get("threads")
    return isinstance(threads, int) and threads >= 2 and any(
        s is not None and not separate(s) for s in info.get("cores") or ())


def _sharing(speedups: list[float | None] | None, threads: Any) -> str | None:
    """The report's line on thread_speedup's readings before and after the run (None: none)."""
    if not speedups or any(s is None for s in speedups) or not str(threads).isdigit():
        return None
    worst, full = min(speedups), min(int(threads), os.cpu_count() or 1)
    verdict = "the CPUs ran as separate cores" if worst >= 0.9 * full else (
        "the CPUs did not run as separate cores for part of the run (the host shares a core between "
        "them at times): multi-thread rows may read up to 2x slow; run again")
    return (f"{threads} threads ran a float32 matmul {' / '.join(f'{s:.2f}x' for s in speedups)} one thread's "
            f"speed before / after the run: {verdict}")


def _contention(share: float | None) -> str:
    if share is None:
        return "Other processes' CPU use during the run: not measured"
    verdict = "a quiet run" if share < 0.05 else "NOT trustworthy, run again on an idle machine"
    return f"Other processes used {share:.0%} of the machine's CPU during the run: {verdict}"
