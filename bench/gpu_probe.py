"""GPU probe (run on a GPU machine, from the repository root: ``python3 bench/gpu_probe.py``):
versions; what a numba-cuda launch, an allocation and a copy cost; a CUDA graph captured from
numba launches on a stream of ours (cuda.bindings) against the same launches one by one;
cuBLAS's SGEMM through CuPy and through numbacnn's own binding on numba device arrays; a
profile of network3's training step and PyTorch's step on the same net (bench/_twin.py). The
README's GPU section quotes one run of it."""
import cProfile
import io
import pstats
import sys
import time
import traceback

import numpy as np


def section(name):
    print(f"\n===== {name}", flush=True)


def timeit(fn, n=200, sync=None):
    fn()
    if sync:
        sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    if sync:
        sync()
    return (time.perf_counter() - t) / n * 1e6


section("versions")
import numba
from numba import cuda

print("numba", numba.__version__, "numpy", np.__version__)
try:
    import numba_cuda
    print("numba_cuda", numba_cuda.__version__)
except Exception as e:
    print("numba_cuda?", e)
for mod in ("cuda.core", "cuda.bindings", "cupy", "torch", "nvmath"):
    try:
        m = __import__(mod, fromlist=["x"])
        print(mod, getattr(m, "__version__", "?"))
    except Exception as e:
        print(mod, "missing", e)
print("cuda available", cuda.is_available(), cuda.get_current_device().name)

section("launch cost")


@cuda.jit
def k1(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] += 1


@cuda.jit
def k4(a, b, c, d):
    i = cuda.grid(1)
    if i < a.size:
        a[i] += b[i] + c[i] + d[i]


a = cuda.to_device(np.zeros(1024, np.float32))
b, c, d = (cuda.to_device(np.zeros(1024, np.float32)) for _ in range(3))
s = cuda.stream()
print("k1 default us", timeit(lambda: k1[4, 256](a), sync=cuda.synchronize))
print("k4 default us", timeit(lambda: k4[4, 256](a, b, c, d), sync=cuda.synchronize))
print("k4 stream us", timeit(lambda: k4[4, 256, s](a, b, c, d), sync=cuda.synchronize))
print("device_array us", timeit(lambda: cuda.device_array((1024,), np.float32)))
x = np.zeros((64, 1, 28, 28), np.float32)
print("to_device 200KB us", timeit(lambda: cuda.to_device(x), sync=cuda.synchronize))
print("synchronize us", timeit(cuda.synchronize))

section("graph capture")
try:
    from cuda.bindings import driver as drv

    def ok(res):
        if res[0] != drv.CUresult.CUDA_SUCCESS:
            raise RuntimeError(str(res[0]))
        return res[1] if len(res) == 2 else res[1:]

    h = s.handle
    print("handle type", type(h), int(h))
    a.copy_to_device(np.zeros(1024, np.float32))
    ok(drv.cuStreamBeginCapture(h, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED))
    for _ in range(50):
        k4[4, 256, s](a, b, c, d)
        k1[4, 256, s](a)
    graph = ok(drv.cuStreamEndCapture(h))
    exe = ok(drv.cuGraphInstantiate(graph, 0))
    ok(drv.cuGraphLaunch(exe, h))
    s.synchronize()
    print("after one replay", a.copy_to_host()[:3], "(want 50)")
    print("graph of 100 launches us", timeit(lambda: ok(drv.cuGraphLaunch(exe, h)), sync=cuda.synchronize))
    print("eager 100 launches us", timeit(lambda: [(k4[4, 256, s](a, b, c, d), k1[4, 256, s](a)) for _ in range(50)],
                                          n=20, sync=cuda.synchronize))
    # a device_array during relaxed capture
    ok(drv.cuStreamBeginCapture(h, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED))
    e = cuda.device_array(1024, np.float32)
    k1[4, 256, s](e)
    g2 = ok(drv.cuStreamEndCapture(h))
    print("alloc in relaxed capture: ok")
    # d2d copy in capture
    ok(drv.cuStreamBeginCapture(h, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED))
    e.copy_to_device(a, stream=s)
    g3 = ok(drv.cuStreamEndCapture(h))
    print("d2d copy in capture: ok")
except Exception:
    traceback.print_exc()

section("cupy cublas on numba arrays")
try:
    import cupy
    from cupy_backends.cuda.libs import cublas

    handle = cupy.cuda.device.get_cublas_handle()
    for (m, n, k) in [(32 * 1024, 64, 576), (64 * 576, 20, 25), (8 * 784, 128, 864), (32 * 256, 64, 256)]:
        A = cuda.to_device(np.random.rand(m, k).astype(np.float32))
        B = cuda.to_device(np.random.rand(k, n).astype(np.float32))
        C = cuda.device_array((m, n), np.float32)
        one = np.ones(1, np.float32)
        zero = np.zeros(1, np.float32)
        # row-major C = A @ B  <=>  column-major C^T = B^T A^T
        def g():
            cublas.sgemm(handle, 0, 0, n, m, k, one.ctypes.data, B.device_ctypes_pointer.value, n,
                         A.device_ctypes_pointer.value, k, zero.ctypes.data, C.device_ctypes_pointer.value, n)
        g()
        cuda.synchronize()
        err = np.abs(C.copy_to_host() - A.copy_to_host() @ B.copy_to_host()).max()
        us = timeit(g, n=100, sync=cupy.cuda.Device().synchronize)
        print(f"sgemm {m}x{n}x{k}: {us:.1f} us, {2 * m * n * k / us / 1e6:.1f} TFLOP/s, err {err:.2e}")
    print("cublas math mode", cublas.getMathMode(handle))
except Exception:
    traceback.print_exc()

section("numbacnn's cuBLAS binding (ctypes) on numba arrays")
try:
    from numbacnn import _cublas

    print("unavailable:", _cublas.unavailable_reason())
    for (m, n, k) in [(32 * 1024, 64, 576), (64 * 576, 20, 25), (8 * 784, 128, 864), (32 * 256, 64, 256)]:
        A = cuda.to_device(np.random.rand(m, k).astype(np.float32))
        B = cuda.to_device(np.random.rand(k, n).astype(np.float32))
        C = cuda.device_array((m, n), np.float32)
        g = lambda: _cublas.gemm(A, B, C)  # noqa: E731
        g()
        cuda.synchronize()
        err = np.abs(C.copy_to_host() - A.copy_to_host() @ B.copy_to_host()).max()
        us = timeit(g, n=100, sync=cuda.synchronize)
        print(f"gemm {m}x{n}x{k}: {us:.1f} us, {2 * m * n * k / us / 1e6:.1f} TFLOP/s, err {err:.2e}")
except Exception:
    traceback.print_exc()

section("network3 train step profile")
try:
    import numbacnn as nc
    sys.path.insert(0, "bench")  # _peers
    from _peers import train_step
    for batch in (10, 64):
        rng = np.random.default_rng(0)
        xb = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
        lb = rng.integers(0, 10, batch)
        model = nc.zoo.network3(seed=0).to("cuda")
        step = train_step(model, nc.optim.SGD(model, lr=0.03, momentum=0.9), xb, lb)
        t = time.perf_counter()
        step()
        print("first step s", time.perf_counter() - t)
        print(f"N{batch} step us", timeit(step, n=100))
        if batch == 10:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(50):
                step()
            pr.disable()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(35)
            print(out.getvalue()[:9000])
    import torch
    from _twin import torch_twin

    net = torch_twin(nc.zoo.network3(seed=0)).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    for batch in (10, 64):
        xb = np.random.rand(batch, 1, 28, 28).astype(np.float32)
        lb = np.random.randint(0, 10, batch)

        def tstep():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(xb).cuda()), torch.from_numpy(lb).cuda())
            loss.backward()
            opt.step()
            return loss.item()
        print(f"torch N{batch} step us", timeit(tstep, n=100))
except Exception:
    traceback.print_exc()
