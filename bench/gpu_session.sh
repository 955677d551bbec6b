#!/usr/bin/env bash
# One GPU session's checks, in the order they are worth device time:
#   1. the CUDA tests on the device (CUDA graphs and cuBLAS off, the defaults), then the graph,
#      cuBLAS and training tests again with NUMBACNN_CUDA_GRAPHS=1 NUMBACNN_CUBLAS=1;
#   2. the GPU benchmark rows (bench/report.py -- -m gpu) with both off, then with both on.
# Usage, from the repository root on a machine with an NVIDIA GPU:
#   OUT=/some/dir bash bench/gpu_session.sh
# Reports and logs go to $OUT (default /tmp/numbacnn-gpu). numbacnn runs from this checkout
# (PYTHONPATH), so the machine's own numba, numba-cuda, PyTorch and pytest-benchmark are used.
# numba-cuda 0.30 cannot compile a kernel under NumPy 2.5 (numpy.row_stack is gone): when the
# probe below fails and wheels were carried in .whl/ (numpy 2.4 for the machine's Python),
# they are installed into /tmp/site and put first on the path.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/numbacnn-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
probe='from numba import cuda
@cuda.jit
def k(a):
    a[0] = 1
import numpy as np
a = cuda.to_device(np.zeros(1, np.float32)); k[1, 1](a); assert a.copy_to_host()[0] == 1'
if ! python3 -c "$probe" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site
    fi
    python3 -c "$probe" || { echo "numba.cuda cannot run a kernel here"; exit 1; }
fi
export PYTHONPATH=$PWD:$PWD/plugins/numbacnn-swish:$PWD/plugins/numbacnn-localconv:$PWD/plugins/numbacnn-spp${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi -L | tee "$OUT/device.txt"
python3 -c "import numba, numba_cuda, numpy, torch; print('numba', numba.__version__, 'numba-cuda',
numba_cuda.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)" | tee -a "$OUT/device.txt"

python3 -m pytest -m cuda tests plugins -n 8 --dist loadfile -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.txt" | tail -15
NUMBACNN_CUDA_GRAPHS=1 NUMBACNN_CUBLAS=1 python3 -m pytest -m cuda tests/test_cuda_graphs.py tests/test_cuda_cublas.py \
    tests/test_cuda_training.py tests/test_fold.py tests/test_free_sizes.py tests/test_nan_inf.py \
    tests/test_train.py tests/layers/test_conv2d.py tests/layers/test_conv1d.py tests/layers/test_dropout.py -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests_on.txt" | tail -5

python3 bench/report.py --json "$OUT/gpu.json" -- -m gpu 2>&1 | tee "$OUT/gpu_report.txt" | tail -40
NUMBACNN_CUDA_GRAPHS=1 NUMBACNN_CUBLAS=1 python3 bench/report.py --json "$OUT/gpu_on.json" -- -m gpu 2>&1 \
    | tee "$OUT/gpu_report_on.txt" | tail -40
