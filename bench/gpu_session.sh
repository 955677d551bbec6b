#!/usr/bin/env bash
# One GPU session's checks, in the order they are worth device time, each stage under its own
# time limit so that a slow or hung stage still leaves the earlier ones' results:
#   1. the GPU benchmark rows (bench/report.py -- -m gpu) as a user gets them (CUDA graphs and
#      cuBLAS on, the defaults on a GPU);
#   2. every CUDA test with the defaults;
#   3. bench/gpu_profile.py: where the conv steps and network3's step spend their time;
#   4. the GPU rows with both off (the comparison);
#   5. every CUDA test with both off, in what time is left.
# STAGES picks and orders them: rows tests bench/gpu_profile.py rows_off tests_off (the default);
# rows_on and tests_on force both on; any other word is a Python script run as a stage of its
# own (a probe), its output in $OUT/<name>.txt.
# Usage, from the repository root on a machine with an NVIDIA GPU:
#   OUT=/some/dir BUDGET=560 bash bench/gpu_session.sh
# Reports and logs go to $OUT (default /tmp/numbacnn-gpu), eight files at most: session.txt
# (device, versions, each stage's exit status and seconds), gpu.json / gpu_report.txt /
# tests.txt (the defaults), gpu_profile.txt, gpu_off.json / gpu_report_off.txt / tests_off.txt.
# BUDGET is the whole script's seconds (default 560).
# numbacnn and the plugins are installed editable without dependencies (their entry points are
# what finds the plugins' layers and numbacnn's pytest plugin); the machine's own numba,
# PyTorch and pytest-benchmark are used. numba-cuda 0.30 cannot compile a kernel under NumPy 2.5
# (numpy.row_stack is gone): when the probe below fails and wheels were carried in .whl/
# (numpy 2.4 and numba-cuda for the machine's Python), they are installed into /tmp/site and put
# first on the path. Carry them with `run`'s carry=[".whl"]; fetched on a machine with pip by
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
#       -d .whl numpy==2.4.6 numba-cuda==0.30.4
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl/build "setuptools>=77,<81"
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/numbacnn-gpu}
BUDGET=${BUDGET:-560}
STAGES=${STAGES:-rows tests bench/gpu_profile.py rows_off tests_off}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log="$OUT/session.txt"
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
    python3 -c "$probe" || { echo "numba.cuda cannot run a kernel here" | tee -a "$log"; exit 1; }
fi
# The build needs setuptools >= 77 (pyproject's license field); a carried one in .whl/build/ is used.
build_path=${PYTHONPATH:-}
if ls .whl/build/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --target /tmp/build .whl/build/*.whl; then
    build_path=/tmp/build${PYTHONPATH:+:$PYTHONPATH}
fi
if ! PYTHONPATH=$build_path python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . \
        -e ./plugins/numbacnn-swish -e ./plugins/numbacnn-localconv -e ./plugins/numbacnn-spp >>"$log" 2>&1; then
    echo "editable install failed: running from PYTHONPATH (plugin entry points missing)" | tee -a "$log"
    export PYTHONPATH=$PWD:$PWD/plugins/numbacnn-swish:$PWD/plugins/numbacnn-localconv:$PWD/plugins/numbacnn-spp${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L | tee -a "$log"
python3 -c "import numba, numba_cuda, numpy, torch; print('numba', numba.__version__, 'numba-cuda',
numba_cuda.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)" 2>&1 | tee -a "$log"
timeout_opt=()
python3 -c "import pytest_timeout" 2>/dev/null && timeout_opt=(-p timeout --timeout=120)

# stage NAME SECONDS LOGFILE command...: at most SECONDS, and never past the budget.
stage() {
    local name=$1 secs=$2 file=$3 left=$((BUDGET - SECONDS)) start=$SECONDS rc
    shift 3
    ((secs > left)) && secs=$left
    if ((secs < 20)); then
        echo "== $name: skipped, ${left}s of the budget left" | tee -a "$log"
        return
    fi
    echo "== $name (at most ${secs}s)" | tee -a "$log"
    timeout -k 5 "$secs" "$@" >"$OUT/$file" 2>&1
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start))s" | tee -a "$log"
    tail -n 25 "$OUT/$file"
}
tests=(python3 -m pytest -m cuda tests plugins -n 8 --dist loadfile -q -rfE -p no:cacheprovider "${timeout_opt[@]}")
on=(env NUMBACNN_CUDA_GRAPHS=1 NUMBACNN_CUBLAS=1)
off=(env NUMBACNN_CUDA_GRAPHS=0 NUMBACNN_CUBLAS=0)

for name in $STAGES; do
    case $name in
        rows) stage "GPU rows, defaults" 200 gpu_report.txt python3 bench/report.py --json "$OUT/gpu.json" -- -m gpu ;;
        tests) stage "CUDA tests, defaults" 200 tests.txt "${tests[@]}" ;;
        rows_on) stage "GPU rows, graphs and cuBLAS on" 200 gpu_report_on.txt "${on[@]}" python3 bench/report.py \
                     --json "$OUT/gpu_on.json" -- -m gpu ;;
        tests_on) stage "CUDA tests, graphs and cuBLAS on" 200 tests_on.txt "${on[@]}" "${tests[@]}" ;;
        rows_off) stage "GPU rows, both off" 120 gpu_report_off.txt "${off[@]}" python3 bench/report.py \
                      --json "$OUT/gpu_off.json" -- -m gpu ;;
        tests_off) stage "CUDA tests, both off" 200 tests_off.txt "${off[@]}" "${tests[@]}" ;;
        *) stage "$name" 200 "$(basename "$name" .py).txt" python3 "$name" ;;  # a probe script
    esac
done
cat "$log"
