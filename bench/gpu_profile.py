"""GPU profile (on a GPU machine, from the repository root): where a CUDA conv2d step and
network3's training step spend their time. For each conv shape of the suite and each cuBLAS
setting: wall time per call (mean of 20 after 2), device time per call and the top kernels,
read with CUPTI through torch.profiler, which sees numba's and cuBLAS's kernels as well as
PyTorch's; then network3's step at batch 10 and 64 with graphs and cuBLAS each on and off; then
cProfile's top functions for one conv step and one graphed step. The README's GPU section
quotes one run of it.

    python3 bench/gpu_profile.py [conv] [net] [py]     # default: all three
    PROFILE_CUBLAS="1" python3 bench/gpu_profile.py conv  # the cuBLAS settings to profile
    STAGES="bench/gpu_profile.py" bash bench/gpu_session.sh  # as a stage of a GPU session
"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, "bench")
import numbacnn as nc  # noqa: E402
from _peers import CONV_SHAPES, conv_data, conv_id, layer_call, numbacnn_conv, train_step  # noqa: E402


def wall(fn, n):
    fn(); fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e3


def device(fn, n, top=6):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    evs = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.device_time_total for e in evs) / n / 1e3
    evs.sort(key=lambda e: -e.device_time_total)
    tops = "; ".join(f"{e.key[:48]} x{e.count // n} {e.device_time_total / n:.0f}us" for e in evs[:top])
    return total, tops


which = sys.argv[1:] or os.environ.get("PROFILE_PARTS", "conv net py").split()
if "conv" in which:
    for shape in CONV_SHAPES:
        for cublas in os.environ.get("PROFILE_CUBLAS", "0 1").split():
            os.environ["NUMBACNN_CUBLAS"] = cublas
            fn = layer_call(numbacnn_conv(shape, conv_data(shape), "cuda"), "step")  # planned under this setting
            ms = wall(fn, 20)
            dev, tops = device(fn, 5)
            print(f"conv {conv_id(shape)} cublas={cublas}: wall {ms:.3f} ms, device {dev:.3f} ms | {tops}", flush=True)
if "net" in which:
    rng = np.random.default_rng(0)
    for graphs in ("0", "1"):
        os.environ["NUMBACNN_CUDA_GRAPHS"] = graphs
        for cublas in ("0", "1"):
            os.environ["NUMBACNN_CUBLAS"] = cublas
            for n in (10, 64):
                x = rng.standard_normal((n, 1, 28, 28), dtype=np.float32)
                y = rng.integers(0, 10, n)
                model = nc.zoo.network3(seed=0).to("cuda")
                step = train_step(model, nc.optim.SGD(model, lr=0.03, momentum=0.9), x, y)
                ms = wall(step, 30)
                dev, tops = device(step, 5)
                print(f"network3 N{n} graphs={graphs} cublas={cublas}: wall {ms:.3f} ms, device {dev:.3f} ms | {tops}",
                      flush=True)

if "py" in which:
    import cProfile
    import io
    import pstats

    def pyprof(label, fn, n=50):
        fn(); fn()
        torch.cuda.synchronize()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(14)
        lines = [l for l in s.getvalue().splitlines() if l.strip()][3:]
        print(f"--- python profile: {label}, {n} calls\n" + "\n".join(l[:150] for l in lines), flush=True)

    os.environ["NUMBACNN_CUBLAS"] = "1"
    shape = CONV_SHAPES[0]
    pyprof(f"conv {conv_id(shape)} step cublas=1", layer_call(numbacnn_conv(shape, conv_data(shape), "cuda"), "step"))
    os.environ["NUMBACNN_CUDA_GRAPHS"] = "1"
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
    model = nc.zoo.network3(seed=0).to("cuda")
    pyprof("network3 N64 step graphs=1 cublas=1", train_step(model, nc.optim.SGD(model, lr=0.03, momentum=0.9), x, y))
