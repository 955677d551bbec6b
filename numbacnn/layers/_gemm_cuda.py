"""The tiled matrix product every CUDA GEMM kernel (linear's, conv2d's) is made of.

A block computes a tile of ``C = A @ B`` with one output element per thread: thread (ty, tx)
owns ``C[row0 + ty, col0 + tx]``. The kernel walks the reduction a tile at a time; at each
step every thread fetches one element of A's tile and one of B's (gathering it from whatever
the operand really is: a weight, an input, an implicit im2col column) and ``gemm_tile`` stages
both in shared memory, waits for the block, adds the tiles' product to the thread's sum and
waits again before the tiles are overwritten. So every global element is read once per tile
instead of once per output, and the barriers live in one place.

Which element a thread fetches is the kernel's choice, made for coalescing: warp lanes run
along tx, so a thread should fetch the element whose address follows its neighbour's. For A
stored with the reduction contiguous (x in ``x @ w.T``) that is A[row0 + ty, k0 + tx], staged
at (ty, tx); for A stored with its rows contiguous (gy in ``gy.T @ x``) it is
A[row0 + tx, k0 + ty], staged at (tx, ty); likewise for B. A kernel that stages transposed
makes its tiles ``(TILE, PAD)`` shared arrays: with rows of PAD = TILE + 1 elements, the
transposed store falls in different banks (a shared array's shape must be a literal or a
global constant: ``TILE + 1`` written in the kernel does not compile). The tile edge is read
from the arrays' shape, so a kernel may use a smaller tile (conv2d's in the simulator) and the
loop still unrolls on a GPU, where it is a compile-time constant. Callers keep every thread
of the block calling ``gemm_tile`` the same number of times (out-of-range threads fetch
zeros): a barrier some threads skip hangs a GPU.
"""

from __future__ import annotations

from numba import cuda

from .._jit import cuda_device

__all__ = ["TILE", "PAD", "gemm_tile"]

TILE = 16
PAD = TILE + 1


@cuda_device
def gemm_tile(As, Bs, ai, ak, a, bk, bj, b, acc):
    """Stages a at As[ai, ak] and b at Bs[bk, bj] (one element of each operand tile per
    thread), then returns acc + sum_u As[ty, u] * Bs[u, tx]."""
    As[ai, ak] = a
    Bs[bk, bj] = b
    cuda.syncthreads()
    ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
    for u in range(As.shape[0]):
        acc += As[ty, u] * Bs[u, tx]
    cuda.syncthreads()
    return acc
