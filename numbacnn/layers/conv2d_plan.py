"""conv2d's plan: which kernels run for one input shape, and the scratch they need.

``conv2d_cpu.conv2d_plan`` and ``conv2d_cuda.conv2d_plan`` return a ``Conv2dPlan``; the layer
makes it once per input signature (``ctx.plan``), hands it to forward and backward, and never
looks inside. The CPU chooses among these paths (conv2d_cpu's docstring describes them):

- ``"im2col"``: channel-major column matrices and BLAS (any geometry; 1x1 stride-1 unpadded
  convolutions multiply x directly);
- ``"pixel"``: pixel-major column matrices (groups 1, not the direct 1x1 case; in inference
  on small planes, several samples' rows a product);
- ``"winograd"``: F(4x4, 3x3), or F(4x4, 5x5) for 5x5 kernels (groups 1, stride 1, no
  dilation, 2x2 to 6x6 kernels);
- ``"winograd1d"``: F(4, 5) on one-row convolutions with a 1x5 kernel (conv1d's kernel_size
  5; groups 1, stride 1, no dilation): conv1d_winograd_cpu. Forcing ``"winograd"`` gives it
  to the convolutions it fits;
- ``"shift"``: a direct convolution by shifted taps over a padded image (at a stride, its
  phase planes), multiplied in registers (conv2d_shift_cpu); taken in inference at batch 1
  and where Winograd is not, and by stride-1 training forwards that would be im2col's (their
  backward im2col's) or pixel-major's with few channels (their backward pixel-major's:
  ``Conv2dPlan.backward_path``).

float64 takes im2col unless a path is forced: float64 is what a model runs in for accuracy and
gradient checks, where Winograd's extra rounding (its tile transforms add error) is unwelcome
and speed comes second; PyTorch's CPU float64 convolution likewise takes its direct
slow_conv2d, not oneDNN. So the float64 Winograd and pixel-major kernels compile only when
forced, which saves most of what ``numbacnn layers --check conv2d`` and a float64 warm-up
compile. A forced path is honoured in float64 too: the tests hold those kernels to float64
finite differences and naive loops, which float32 could not resolve.

Choosing a path by hand, e.g. to test or time one: set ``NUMBACNN_CONV2D_PATH`` to ``auto``
(the default), ``im2col``, ``pixel``, ``winograd`` or ``shift`` before the first call, or wrap the calls
in ``with force_path("winograd"):`` (``numbacnn.layers.conv2d_cpu.force_path``; process-wide,
the environment variable is read when no ``force_path`` is active). Either is read when a
plan is made, i.e. on the first call at an input size: a model already run at that size keeps
its plan. A forced path that cannot run a convolution (Winograd at stride 2, pixel-major
with groups) raises ``ValueError`` naming the node, the path and why; shift runs every one. CUDA ignores the choice: it
multiplies column matrices with cuBLAS (``_conv_columns_cuda``, numbacnn/_cublas.py; the
default on a GPU) or runs implicit GEMM (``NUMBACNN_CUBLAS=0``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ._taps_cpu import HOST_CPU, VECTOR_BYTES, tile_columns

# Shortest contiguous run (S*C values) for which the CPU's pixel-major path is taken.
PIXEL_MAJOR_MIN_RUN = 16
# Output channels per output row (N*P*Q) from which it is not: its weight layout costs more.
PIXEL_MAJOR_MAX_K_PER_ROW = 4
# A training convolution that would take pixel-major with at most this many input times output
# channels runs its forward on shifted taps and its backward pixel-major instead, the backward
# making each padded HWC image itself (conv2d_pixel_cpu, ``build``): the forward kept no images.
# Training forward / backward with the input gradient, batch 32, 2 threads, ms, pixel-major
# against shifted taps (/work/probe/s19/fb.py): 6->16 5x5 at 4x4 0.102 / 0.079, at 14x14 0.276 /
# 0.195; 8->16 5x5 at 16x16 0.682 / 0.427; 16->32 5x5 at 16x16 1.99 / 1.48, 3x3 0.834 / 0.647;
# 24->24 3x3 at 16x16 0.902 / 0.695 (576); 32->16 0.867 / 0.644; lost from 20->40 5x5 at 8x8
# (800: 0.745 / 0.859) and 32->32 3x3 at 8x8 (0.417 / 0.440). Pixel-major's backward beat
# im2col's on each of these (6->16 at 4x4 0.168 / 0.235, 16->32 5x5 3.61 / 3.77, 24->24 1.56 /
# 1.68); measured on AVX2 only, whose shifted-taps tile is 8 floats wide. Both paths forced: in
# auto, convolutions of 16 or more channels each way at these sizes take Winograd first.
SHIFT_TRAIN_MAX_PRODUCT = 576 if VECTOR_BYTES == 32 else 0
# Inference at a batch of two or more on output planes of at most PIXEL_STACK_MAX_PIXELS pixels,
# weights of at least PIXEL_STACK_MIN_WEIGHTS values, off Winograd: pixel-major with samples
# stacked in each product (conv2d_pixel_cpu._forward_stacked), which reads the weights once a
# block of samples; shifted taps read them once a sample and fill a few lanes of each tile (a 2x2
# plane 6 of 48). Batch 32, 2 threads, ms, stacked pixel-major / shift / im2col / Winograd
# (/work/probe/s12/stack.py): 512->512 at 2x2 5.3 / 48.2 / 11.6 / 11.0, 256->512 at stride 2
# to 2x2 2.6 / 11.9 / 5.6, 128->256 at stride 2 to 4x4 1.6 / 3.3 / 2.4; an imported ResNet-18
# at 64x64 (its last stage) ran 106 ms a batch of 32 where PyTorch took 48.
PIXEL_STACK_MAX_PIXELS = 16
PIXEL_STACK_MIN_WEIGHTS = 1 << 16
# Fewest input and output channels for which a stride-1 convolution takes the CPU's Winograd
# path (conv2d_winograd_cpu): with fewer, its tile transforms outweigh the products.
WINOGRAD_MIN_CHANNELS = 16
# Fewest output pixels for which a 2x2, 4x4 or 6x6 kernel (3x3 sub-kernels) takes the Winograd path.
WINOGRAD_MIN_PIXELS = 256
# Fewest for a 5x5 kernel (one F(4x4, 5x5) tile per 4x4 block). network3's conv2, 20->40 at
# 8x8 (64 pixels), 2 threads, pixel-major against Winograd: inference 1.4-1.7 against 0.70 ms
# at batch 64, 68-102 against 54-84 us at batch 1; training forward+backward 4.0-4.3 against
# 1.7-2.1 ms at batch 64. At 4x4 (16->32, batch 32) the training step lost: 0.38 against 0.65 ms.
WINOGRAD5_MIN_PIXELS = 64
# Fewest output pixels for which a 3x3 kernel takes it: at 4x4 (one tile per sample) the
# transforms and products lost to the column paths (one thread, batch 32, forward+backward:
# 128->256 58.0 ms against pixel-major 33.2, 64->128 9.99 against 8.59; with several samples per
# Winograd block, 20.8 against 15.3 and 4.57 against 3.91).
WINOGRAD3_MIN_PIXELS = 36
# Inference at a batch of two or more (several samples share a Winograd block) takes it from
# 3x3 outputs. Forward, 2 threads, one process alternating, us, pixel-major against Winograd:
# batch 256 64->128 at 4x4 5762 / 2287 (googlenet_mini's inc5a), batch 32 64->128 at 4x4
# 921 / 346, 128->256 at 4x4 3253 / 884, 32->64 at 4x4 210 / 143, 64->64 at 3x3 184 / 121,
# 5x5 364 / 345; batch 4 64->128 at 4x4 (im2col) 104 / 68. Level at batch 32 16->32 at 4x4
# (108 / 103) and batch 1 64->128 at 4x4 (im2col 60 / 61); lost at batch 1 64->64 at 3x3 (37 /
# 43), so batch 1 keeps WINOGRAD3_MIN_PIXELS. Training's forward+backward keeps it too: it
# lost at batch 32 (32->64 at 4x4 713 / 898, 64->64 at 3x3 599 / 749).
WINOGRAD3_INFERENCE_MIN_PIXELS = 9
# Fewest for a 3x3 kernel where im2col would split the sample over the threads (batch-1
# inference, conv2d_cpu.SPLIT_MIN_MACS): below it im2col's split product runs instead. At
# batch 1 a few tiles share each transformed weight, so Winograd streams weights 4x the size of
# im2col's (36 against 9 values per channel pair), on one thread (8x8 has one tile row a
# thread: WINOGRAD_SPLIT_MIN_ROWS). Whole models, 2 threads, one process alternating, five
# rounds, us, Winograd against im2col at 8x8: vgg_small (64->128 and 128->128) 788-800 / 731-743,
# resnet_bottleneck (64->64 twice) 1425-1489 / 1314-1395, googlenet_mini (32->64, 48->96) level
# (945-1019 / 950-1029). im2col at 16x16 as well (256 pixels) gave most of vgg_small's gain
# back (787-794 against 862-870 us for Winograd throughout, where 8x8 alone ran 716-742), and
# pixel-major at 8x8 (one thread) lost: 1021-1034 against 795-821 us.
WINOGRAD3_SPLIT_MIN_PIXELS = 65
# Inference at a batch of WINOGRAD5_INFERENCE_MIN_BATCH or more takes F(4x4, 5x5) from 16
# outputs (one tile); from WINOGRAD5_FEW_CHANNELS_MIN_BATCH on, also from 8 channels where
# C*K is at least WINOGRAD5_FEW_CHANNELS_MIN_PRODUCT. Forward with relu, 2 threads, one
# process alternating, us, pixel-major / Winograd (/ im2col where it led): batch 4 64->128 at
# 4x4 383 / 97, 32->64 at 4x4 91 / 47, 16->32 at 4x4 36 / 32; batch 32 8->16 at 16x16 413 /
# 321 (googlenet_mini's inc3b), 8->16 at 8x8 124 / 112, 12->12 at 4x4 61 / 53, 12->32 at 8x8
# 269 / 166, 10->20 at 4x4 66 / 63, 16->32 at 4x4 104 / 71; batch 256 8->16 at 16x16 3281 /
# 2335, 12->32 at 8x8 1992 / 1114, 16->32 at 4x4 677 / 329, 8->8 at 8x8 616 / 540. Kept out,
# lost or level: batch 2 16->32 at 4x4 (im2col 26 / 30); batch 4 under 16 channels (12->12 at
# 4x4 23 / 29, 8->16 at 8x8 30 / 35, though 12->32 at 8x8 won, 52 / 45); batch 32 8->8 at
# 8x8 (C*K 64: 91 / 97).
WINOGRAD5_INFERENCE_MIN_BATCH = 4
WINOGRAD5_INFERENCE_MIN_PIXELS = 16
WINOGRAD5_FEW_CHANNELS_MIN_BATCH = 32
WINOGRAD5_FEW_CHANNELS = 8
WINOGRAD5_FEW_CHANNELS_MIN_PRODUCT = 128
# A one-row 1x5 convolution (conv1d, kernel 5) takes the CPU's F(4, 5) path (conv1d_winograd_cpu)
# from this many input and output channels and outputs per row, and N * Q * min(C, K) of at
# least WINOGRAD1D_MIN_WORK: its transforms, the weights' on every call included, cost about
# (C + K) per output and its products save 12 * C * K. One thread, forward+backward and
# forward, im2col against F(4, 5), ms: N32 C=K=128 L256 47 / 14.6 against 26 / 8.5; N32 32
# L64 1.18 / 0.29 against 0.86 / 0.26; N1 128 L256 2.11 / 0.56 against 1.71 / 0.33; lost or
# level: N32 16 L64 0.48 / 0.15 against 0.65 / 0.18, N32 32 L16 (forward 0.14 against 0.17),
# N1 128 L64 (forward 0.135 against 0.146), N4 32 L64 (0.164 / 0.045 against 0.166 / 0.055).
WINOGRAD1D_MIN_CHANNELS = 32
WINOGRAD1D_MIN_OUTPUTS = 32
WINOGRAD1D_MIN_WORK = 32768
# Batch-1 inference at stride 1 (a 2-D kernel larger than 1x1, not a one-row conv1d) takes the
# shifted-taps path (conv2d_shift_cpu: a register tile reading the padded image in place) over
# every other, Winograd included; larger batches take it where Winograd does not apply. Whole
# models, 2 threads, one process each, five medians of 200 calls, us, before / after (float32,
# 3x3 and 5x5 convolutions on it, 1x1 not): vgg_small at batch 1 660-672 / 474-485,
# googlenet_mini 836-873 / 664-672, resnet_bottleneck 1227-1343 / 1138-1183, lenet5 54-55 /
# 49-50, network3 79-80 / 72; lenet5 at batch 32 342-353 / 253-258, at 256 2441-2582 /
# 1722-1789 (1 -> 6 and 6 -> 16 5x5, no Winograd). Where Winograd applies from batch 32 it kept
# the lead: vgg_small at 256 52.3-54.6 / 86.4-89.8 ms, googlenet_mini 52.9-55.6 / 62.4-66.6,
# network3 3.8-4.0 / 4.9-5.0; resnet_bottleneck at 256 167-171 / 173-184 ms. A 1x1 convolution
# keeps im2col's direct product: on the tile its rows of x, 4 KB apart at 32x32, were read
# from L2 (resnet_bottleneck's 64->16 at 32x32 in the model: 30 -> 42 us).
# The exception: a 1x1 stride-1 convolution from few channels to many, in inference at a batch
# of two or more, takes the tile too, which writes y straight from its registers there (the
# tile's grid is y's plane): its product is short (C taps) and wide (K rows), where OpenBLAS
# packs more than it multiplies. resnet_bottleneck at batch 256 in the model, 2 threads, ms,
# im2col / tile: 16->64 at 32x32 with the residual 9.4 / 6.4, 32->128 at 16x16 5.2-5.3 /
# 4.2-4.3, 16->16 at 32x32 1.30 / 1.23; lost: 64->16 at 32x32 5.2 / 8.4 (64 rows of x 4 KB
# apart), 64->256 at 8x8 3.3 / 4.0, googlenet_mini's 32->16 and 32->24 at 16x16 0.52 / 0.63,
# 0.64 / 0.85 (a tile's 8 rows half used); at batch 1 (tiles split over the threads) lost or
# level. The whole model at batch 32: 19.6-20.0 -> 17.4-18.0 ms; at 256: 173-178 -> 159-168.
SHIFT1X1_MAX_CHANNELS = 32 if VECTOR_BYTES == 64 else 0
SHIFT1X1_MIN_OUTPUTS = 64
# The exception to batch 1's shifted taps, on AMD's Zen 4 (AVX-512 run on 256-bit units; LLVM's
# "znver4"): a 3x3 stride-1 convolution of at least BATCH1_WINOGRAD_MIN_WORK = C*K*P*Q, from
# BATCH1_WINOGRAD_MIN_PIXELS outputs (8x8) and WINOGRAD_MIN_CHANNELS channels, takes Winograd's
# rows there. 2 threads, one-conv models with relu, eight alternating rounds, us, taps /
# Winograd (/work/probe/s23/paths.py): 32->32 at 32x32 119 / 99, 64->64 at 16x16 117 / 77-83,
# 128->128 at 8x8 150 / 106-108. Below the work some won and some lost: won 32->64 at 16x16
# 66 / 58, 48->96 at 8x8 63 / 57; level 64->128 at 8x8 81 / 79; lost 32->32 at 16x16 45 / 51,
# 32->64 at 8x8 30 / 39, 64->128 at 4x4 48 / 58. Whole models at batch 1 with Winograd from 32
# channels at any work (n1wino.py): vgg_small 569 -> 462 us, but resnet_bottleneck 890 -> 950 and
# googlenet_mini 536 -> 581; so the threshold takes the clear wins alone (vgg_small's 32->32,
# 64->64 and 128->128: the model 569-572 -> 488-491 us, alternating trees). The Intel Xeon
# (full-width AVX-512) measured taps ahead of Winograd at batch 1 (vgg_small 660-672 -> 474-485
# above), so other hosts keep the taps.
BATCH1_WINOGRAD = HOST_CPU == "znver4"
BATCH1_WINOGRAD_MIN_WORK = 1 << 20
BATCH1_WINOGRAD_MIN_PIXELS = 64
# Inference at a batch of two or more of a 3x3 stride-1 convolution of at most
# SHIFT3X3_MAX_CHANNELS channels in and out, on output rows two or more whole tiles wide, takes
# shifted taps over Winograd where the tile is AVX2's (4 by 16; a row at a time, straight to
# y, conv2d_shift_cpu._dense). AMD EPYC, 2 threads, in the model, alternated, ms, Winograd /
# taps: resnet_bottleneck's three 16->16 at 32x32, batch 32 34.6 / 31.9, 128 126.6 / 116.0,
# 256 266.1 / 247.0; vgg_small's 32->32 at 32x32, batch 32 15.9 / 15.4, 256 108.0 / 103.5.
# Lost: googlenet_mini's 24->32 at 16x16 (one tile a row; 47.1 / 48.6 at 128), every 3x3 of
# resnet_bottleneck (the 32->32 and 64->64 at 16x16 and 8x8 too: 127.4 / 122.2 against 116.0).
SHIFT3X3_MAX_CHANNELS = 32 if VECTOR_BYTES == 32 else 0  # measured on AVX2 only
# With AVX-512's tile (8 rows by 48 columns, on the padded grid), the same holds at 16 channels
# in and out on planes of SHIFT3X3_WIDE_MIN_PIXELS outputs or more: there Winograd's products
# are 16 wide and its transforms weigh the most. AMD EPYC (Zen 4), 2 threads, resnet_bottleneck
# at batch 256 (parts of 32), its three 16->16 at 32x32 in the model, alternating models, ms a
# node, Winograd / taps (/work/probe/s24/nodepaths.py): 10.1-10.5 / 7.2-7.5. Alone at batch 32
# (paths2.py), us: 16->16 at 32x32 1692 / 1462; lost or level elsewhere: 16->16 at 16x16 (N64)
# 496 / 524, at 8x8 (N256) 555 / 754, 16->32 at 32x32 1804 / 1957, 32->16 1628 / 1783, 16->24
# at 16x16 739 / 758; in models vgg_small's 32->32 at 32x32 20.2 / 25.8, googlenet_mini's 24->32
# and 32->48 at 16x16 4.4 / 5.6 and 6.0 / 10.4.
SHIFT3X3_WIDE_MAX_CHANNELS = 16 if VECTOR_BYTES == 64 else 0  # measured on Zen 4 only
SHIFT3X3_WIDE_MIN_PIXELS = 1024
PATHS = ("auto", "im2col", "pixel", "winograd", "shift")
ENV = "NUMBACNN_CONV2D_PATH"
_forced: list[str] = []  # force_path's stack; the innermost is in effect


@dataclass(frozen=True)
class Conv2dPlan:
    """One input shape's decisions. ``path``: what the forward runs; ``chunks``: parallel
    chunks of the batch; ``forward_scratch`` / ``backward_scratch``: (shape, dtype) of each
    scratch array the layer allocates and passes in that order (dtype None: the model's);
    ``tiles``: Winograd's tile rows per block (a multiple of a sample's when a block
    holds several small samples); ``weights``: the inference forward's kept
    Winograd weights (conv2d_winograd_cpu.WeightCache), None when a backward follows."""

    path: str
    geo: tuple[int, ...]
    out: tuple[int, ...]
    chunks: int = 1
    forward_scratch: tuple[tuple[tuple[int, ...], Any], ...] = ()
    backward_scratch: tuple[tuple[tuple[int, ...], Any], ...] = ()
    tiles: int = 0
    weights: Any = field(default=None, compare=False)
    #: How many leading ``forward_scratch`` arrays the backward reads (the forward keeps them:
    #: ``empty``); the others, and every ``backward_scratch`` array, live for one call only
    #: (``ctx.scratch``: in training, a block of the step's heap until the call returns).
    kept: int = 0
    #: The im2col forward's last call (conv2d_cpu._im2col_forward): its arrays and the kernel
    #: arguments made from them, reused while the same arrays come back (it keeps them alive).
    #: None where a backward follows: a training step's arrays kept past it raised vgg_small's
    #: step peak by about 6 MB (25-30 against 33-36 MB at batch 32), for no gain at its sizes.
    last: list | None = field(default_factory=list, compare=False)
    #: The training backward's path where it is not the forward's: a shifted-taps forward's is
    #: "im2col" or "pixel" (conv2d_cpu.conv2d_plan).
    backward_path: str = ""


@contextlib.contextmanager
def force_path(path: str) -> Iterator[None]:
    """Plans made inside the block take ``path`` ("auto", "im2col", "pixel", "winograd", "shift") for
    every CPU conv2d and conv1d; an already planned input size keeps its plan."""
    _check_name(path, "force_path")
    _forced.append(path)
    try:
        yield
    finally:
        _forced.pop()


def _check_name(path: str, where: str) -> None:
    if path not in PATHS:
        raise ValueError(f"{where}: unknown conv2d path {path!r}: expected one of {', '.join(PATHS)}")


def requested() -> str:
    """The path asked for: force_path's, else the environment's, else "auto"."""
    if _forced:
        return _forced[-1]
    path = os.environ.get(ENV, "auto").strip().lower() or "auto"
    _check_name(path, f"environment variable {ENV}")
    return path


def direct(geo: tuple[int, ...], in_hw: tuple[int, ...], out_hw: tuple[int, ...]) -> bool:
    """A 1x1, stride-1, unpadded convolution: a plain product with x, no column matrix."""
    _, R, S, sh, sw, _, _, pt, pl = geo
    return (R, S, sh, sw, pt, pl) == (1, 1, 1, 1, 0, 0) and tuple(in_hw) == tuple(out_hw)


def one_row_winograd(geo: tuple[int, ...], x_shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """A convolution conv1d_winograd_cpu runs: one row in and out (conv1d), a 1x5 kernel,
    groups 1, stride 1, no dilation."""
    G, R, S, sh, sw, dh, dw, pt, _ = geo
    return (G, R, S, sh, sw, dh, dw, pt) == (1, 1, 5, 1, 1, 1, 1, 0) and x_shape[2] == 1 and out[2] == 1


def pixel_major(x_shape: tuple[int, ...], out: tuple[int, ...], geo: tuple[int, ...]) -> bool:
    """Whether pixel-major's column runs are long enough, and its weight layout cheap enough,
    for the (N, C, H, W) input giving (N, K, P, Q) ``out`` (a stride-1, groups-1 convolution
    whose x is not its own column matrix; not one-row)."""
    G, R, S, sh, sw, dh, dw, _, _ = geo
    C, K, P, Q = x_shape[1], out[1], out[2], out[3]
    return (G == 1 and not direct(geo, x_shape[2:], out[2:]) and not (x_shape[2] == 1 and R == 1)
            and (sh, sw) == (1, 1) and C * (S if dw == 1 else 1) >= PIXEL_MAJOR_MIN_RUN
            and K < PIXEL_MAJOR_MAX_K_PER_ROW * x_shape[0] * P * Q)


# Fewest tile rows (4 output rows each) per thread for which an inference Winograd 3x3 conv at batch
# 1 splits its tile rows over the threads (conv2d_forward_winograd_rows, a kernel of its own). Batch
# 1, 2 threads, one process alternating, medians (us, split against whole): 16->16 at 32x32 62 / 97,
# at 16x16 33 / 40; 32->32 at 16x16 46 / 63, at 32x32 125 / 220; 64->64 at 16x16 84 / 134; 16->16 at
# 64x64 163 / 309. At 8x8 (a tile row a thread) it lost: 128->128 127 / 121, 64->128 87 / 82, 48->96 67 / 63.
WINOGRAD_SPLIT_MIN_ROWS = 2


def cpu_path(name: str, x_shape: tuple[int, ...], out: tuple[int, ...], geo: tuple[int, ...], dtype: Any,
             backward: bool = True, split: bool = False) -> str:
    """The CPU path for an (N, C, H, W) ``dtype`` input giving (N, K, P, Q) ``out``: the forced
    one if any (checked), else im2col in float64 (see above), else the fastest measured
    (``backward``: for a training forward and its backward, else for inference; ``split``: an
    im2col forward would split each sample over the threads, conv2d_cpu.SPLIT_MIN_MACS)."""
    G, R, S, sh, sw, dh, dw, _, _ = geo
    C, K, P, Q = x_shape[1], out[1], out[2], out[3]
    winograd_fits = G == 1 and (sh, sw, dh, dw) == (1, 1, 1, 1) and 2 <= R <= 6 and 2 <= S <= 6
    row_fits = one_row_winograd(geo, x_shape, out)
    pixel_fits = G == 1 and not direct(geo, x_shape[2:], out[2:])
    shift_fits = True  # any groups, stride, padding and dilation
    want = requested()
    if want != "auto":
        why = ""
        if want == "winograd" and not (winograd_fits or row_fits):
            why = ("Winograd needs groups 1, stride 1, no dilation and a 2x2 to 6x6 kernel (or a one-row "
                   f"1x5 kernel: conv1d's kernel_size 5); found groups {G}, stride {sh}x{sw}, dilation "
                   f"{dh}x{dw}, kernel {R}x{S}")
        elif want == "pixel" and not pixel_fits:
            why = f"pixel-major needs groups 1 and a column matrix; found groups {G}"
            if direct(geo, x_shape[2:], out[2:]):
                why += ", a 1x1 stride-1 unpadded kernel (x is its own column matrix)"
        if why:
            raise ValueError(f"node '{name}': conv2d path '{want}' was forced ({ENV} or force_path) but cannot run "
                             f"this convolution: {why}. Force it only around layers it fits, or use 'auto'")
        return "winograd1d" if want == "winograd" and row_fits else want
    if np.dtype(dtype) == np.float64:
        return "im2col"
    one_row = x_shape[2] == 1 and R == 1
    shift = shift_fits and G == 1 and R * S > 1 and not one_row  # where the default may take it
    if (BATCH1_WINOGRAD and not backward and x_shape[0] == 1 and winograd_fits and (R, S) == (3, 3)
            and P * Q >= BATCH1_WINOGRAD_MIN_PIXELS and min(C, K) >= WINOGRAD_MIN_CHANNELS
            and C * K * P * Q >= BATCH1_WINOGRAD_MIN_WORK):
        return "winograd"
    if shift and not backward and x_shape[0] == 1:
        return "shift"
    if (row_fits and min(C, K) >= WINOGRAD1D_MIN_CHANNELS and Q >= WINOGRAD1D_MIN_OUTPUTS
            and x_shape[0] * Q * min(C, K) >= WINOGRAD1D_MIN_WORK):
        return "winograd1d"
    # Winograd: enough channels and output pixels (3x3: 36, 9 in inference at a batch of two
    # or more; 5x5, one F(4x4, 5x5): 64, 16 in inference at a batch of four or more, with 8
    # channels from a batch of 32 where C*K >= 128; others, four 3x3 sub-kernels: 256): below that its many
    # small products per sample cost more than the im2col product they replace.
    N, few = x_shape[0], WINOGRAD_MIN_CHANNELS
    three = WINOGRAD3_MIN_PIXELS if backward or N < 2 else WINOGRAD3_INFERENCE_MIN_PIXELS
    five = WINOGRAD5_MIN_PIXELS if backward or N < WINOGRAD5_INFERENCE_MIN_BATCH else WINOGRAD5_INFERENCE_MIN_PIXELS
    if ((R, S) == (5, 5) and not backward and N >= WINOGRAD5_FEW_CHANNELS_MIN_BATCH
            and C * K >= WINOGRAD5_FEW_CHANNELS_MIN_PRODUCT):
        few = WINOGRAD5_FEW_CHANNELS
    least = three if max(R, S) <= 3 else five if (R, S) == (5, 5) else WINOGRAD_MIN_PIXELS
    NR = tile_columns(4)  # the float32 tile's
    if ((R, S, sh, sw, dh, dw, G) == (3, 3, 1, 1, 1, 1, 1) and not backward and N >= 2
            and ((max(C, K) <= SHIFT3X3_MAX_CHANNELS and Q % NR == 0 and Q >= 2 * NR)
                 or (max(C, K) <= SHIFT3X3_WIDE_MAX_CHANNELS and P * Q >= SHIFT3X3_WIDE_MIN_PIXELS))):
        return "shift"
    if winograd_fits and min(C, K) >= few and P * Q >= least:
        if split and max(R, S) <= 3 and P * Q < WINOGRAD3_SPLIT_MIN_PIXELS:
            return "im2col"  # not pixel-major, which runs a sample on one thread
        return "winograd"
    if (pixel_fits and not backward and N >= 2 and P * Q <= PIXEL_STACK_MAX_PIXELS
            and K * C * R * S >= PIXEL_STACK_MIN_WEIGHTS):
        return "pixel"
    if shift and not backward:
        return "shift"
    if ((R, S, sh, sw, G) == (1, 1, 1, 1, 1) and not backward and x_shape[0] >= 2 and C <= SHIFT1X1_MAX_CHANNELS
            and K >= SHIFT1X1_MIN_OUTPUTS):
        return "shift"
    # Pixel-major copies runs of S*C values (C when dilated); below PIXEL_MAJOR_MIN_RUN they
    # are too short to beat the channel-major im2col. It copies the whole input to HWC first,
    # which a strided convolution only partly reads: there the channel-major path was as fast
    # or faster (1x1 stride 2, 256->512 at 16x16, batch 32: forward+backward 11.3 ms against
    # 16.8 ms).
    # A one-row convolution (conv1d: H = 1, a 1-high kernel) stays channel-major: its column
    # rows are whole rows of x and its product writes y as it is laid out, so the pixel-major
    # path's HWC copy and transposes are all overhead (conv1d N32-128x256-K128-k5-p2,
    # forward+backward, 2 threads, separate processes: 23.3-23.5 ms against 26.1-26.6 ms;
    # one thread 46.5-48.6 against 50.2-54.7 ms).
    # It also lays the weights out pixel-major on every call, K*C*R*S values for N*P*Q rows of
    # output: with K >= PIXEL_MAJOR_MAX_K_PER_ROW * N*P*Q that outweighs what it saves (a
    # model at batch 1, whole models with overhead, us, pixel-major against im2col:
    # googlenet_mini's 64->128 3x3 at 4x4 93 against 59; level: 16->32 5x5 at 4x4, 27 against
    # 28, and 32->64 3x3 at 8x8, 57 against 54).
    if pixel_major(x_shape, out, geo):
        # Few channels: shifted taps' forward beat pixel-major's, whose backward beat im2col's
        # (SHIFT_TRAIN_MAX_PRODUCT): the forward on shifted taps, the backward pixel-major
        # (conv2d_cpu.conv2d_plan).
        return "shift" if shift and backward and C * K <= SHIFT_TRAIN_MAX_PRODUCT else "pixel"
    # A training step's im2col convolution (few input channels: a first layer) runs its forward
    # on shifted taps and its backward on im2col (conv2d_cpu), so that the step and the
    # inference after it share one forward kernel: lenet5's conv1 (1 -> 6 5x5) took shifted
    # taps in inference and im2col's forward in training, and a cold ``numbacnn train`` compiled
    # both (14.8-14.9 s against 11.9-12.4 before the inference rule).
    return "shift" if shift and (sh, sw) == (1, 1) else "im2col"
