"""The training step's heap (numbacnn/_heap.py): best-fit blocks, split to fit, merged when freed."""

import numpy as np

from numbacnn._heap import Heap
from numbacnn.device import ALIGN, get_backend


def _span(a: np.ndarray) -> tuple[int, int]:
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def test_a_freed_block_is_split_for_a_smaller_request_and_merged_back():
    heap = Heap(get_backend("cpu"))
    f32 = np.dtype(np.float32)
    a = heap.take((4, 25), f32)  # 100 floats: 7 lines of 16
    room = heap.allocated_bytes
    assert room == (112 + ALIGN // 4) * 4  # and a line of slack, for the first block to start on a line
    heap.drop(heap.base_of(a))
    c = heap.take((60,), f32)  # the first 64 of a's 112
    d = heap.take((40,), f32)  # the other 48: nothing new
    assert heap.allocated_bytes == room
    assert _span(c)[0] == _span(a)[0] and _span(d)[0] == _span(c)[0] + 64 * 4
    heap.drop(heap.base_of(c))
    heap.drop(heap.base_of(d))
    e = heap.take((100,), f32)  # c and d merged again
    assert heap.allocated_bytes == room and _span(e)[0] == _span(a)[0]
    assert heap.take((5,), np.dtype(np.int32)).dtype == np.int32  # another dtype: a chunk of its own
    assert heap.allocated_bytes == room + (16 + ALIGN // 4) * 4


def test_a_new_chunk_is_as_large_as_the_heap_so_far():
    # Chunks cut to each request leave later requests nowhere to go: here the third request
    # would have needed a chunk of its own. A grown chunk's unused pages take no memory.
    heap = Heap(get_backend("cpu"))
    f32 = np.dtype(np.float32)
    heap.take((1000,), f32)  # 1008 floats, in a chunk of 1008 + 16
    small = heap.take((10,), f32)  # no room: a chunk for 1024 floats
    assert heap.allocated_bytes == (1008 + 16) * 4 + (1024 + 16) * 4
    more = heap.take((900,), f32)  # in the second chunk, after small
    assert heap.allocated_bytes == (1008 + 16) * 4 + (1024 + 16) * 4
    assert _span(more)[0] == _span(small)[0] + 16 * 4
    # written so far: the whole first chunk's block, 16 + 912 floats of the second
    assert heap.resident_bytes <= (1008 + 16) * 4 + (16 + 912 + 16) * 4
    huge = heap.take((100_000,), f32)  # larger than the heap so far: a chunk its size
    assert huge.base.nbytes == (100_000 + 16) * 4


def test_every_block_starts_on_a_64_byte_line():
    heap = Heap(get_backend("cpu"))
    rng = np.random.default_rng(0)
    live = []
    for _ in range(300):
        if live and rng.random() < 0.4:
            heap.drop(heap.base_of(live.pop(int(rng.integers(len(live))))))
        else:
            dtype = np.dtype(rng.choice([np.float32, np.float64, np.int32, np.int64]))
            a = heap.take((int(rng.integers(1, 300)),), dtype)
            assert a.ctypes.data % ALIGN == 0, (a.size, dtype)
            live.append(a)


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
    assert heap.live_bytes == sum(-(-a.nbytes // ALIGN) * ALIGN for a, _ in live)  # whole lines
