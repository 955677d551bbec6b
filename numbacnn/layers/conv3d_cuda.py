"""conv3d CUDA kernels: direct loops, one output element per thread, each launcher under its
kernel; the interface is conv3d_cpu.py's (its scratch arrays are empty here).

No atomics anywhere: the input gradient is a gather (each input element's thread sums over the
outputs whose windows hold it), the weight gradient has one thread per weight summing over the
batch and the output positions, and the bias gradient one thread per output channel.
``geo`` as in conv3d_cpu.
"""

from numba import cuda

from .._jit import cuda_kernel
from ..device import is_simulator

__all__ = ["conv3d_scratch", "conv3d_forward", "conv3d_backward"]

# The simulator runs every thread as a Python thread: small blocks keep its tests quick and make
# tiny shapes span several blocks.
THREADS = 32 if is_simulator() else 256


def _blocks(n: int) -> int:
    return max(1, (n + THREADS - 1) // THREADS)


@cuda_kernel
def _conv3d_forward_kernel(x, w, b, y, geo):
    i = cuda.grid(1)
    if i >= y.size:
        return
    _, T, R, S, sd, sh, sw, dd, dh, dw, pd, ph, pw = geo
    C, D, H, W = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    K, Do, P, Q = y.shape[1], y.shape[2], y.shape[3], y.shape[4]
    Cg = w.shape[1]
    q = i % Q
    p = i // Q % P
    od = i // (Q * P) % Do
    k = i // (Q * P * Do) % K
    n = i // (Q * P * Do * K)
    c0 = k // (K // (C // Cg)) * Cg
    acc = x.dtype.type(0)
    for c in range(Cg):
        for a in range(T):
            z = od * sd + a * dd - pd
            if z < 0 or z >= D:
                continue
            for j in range(R):
                h = p * sh + j * dh - ph
                if h < 0 or h >= H:
                    continue
                for l in range(S):
                    v = q * sw + l * dw - pw
                    if v >= 0 and v < W:
                        acc += x[n, c0 + c, z, h, v] * w[k, c, a, j, l]
    y[n, k, od, p, q] = acc + b[k] if b.size else acc


def conv3d_forward(x, w, b, y, col, geo) -> None:
    """y = conv3d(x, w) + b (b empty: no bias); ``col`` is unused here."""
    _conv3d_forward_kernel[_blocks(y.size), THREADS](x, w, b, y, geo)


@cuda_kernel
def _conv3d_backward_input_kernel(w, gy, gx, geo):
    i = cuda.grid(1)
    if i >= gx.size:
        return
    _, T, R, S, sd, sh, sw, dd, dh, dw, pd, ph, pw = geo
    C, D, H, W = gx.shape[1], gx.shape[2], gx.shape[3], gx.shape[4]
    K, Do, P, Q = gy.shape[1], gy.shape[2], gy.shape[3], gy.shape[4]
    Cg = w.shape[1]
    Kg = K // (C // Cg)
    v = i % W
    h = i // W % H
    z = i // (W * H) % D
    c = i // (W * H * D) % C
    n = i // (W * H * D * C)
    g, cc = c // Cg, c % Cg
    acc = gx.dtype.type(0)
    for kk in range(Kg):
        k = g * Kg + kk
        for a in range(T):
            # The output (od, p, q) whose tap (a, j, l) reads x[z, h, v], if any.
            zd = z + pd - a * dd
            if zd < 0 or zd % sd != 0 or zd // sd >= Do:
                continue
            for j in range(R):
                hp = h + ph - j * dh
                if hp < 0 or hp % sh != 0 or hp // sh >= P:
                    continue
                for l in range(S):
                    wq = v + pw - l * dw
                    if wq >= 0 and wq % sw == 0 and wq // sw < Q:
                        acc += gy[n, k, zd // sd, hp // sh, wq // sw] * w[k, cc, a, j, l]
    gx[n, c, z, h, v] = acc


@cuda_kernel
def _conv3d_backward_weight_kernel(x, gy, gw, geo):
    i = cuda.grid(1)
    if i >= gw.size:
        return
    _, T, R, S, sd, sh, sw, dd, dh, dw, pd, ph, pw = geo
    N, C, D, H, W = x.shape
    K, Do, P, Q = gy.shape[1], gy.shape[2], gy.shape[3], gy.shape[4]
    Cg = gw.shape[1]
    l = i % S
    j = i // S % R
    a = i // (S * R) % T
    cc = i // (S * R * T) % Cg
    k = i // (S * R * T * Cg)
    c = k // (K // (C // Cg)) * Cg + cc
    zero = x.dtype.type(0)
    acc = zero
    # Taps on the padding multiply gy by 0 rather than being skipped, as the CPU's product
    # with its column matrix does (and PyTorch's): an Inf in gy there gives NaN on both.
    for n in range(N):
        for od in range(Do):
            z = od * sd + a * dd - pd
            for p in range(P):
                h = p * sh + j * dh - ph
                for q in range(Q):
                    v = q * sw + l * dw - pw
                    inside = z >= 0 and z < D and h >= 0 and h < H and v >= 0 and v < W
                    acc += gy[n, k, od, p, q] * (x[n, c, z, h, v] if inside else zero)
    gw[k, cc, a, j, l] += acc


@cuda_kernel
def _conv3d_backward_bias_kernel(gy, gb):
    k = cuda.grid(1)
    N, K, L = gy.shape
    if k >= K:
        return
    acc = gy.dtype.type(0)
    for n in range(N):
        for i in range(L):
            acc += gy[n, k, i]
    gb[k] += acc


def conv3d_scratch(x_shape, w_shape, y_shape, chunks):
    """The CPU's scratch shapes; these kernels need none."""
    return (0,), (0,)


def conv3d_backward(x, w, gy, gw, gb, gx, col, part, geo) -> None:
    """gw += the weight gradient, gb += the bias gradient (gb empty: no bias), gx = the input
    gradient (None: not wanted); ``col`` and ``part`` are unused here."""
    _conv3d_backward_weight_kernel[_blocks(gw.size), THREADS](x, gy, gw, geo)
    if gb.size:
        N, K = gy.shape[:2]
        _conv3d_backward_bias_kernel[_blocks(K), THREADS](gy.reshape(N, K, gy.size // (N * K)), gb)
    if gx is not None:
        _conv3d_backward_input_kernel[_blocks(gx.size), THREADS](w, gy, gx, geo)
