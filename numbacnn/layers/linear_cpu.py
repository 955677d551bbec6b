"""linear CPU kernels. Every product is written as c += a @ b.T, whose inner loop is a dot
product of two contiguous rows; backward first transposes its operands into scratch buffers
(O(N*(J+K) + J*K) copies beside the O(N*J*K) product) to reach that form.

The products are Numba kernels rather than calls into NumPy's BLAS on purpose: BLAS runs its
own thread pool, and alternating it with Numba's on the same cores makes the two spin against
each other (a 784-100-100-10 MLP training step took 24 ms instead of 0.4 ms on 2 cores).
"""

from .._jit import cpu_kernel, prange

B = 4  # c is computed in B x B blocks; change the unrolled body below with it


# Each element loaded from a or b feeds four multiply-adds and the sixteen running sums stay
# in registers; reassociation lets LLVM vectorise the sums along j.
@cpu_kernel(fastmath={"reassoc", "contract"})
def linear_products(a, b, c):
    M, J = a.shape
    K = b.shape[0]
    MB = (M + B - 1) // B
    for t in prange(MB * ((K + B - 1) // B)):
        # Consecutive iterations share the same rows of b, which stay in cache.
        k0, m0 = (t // MB) * B, (t % MB) * B
        if m0 + B <= M and k0 + B <= K:
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = c.dtype.type(0)
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = c.dtype.type(0)
            for j in range(J):
                a0, a1, a2, a3 = a[m0, j], a[m0 + 1, j], a[m0 + 2, j], a[m0 + 3, j]
                b0, b1, b2, b3 = b[k0, j], b[k0 + 1, j], b[k0 + 2, j], b[k0 + 3, j]
                s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3
                s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3
                s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3
                s30 += a3 * b0; s31 += a3 * b1; s32 += a3 * b2; s33 += a3 * b3
            c[m0, k0] += s00; c[m0, k0 + 1] += s01; c[m0, k0 + 2] += s02; c[m0, k0 + 3] += s03
            c[m0 + 1, k0] += s10; c[m0 + 1, k0 + 1] += s11; c[m0 + 1, k0 + 2] += s12; c[m0 + 1, k0 + 3] += s13
            c[m0 + 2, k0] += s20; c[m0 + 2, k0 + 1] += s21; c[m0 + 2, k0 + 2] += s22; c[m0 + 2, k0 + 3] += s23
            c[m0 + 3, k0] += s30; c[m0 + 3, k0 + 1] += s31; c[m0 + 3, k0 + 2] += s32; c[m0 + 3, k0 + 3] += s33
        else:
            for m in range(m0, min(m0 + B, M)):
                for k in range(k0, min(k0 + B, K)):
                    s = c.dtype.type(0)
                    for j in range(J):
                        s += a[m, j] * b[k, j]
                    c[m, k] += s


@cpu_kernel
def linear_transpose(a, at):
    # Each iteration copies a 16-wide column strip: short contiguous reads, no shared writes.
    N, J = a.shape
    for t in prange((J + 15) // 16):
        for n in range(N):
            for j in range(16 * t, min(16 * t + 16, J)):
                at[j, n] = a[n, j]


@cpu_kernel
def linear_fill_bias(y, b):
    N, K = y.shape
    for n in prange(N):
        for k in range(K):
            y[n, k] = b[k]


@cpu_kernel
def linear_backward_bias(gyt, gb):
    K, N = gyt.shape
    for k in prange(K):
        s = gyt.dtype.type(0)
        for n in range(N):
            s += gyt[k, n]
        gb[k] += s
