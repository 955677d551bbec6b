"""float32 CUDA kernels compute in float32: no float64 in the code Numba generates for them.

A Python float literal (``0.0``), an untyped int next to a float32 (``x > 0``, ``... else 0``)
or a Python float argument makes Numba promote to float64, which a GPU runs at 1/2 to 1/64 of
its float32 rate, silently. No GPU is needed to see it: Numba's CUDA target types and lowers a
kernel to LLVM IR without one (only the step to PTX needs NVVM/NVRTC, absent on CPU machines),
and float64 shows there as ``double``. Which argument types to lower for is taken from real
launches: a simulator process runs every registered layer (plugins too), both losses, every
optimizer and the device fill on float32 data and records each kernel launch; a plain process
then lowers every recorded kernel, with the device functions it calls, and lists the source
lines whose IR holds a ``double``. A kernel the run never launched fails the test too, so a new
kernel cannot escape the check.

Run one part by hand: ``python tests/test_cuda_float32.py record OUT`` (under
``NUMBA_ENABLE_CUDASIM=1``), then ``python tests/test_cuda_float32.py lower OUT``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# float64 on purpose, with the reason: per-channel sums of up to N*H*W values accumulate in
# float64 as the CPU kernels do, and the running statistics move by per-channel scalars.
ALLOWED: dict[str, str] = {
    "numbacnn.layers.batch_norm2d_cuda._batch_norm2d_stats_kernel": "float64 sums, as on the CPU",
    "numbacnn.layers.batch_norm2d_cuda._batch_norm2d_backward_weight_kernel": "float64 sums, as on the CPU",
    "numbacnn.layers.batch_norm2d_cuda._batch_norm2d_update_running_kernel": "one thread per channel, as on the CPU",
}


def _cuda_modules() -> list[str]:
    """The modules holding CUDA kernels: numbacnn's and those of every registered layer."""
    from numbacnn.registry import layer_info, layer_names

    names = ["numbacnn._device_cuda", "numbacnn.losses_cuda", "numbacnn.optim_cuda",
             "numbacnn.layers._conv_columns_cuda"]
    for layer in layer_names():
        module = layer_info(layer)["class"].rpartition(":")[0].rpartition(".")[0]
        names.append(f"{module}.{layer}_cuda")
    return [n for n in dict.fromkeys(names) if importlib.util.find_spec(n) is not None]


def _record(out: str) -> None:
    """Under the simulator: run everything on float32 data, recording each launch's types."""
    import numba
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    from numbacnn import warmup
    from numbacnn._layer_checks import build_model
    from numbacnn.registry import get_layer, layer_devices, layer_names
    from numbacnn.testing import _examples

    launches: set[tuple[str, str, tuple]] = set()
    launch = FakeCUDAKernel.__call__

    def recording(self: Any, *args: Any) -> Any:
        if not self._device:
            types = tuple(numba.typeof(a._ary if isinstance(a, FakeCUDAArray) else a) for a in args)
            launches.add((self.fn.__module__, self.fn.__qualname__, types))
        return launch(self, *args)

    FakeCUDAKernel.__call__ = recording

    def run(cls: Any) -> None:
        # Kernels are picked by path, not size, on the GPU: one example (the first, the
        # smallest to simulate) in training with backward, and in evaluation, reaches them.
        example = _examples(cls)[0][0]
        shapes = [tuple(s) for s in example["input_shapes"]]
        model = build_model(cls(**example.get("config", {})), shapes, "float32", seed=0).to("cuda")
        xs = warmup._inputs(shapes, example, "float32")
        y = model.forward(*xs, training=True)
        model.backward(np.ones_like(y))
        model.forward(*xs, training=False)

    for name in layer_names():
        cls = get_layer(name)
        if "cuda" in layer_devices(cls):
            run(cls)
    os.environ["NUMBACNN_CUBLAS"] = "1"  # conv2d's and linear's cuBLAS path has kernels of its own
    for name in ("conv2d", "linear"):
        run(get_layer(name))
    del os.environ["NUMBACNN_CUBLAS"]
    # add's fused relu twin: the executor fuses on the CPU only (numbacnn._fold), so call it here
    from numba import cuda

    from numbacnn.layers import add_cuda

    ones = cuda.to_device(np.ones(8, np.float32))
    add_cuda.add_relu_forward(ones, ones, cuda.device_array(8, np.float32))
    # and conv2d's folded batch norm's scale (conv2d_cuda._scale_rows_kernel), the same way
    from numbacnn.layers import conv2d_cuda

    geo = (1, 1, 1, 1, 1, 1, 1, 0, 0)
    plan = conv2d_cuda.conv2d_plan("c", (1, 2, 2, 2), (1, 2, 2, 2), geo, False, "float32")
    conv2d_cuda.conv2d_forward(cuda.to_device(np.ones((1, 2, 2, 2), np.float32)), cuda.to_device(np.ones(
        (2, 2, 1, 1), np.float32)), ones[:2], cuda.device_array((1, 2, 2, 2), np.float32), plan, tuple(
        cuda.device_array(s, d or np.float32) for s, d in plan.forward_scratch), scale=ones[:2])
    for loss in ("cross_entropy", "mse"):
        warmup._warm_loss(loss, "float32", "cuda", warmup.WarmupItem(loss, "float32", "cuda"))
    for opt in warmup.OPTIMIZERS:
        warmup._warm_optimizer(opt, "float32", "cuda", warmup.WarmupItem(opt, "float32", "cuda"))
    kernels = {f"{m}.{k}" for m in _cuda_modules() for k, v in vars(importlib.import_module(m)).items()
               if isinstance(getattr(v, "dispatcher", v), FakeCUDAKernel) and not v._device}
    with open(out, "wb") as f:
        pickle.dump({"launches": sorted(launches, key=str), "kernels": sorted(kernels)}, f)


def _lower(path: str) -> None:
    """Without the simulator: lower each recorded launch; print {kernel: [float64 lines]}."""
    import types as pytypes

    import numba.cuda.dispatcher as cuda_dispatcher
    from numba.cuda.compiler import compile_cuda

    # Device functions ask the current GPU for its compute capability; there is none here.
    cuda_dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(7, 5))
    with open(path, "rb") as f:
        data = pickle.load(f)
    found: dict[str, list[str]] = {}
    for module, name, argtypes in data["launches"]:
        kernel = getattr(importlib.import_module(module), name)
        devices = [v for v in vars(sys.modules[module]).values()
                   if isinstance(v, cuda_dispatcher.CUDADispatcher) and v.targetoptions.get("device")]
        before = {id(c) for d in devices for c in d.overloads.values()}
        cres = compile_cuda(kernel.py_func, None, argtypes, lineinfo=True, cc=(7, 5), nvvm_options={"opt": 3})
        libs = [(kernel.py_func, cres.library)] + [(d.py_func, c.library) for d in devices
                                                   for c in d.overloads.values() if id(c) not in before]
        lines = []
        for fn, lib in libs:
            ir = lib.get_llvm_str()
            where = dict(re.findall(r"^(!\d+) = !DILocation\(.*?line: (\d+)", ir, re.M))
            source = Path(fn.__code__.co_filename)
            for text in ir.splitlines():
                # A float64 constant cast to float32 is folded by the compiler: no float64 math.
                folded = re.search(r"= fptrunc double (0x[0-9A-Fa-f]+|[-+0-9.e]+) to float", text)
                if re.search(r"\bdouble\b", text) and not folded and not text.startswith(("declare", "define", "!")):
                    at = re.search(r"!dbg (!\d+)", text)
                    line = int(where[at.group(1)]) if at and at.group(1) in where else None
                    code = source.read_text().splitlines()[line - 1].strip() if line else "?"
                    lines.append(f"{source.name}:{line}: {code}")
        if lines:
            found[f"{module}.{name}"] = sorted(set(lines), key=lambda s: (len(s.split(":")[1]), s))
    print(json.dumps({"float64": found, "launched": sorted({f"{m}.{n}" for m, n, _ in data["launches"]}),
                      "kernels": data["kernels"]}))


def test_float32_cuda_kernels_compute_in_float32(tmp_path):
    pytest.importorskip("numba.cuda")
    here = str(Path(__file__).resolve())
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    record = subprocess.run([sys.executable, "-W", "ignore", here, "record", str(tmp_path / "launches.pkl")],
                            env={**env, "NUMBA_ENABLE_CUDASIM": "1"}, capture_output=True, text=True, timeout=600)
    assert record.returncode == 0, record.stderr[-3000:]
    lower = subprocess.run([sys.executable, "-W", "ignore", here, "lower", str(tmp_path / "launches.pkl")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert lower.returncode == 0, lower.stderr[-3000:]
    report = json.loads(lower.stdout.strip().splitlines()[-1])
    missed = sorted(set(report["kernels"]) - set(report["launched"]))
    assert not missed, f"kernels the recorded run never launched, so never checked: {missed}; extend _record"
    bad = {k: v for k, v in report["float64"].items() if k not in ALLOWED}
    assert not bad, "float64 in float32 CUDA kernels (type the constants, e.g. x.dtype.type(0)):\n" + "\n".join(
        f"{k}: " + "; ".join(v) for k, v in sorted(bad.items()))


if __name__ == "__main__":
    {"record": _record, "lower": _lower}[sys.argv[1]](sys.argv[2])
