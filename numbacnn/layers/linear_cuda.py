"""linear CUDA kernels and their launchers: tiled products (``_gemm_cuda.gemm_tile``), one
output element per thread.

The weight gradient has few outputs (a 100 -> 10 layer: seven tiles) and a reduction as long
as the batch, so the batch is cut into slices (``linear_scratch``), each its own grid layer: slice
0 adds straight into gw, the others write partials that a second kernel adds in a fixed order
(no atomics, the same sum every run).

Where cuBLAS is on (the default on a GPU, numbacnn/_cublas.py) the three products are cuBLAS's (numbacnn/_cublas.py) instead, with
the bias added, and summed for its gradient, by the kernels here; no partials are needed.
"""

from numba import cuda

from .. import _cublas
from .._jit import cuda_kernel
from ._gemm_cuda import PAD, TILE, gemm_tile

__all__ = ["linear_scratch", "linear_forward", "linear_backward"]

THREADS = 256


def _blocks(n, size=TILE):
    return (n + size - 1) // size


@cuda_kernel
def _linear_forward_kernel(x, w, b, y):
    # y[n, k] = sum_j x[n, j] w[k, j] (+ b[k]); w is fetched along j, its contiguous axis.
    xs = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    ws = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    N, J = x.shape
    K = w.shape[0]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    n0, k0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
    zero = x.dtype.type(0)
    acc = zero
    for j0 in range(0, J, TILE):
        j = j0 + tx
        a = x[n0 + ty, j] if n0 + ty < N and j < J else zero
        v = w[k0 + ty, j] if k0 + ty < K and j < J else zero
        acc = gemm_tile(xs, ws, ty, tx, a, tx, ty, v, acc)
    n, k = n0 + ty, k0 + tx
    if n < N and k < K:
        y[n, k] = acc + b[k] if b.size else acc


def linear_scratch(N, K, J):
    """The scratch shapes of ``linear_forward`` (none) and ``linear_backward``: the weight
    gradient's reduction is cut into Z slices of the batch, enough blocks (about 256) to fill a
    GPU with each slice at least two tiles of rows; (Z - 1, K, J) holds the partials of the
    slices after the first."""
    if _cublas.enabled():
        reason = _cublas.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"linear: {_cublas.ENV}=1 asks for cuBLAS, but {reason}")
        return (0, 0, 0), (0, K, J)
    Z = max(1, min(_blocks(256, _blocks(K) * _blocks(J)), _blocks(N, 2 * TILE)))
    return (0, 0, 0), (Z - 1, K, J)


@cuda_kernel
def _add_bias_kernel(y, b):
    i = cuda.grid(1)
    if i < y.size:
        y[i // b.size, i % b.size] += b[i % b.size]


def linear_forward(x, w, b, y, scratch, relu=False):
    """y = x @ w.T + b (b empty: no bias), relu'd in one pass after when ``relu`` (the
    executor fuses linear + relu on the CPU only; the twin takes the flag all the same);
    ``scratch`` is empty here."""
    N, K = y.shape
    if _cublas.usable(x, w, y):
        _cublas.gemm(x, w, y, trans_b=True)
        if b.size and y.size:
            _add_bias_kernel[_blocks(y.size, THREADS), THREADS](y, b)
    else:
        _linear_forward_kernel[(_blocks(K), _blocks(N)), (TILE, TILE)](x, w, b, y)
    if relu and y.size:
        from .relu_cuda import relu_forward

        yf = y.reshape(y.size)
        relu_forward(yf, yf)


@cuda_kernel
def _linear_backward_input_kernel(gy, w, gx):
    # gx[n, j] = sum_k gy[n, k] w[k, j]
    gys = cuda.shared.array((TILE, PAD), dtype=gy.dtype)
    ws = cuda.shared.array((TILE, PAD), dtype=gy.dtype)
    N, K = gy.shape
    J = w.shape[1]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    n, j = cuda.blockIdx.y * TILE + ty, cuda.blockIdx.x * TILE + tx
    zero = gy.dtype.type(0)
    acc = zero
    for k0 in range(0, K, TILE):
        a = gy[n, k0 + tx] if n < N and k0 + tx < K else zero
        v = w[k0 + ty, j] if k0 + ty < K and j < J else zero
        acc = gemm_tile(gys, ws, ty, tx, a, ty, tx, v, acc)
    if n < N and j < J:
        gx[n, j] = acc


@cuda_kernel
def _linear_backward_weight_kernel(x, gy, gw, part):
    # Slice z of the batch: gw[k, j] (z = 0) or part[z - 1, k, j] = sum_n gy[n, k] x[n, j];
    # gy is fetched along k, its contiguous axis.
    gys = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    xs = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    N, J = x.shape
    K = gy.shape[1]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    k0, j = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE + tx
    z = cuda.blockIdx.z
    Z = part.shape[0] + 1
    begin, end = z * N // Z, (z + 1) * N // Z
    zero = x.dtype.type(0)
    acc = zero
    for n0 in range(begin, end, TILE):
        n = n0 + ty
        a = gy[n, k0 + tx] if n < end and k0 + tx < K else zero
        v = x[n, j] if n < end and j < J else zero
        acc = gemm_tile(gys, xs, tx, ty, a, ty, tx, v, acc)
    k = k0 + ty
    if k < K and j < J:
        if z == 0:
            gw[k, j] += acc
        else:
            part[z - 1, k, j] = acc


@cuda_kernel
def _linear_backward_sum_kernel(part, gy, gw, gb):
    # One thread per weight: the partials in a fixed order; threads of row 0 also sum gb.
    i = cuda.grid(1)
    T, K, J = part.shape
    if T and i < K * J:
        k, j = i // J, i % J
        acc = gw.dtype.type(0)
        for t in range(T):
            acc += part[t, k, j]
        gw[k, j] += acc
    if i < gb.size:
        s = gy.dtype.type(0)
        for n in range(gy.shape[0]):
            s += gy[n, i]
        gb[i] += s


def linear_backward(x, w, gy, gw, gb, part, gx):
    """gw += gy^T x, gb += gy summed (b empty: no bias), gx = gy w (None: not wanted);
    ``part`` is scratch as ``linear_scratch`` shapes it."""
    N, J = x.shape
    K = gy.shape[1]
    if _cublas.usable(x, w, gy, gw) and (gx is None or gx.is_c_contiguous()):
        _cublas.gemm(gy, x, gw, trans_a=True, beta=1.0)
        if gb.size:
            _linear_backward_sum_kernel[_blocks(gb.size, THREADS), THREADS](part[:0], gy, gw, gb)
        if gx is not None:
            _cublas.gemm(gy, w, gx)
        return
    _linear_backward_weight_kernel[(_blocks(J), _blocks(K), part.shape[0] + 1), (TILE, TILE)](x, gy, gw, part)
    if part.shape[0] or gb.size:
        _linear_backward_sum_kernel[_blocks(max(K * J if part.shape[0] else 0, gb.size), THREADS), THREADS](
            part, gy, gw, gb)
    if gx is not None:
        _linear_backward_input_kernel[(_blocks(J), _blocks(N)), (TILE, TILE)](gy, w, gx)
