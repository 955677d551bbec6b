"""The training step's heap (numbacnn/_heap.py): best-fit blocks, split to fit, merged when freed."""

import numpy as np

from numbacnn._heap import Heap
from numbacnn.device import get_backend


def _span(a: np.ndarray) -> tuple[int, int]:
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def test_a_freed_block_is_split_for_a_smaller_request_and_merged_back():
    heap = Heap(get_backend("cpu"))
    a = heap.take((4, 25), np.dtype(np.float32))
    b = heap.take((10,), np.dtype(np.float32))
    assert heap.allocated_bytes == 440
    heap.drop(heap.base_of(a))
    c = heap.take((60,), np.dtype(np.float32))  # the first 60 of a's 100
    d = heap.take((40,), np.dtype(np.float32))  # the other 40: nothing new
    assert heap.allocated_bytes == 440
    assert _span(c)[0] == _span(a)[0] and _span(d)[0] == _span(c)[1]
    heap.drop(heap.base_of(c))
    heap.drop(heap.base_of(d))
    e = heap.take((100,), np.dtype(np.float32))  # c and d merged again
    assert heap.allocated_bytes == 440 and _span(e)[0] == _span(a)[0]
    assert heap.take((5,), np.dtype(np.int32)).dtype == np.int32  # another dtype: a chunk of its own
    assert heap.allocated_bytes == 460
    assert heap.base_of(b) is not heap.base_of(e)


def test_an_empty_request_never_names_another_values_block():
    # NumPy points every empty slice at its array's first element: an empty request served
    # from a later block of a chunk was found by base_of as the chunk's first block, another
    # value's, whose drop then freed that value's memory while it was live (a batch norm
    # without affine parameters asks for (0,) arrays: its input gradient came back NaN).
    heap = Heap(get_backend("cpu"))
    f32 = np.dtype(np.float32)
    heap.drop(heap.base_of(heap.take((64,), f32)))
    c = heap.take((3,), f32)  # the chunk's first block; the rest is free
    c.fill(7.0)
    z = heap.take((0,), f32)
    assert z.shape == (0,) and heap.base_of(z) is None
    assert heap.base_of(c).refs == 1
    d = heap.take((40,), f32)
    d.fill(-1.0)
    assert np.all(c == 7.0) and not np.shares_memory(c, d)


def test_base_of_finds_the_block_of_any_view_and_nothing_for_foreign_arrays():
    heap = Heap(get_backend("cpu"))
    heap.take((8,), np.dtype(np.float32))
    x = heap.take((2, 3, 4), np.dtype(np.float32))
    block = heap.base_of(x)
    assert heap.base_of(x.reshape(6, 4)) is block and heap.base_of(x[1]) is block
    assert heap.base_of(x.reshape(24)[5:9]) is block
    assert heap.base_of(np.zeros(3, np.float32)) is None and heap.base_of((2, 3)) is None


def test_live_blocks_never_overlap_over_random_takes_and_drops():
    heap = Heap(get_backend("cpu"))
    rng = np.random.default_rng(0)
    live: list[tuple[np.ndarray, float]] = []
    for step in range(400):
        if live and rng.random() < 0.45:
            a, value = live.pop(int(rng.integers(len(live))))
            assert np.all(a == value), "a live block was overwritten"
            heap.drop(heap.base_of(a))
        else:
            a = heap.take((int(rng.integers(1, 50)),), np.dtype(np.float32))
            a.fill(float(step))
            live.append((a, float(step)))
    spans = sorted(_span(a) for a, _ in live)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    assert heap.live_bytes == sum(a.nbytes for a, _ in live)
