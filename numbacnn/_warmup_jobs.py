"""Warm-up on several processes: Numba compiles one kernel at a time per process (a global
compiler lock; a kernel's compile is single-threaded), so the only way to use more cores is
more processes, all filling the same disk cache.

Items are grouped by the kernel module they compile (``Layer.kernels``: max_pool1d, max_pool2d
and max_pool3d share one, as conv1d and conv2d do), and a group runs in one worker, in plan
order: two workers compiling one kernel at once would do the work twice, and Numba's cache
index of a kernel is rewritten by whoever saves a specialisation last. Losses and optimizers
have kernels of their own (an optimizer item also runs a linear layer: it goes in that
group). Zoo models run after every group is done, when their kernels are nearly all cached
(they catch what the layers' examples missed). Larger kernel modules start first, and the zoo
models measured slowest (``MODEL_SECONDS``), so the longest compile is not left for the end.
Layers registered in this process only (``register_layer``) are unknown to a fresh worker: they
run here, afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from importlib.util import find_spec
from typing import Any, Callable, Sequence

__all__ = ["default_jobs", "run_parallel"]

#: At most this many workers unless asked: each holds its own Numba and LLVM state (hundreds
#: of MB once it has compiled a few conv kernels).
MAX_DEFAULT_JOBS = 4
#: Zoo models' seconds in the model phase of ``numbacnn warmup --dtype float32`` (2 workers,
#: after the layers; AMD EPYC, znver4, at 5e59717): the phase starts the longest first, others
#: keep plan order after them. A ranking, not a budget: a kernel two models share is charged to
#: whichever compiles it first. In plan order the phase took 29.3 s for 52.6 s of work, a worker
#: left alone with resnet_bottleneck at the end (/work/probe/s25/wu_timeline.txt).
MODEL_SECONDS = {"network3": 16.0, "resnet_bottleneck": 13.3, "vgg_small": 11.1, "googlenet_mini": 6.8,
                 "resnet_basic": 3.7, "lenet5": 1.2}

Task = tuple[str, str, str, str]  # kind, name, dtype, device


def default_jobs() -> int:
    """The CPUs this process may run on, at most ``MAX_DEFAULT_JOBS``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_JOBS))


def _source_size(module: str) -> int:
    spec = find_spec(module) if module else None
    origin = getattr(spec, "origin", None)
    return os.path.getsize(origin) if origin and os.path.exists(origin) else 0


def _group_key(kind: str, name: str) -> tuple[str, str]:
    """(group, kernel module) of one item; the module's source size orders the groups."""
    if kind in ("loss", "optimizer"):
        # An optimizer item runs a linear layer as well as its update kernel.
        return (("layer", "numbacnn.layers.linear") if kind == "optimizer" else ("loss", "numbacnn.losses"),
                "numbacnn.optim_cpu" if kind == "optimizer" else "numbacnn.losses_cpu")
    from .layer import kernel_stem
    from .registry import get_layer

    try:
        stem = kernel_stem(get_layer(name)) or f"none:{name}"
    except Exception:  # a broken plugin: its item notes the error, alone
        stem = f"broken:{name}"
    return ("layer", stem), stem + "_cpu"


def _in_process_only(kind: str, name: str) -> bool:
    from .registry import _discover

    entry = _discover().get(name) if kind == "layer" else None
    return entry is not None and entry.distribution == "__main__"


def run_parallel(plan: Sequence[tuple[Any, str, str]], jobs: int, report: Callable[[Any], None],
                 worker: Callable[[Sequence[Task]], tuple[list[Any], list[str]]]) -> tuple[list[int], list[str]]:
    """Run the plan's (item, kind, name) entries on ``jobs`` worker processes, copying each
    finished item's outcome into the plan's item and calling ``report(item)``; returns the
    positions of the entries left for this process (layers registered here only) and the
    cache folders the workers filled."""
    groups: dict[tuple[str, ...], list[int]] = {}
    sizes: dict[tuple[str, ...], int] = {}
    models: list[list[int]] = []
    here: list[int] = []
    dirs: set[str] = set()
    for i, (item, kind, name) in enumerate(plan):
        if _in_process_only(kind, name):
            here.append(i)
        elif kind == "model":
            models.append([i])
        else:
            group, module = _group_key(kind, name)
            key = (item.device, item.dtype, *group)
            groups.setdefault(key, []).append(i)
            sizes[key] = max(sizes.get(key, 0), _source_size(module))
    first = sorted(groups, key=lambda k: -sizes[k])
    models.sort(key=lambda positions: -MODEL_SECONDS.get(plan[positions[0]][2], 0.0))  # stable: plan order next
    # spawn: a forked child would inherit Numba's thread pool and locks mid-state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for batch in ([groups[k] for k in first], models):
            pending = {pool.submit(worker, [(plan[i][1], plan[i][2], plan[i][0].dtype, plan[i][0].device)
                                             for i in positions]): positions for positions in batch}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    positions = pending.pop(future)
                    results, used = future.result()
                    dirs.update(used)
                    for i, result in zip(positions, results):
                        vars(plan[i][0]).update(vars(result))
                        report(plan[i][0])
    return here, sorted(dirs)
