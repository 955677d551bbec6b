"""One memory measurement in a fresh process: ``python bench/_memory_child.py ENGINE MODEL
MODE BATCH THREADS`` prints one JSON object (MB = 2**20 bytes).

ENGINE is numbacnn or torch, MODE train (one training step: zero_grad, forward,
cross-entropy, backward, SGD with momentum) or inference (one forward). The process imports
its engine, builds the model (and, for torch, its twin with numbacnn's weights) and the batch,
and runs the step once at batch 2 so that kernels are compiled or loaded, workspaces exist
and the optimizer holds its momentum: none of that is the step's own memory. Then the peak
is reset (Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current resident
size), the resident size read as the baseline, the step run once at BATCH, and the peak read.
``delta_mb`` (peak minus baseline) is what the step itself needed: its activations,
gradients and workspaces, whether an engine keeps them between steps or frees them.
Where the peak cannot be reset, both come from ``resource.getrusage``'s ru_maxrss, whose
high-water mark then includes the warm-up: ``method`` says which was used.
"""

from __future__ import annotations

import gc
import json
import re
import resource
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

WARMUP_BATCH = 2


def _status_kb(key: str) -> int | None:
    try:
        found = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _maxrss_kb() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb // 1024 if sys.platform == "darwin" else kb  # macOS reports bytes


def _threads(engine: str, n: int) -> None:
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if engine == "torch":
        import torch

        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")


def _step(engine: str, name: str, mode: str, batch: int) -> Callable[[], Any]:
    import numbacnn as nc
    from _peers import torch_train_step, train_step
    from _zoo import build, data

    model = build(name)
    if engine == "numbacnn":
        runs = {}
        for b in (WARMUP_BATCH, batch):
            x, labels = data(model, b)
            opt = nc.optim.SGD(model, lr=0.03, momentum=0.9)
            runs[b] = train_step(model, opt, x, labels) if mode == "train" else (lambda x=x: model.forward(x))
    else:
        import torch

        from _twin import torch_twin

        net = torch_twin(model)
        runs = {}
        for b in (WARMUP_BATCH, batch):
            x, labels = data(model, b)
            if mode == "train":
                runs[b] = torch_train_step(net, x, labels)
            else:
                net.eval()

                def infer(x: Any = x) -> Any:
                    with torch.inference_mode():
                        return net(torch.from_numpy(x)).numpy()

                runs[b] = infer
    runs[WARMUP_BATCH]()
    return runs[batch]


def measure(engine: str, name: str, mode: str, batch: int, threads: int) -> dict[str, Any]:
    _threads(engine, threads)
    step = _step(engine, name, mode, batch)
    gc.collect()
    if _reset_peak():
        method, base = "VmHWM", _status_kb("VmRSS")
        step()
        peak = _status_kb("VmHWM")
    else:
        method, base = "ru_maxrss", _maxrss_kb()
        step()
        peak = _maxrss_kb()
    return dict(engine=engine, model=name, mode=mode, batch=batch, method=method,
                baseline_mb=base / 1024, peak_mb=peak / 1024, delta_mb=max(0, peak - base) / 1024,
                maxrss_mb=_maxrss_kb() / 1024)


if __name__ == "__main__":
    engine, name, mode, batch, threads = sys.argv[1:6]
    print(json.dumps(measure(engine, name, mode, int(batch), int(threads))))
