"""linear CUDA kernels and their launchers: tiled products, one output element per thread.

Each block computes a TILE x TILE tile of the output, staging TILE-wide slices of both
operands in shared memory so every global element is read once per tile instead of once per
output. Row length PAD = TILE + 1 keeps column reads of a tile free of bank conflicts.
"""

from numba import cuda

from .._jit import cuda_kernel

TILE = 16
PAD = TILE + 1
THREADS = 256


def _grid(rows, cols):
    return ((cols + TILE - 1) // TILE, (rows + TILE - 1) // TILE), (TILE, TILE)


@cuda_kernel
def linear_forward_kernel(x, w, y):
    # y[n, k] = sum_j x[n, j] * w[k, j]
    xs = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    ws = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    N, J = x.shape
    K = w.shape[0]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    n, k = cuda.blockIdx.y * TILE + ty, cuda.blockIdx.x * TILE + tx
    kw = cuda.blockIdx.x * TILE + ty
    zero = x.dtype.type(0)
    acc = zero
    for j0 in range(0, J, TILE):
        j = j0 + tx
        xs[ty, tx] = x[n, j] if n < N and j < J else zero
        ws[ty, tx] = w[kw, j] if kw < K and j < J else zero
        cuda.syncthreads()
        for u in range(TILE):
            acc += xs[ty, u] * ws[tx, u]
        cuda.syncthreads()
    if n < N and k < K:
        y[n, k] = acc


@cuda_kernel
def linear_add_bias_kernel(y, b):
    i = cuda.grid(1)
    if i < y.size:
        K = y.shape[1]
        y[i // K, i % K] += b[i % K]


def linear_forward(x, w, b, y):
    """y = x @ w.T (+ b)."""
    blocks, threads = _grid(y.shape[0], y.shape[1])
    linear_forward_kernel[blocks, threads](x, w, y)
    if b is not None:
        linear_add_bias_kernel[(y.size + THREADS - 1) // THREADS, THREADS](y, b)


@cuda_kernel
def linear_backward_input_kernel(gy, w, gx):
    # gx[n, j] = sum_k gy[n, k] * w[k, j]
    gys = cuda.shared.array((TILE, PAD), dtype=gy.dtype)
    ws = cuda.shared.array((TILE, PAD), dtype=gy.dtype)
    N, K = gy.shape
    J = w.shape[1]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    n, j = cuda.blockIdx.y * TILE + ty, cuda.blockIdx.x * TILE + tx
    zero = gy.dtype.type(0)
    acc = zero
    for k0 in range(0, K, TILE):
        gys[ty, tx] = gy[n, k0 + tx] if n < N and k0 + tx < K else zero
        ws[ty, tx] = w[k0 + ty, j] if k0 + ty < K and j < J else zero
        cuda.syncthreads()
        for u in range(TILE):
            acc += gys[ty, u] * ws[u, tx]
        cuda.syncthreads()
    if n < N and j < J:
        gx[n, j] = acc


def linear_backward_input(gy, w, gx):
    """gx = gy @ w."""
    blocks, threads = _grid(gx.shape[0], gx.shape[1])
    linear_backward_input_kernel[blocks, threads](gy, w, gx)


@cuda_kernel
def linear_backward_weight_kernel(x, gy, gw):
    # gw[k, j] += sum_n gy[n, k] * x[n, j]
    gys = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    xs = cuda.shared.array((TILE, PAD), dtype=x.dtype)
    N, J = x.shape
    K = gy.shape[1]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    k, j = cuda.blockIdx.y * TILE + ty, cuda.blockIdx.x * TILE + tx
    kg = cuda.blockIdx.y * TILE + tx
    zero = x.dtype.type(0)
    acc = zero
    for n0 in range(0, N, TILE):
        n = n0 + ty
        gys[ty, tx] = gy[n, kg] if n < N and kg < K else zero
        xs[ty, tx] = x[n, j] if n < N and j < J else zero
        cuda.syncthreads()
        for u in range(TILE):
            acc += gys[u, ty] * xs[u, tx]
        cuda.syncthreads()
    if k < K and j < J:
        gw[k, j] += acc


@cuda_kernel
def linear_backward_bias_kernel(gy, gb):
    k = cuda.grid(1)
    if k < gb.size:
        s = gy.dtype.type(0)
        for n in range(gy.shape[0]):
            s += gy[n, k]
        gb[k] += s


def linear_backward_weight(x, gy, gw, gb):
    """gw += gy.T @ x and gb += gy summed over the batch."""
    blocks, threads = _grid(gw.shape[0], gw.shape[1])
    linear_backward_weight_kernel[blocks, threads](x, gy, gw)
    if gb is not None:
        linear_backward_bias_kernel[(gb.size + THREADS - 1) // THREADS, THREADS](gy, gb)
