"""The CUDA backend's caching allocator (numbacnn/_cuda_pool.py): its bookkeeping with fake
blocks on any machine, and on a real GPU that a freed array's memory is handed out again only
once no array or view over it is left."""

import gc
import threading
import weakref

import numpy as np
import pytest

from numbacnn import _cuda_pool


class Block:
    made = 0

    def __init__(self, size):
        Block.made += 1
        self.size, self.id = size, Block.made


class FakeArray:
    def __init__(self, block, shape, dtype, release):
        self.block, self.shape, self.dtype = block, shape, dtype
        weakref.finalize(self, release)


def pool(fail=()):
    fail = list(fail)

    def alloc(size):
        if fail and fail.pop(0):
            raise MemoryError("out of memory (planted)")
        return Block(size)

    p = _cuda_pool.Pool(alloc=alloc, wrap=FakeArray, context=lambda: "ctx", flush=lambda: flushed.append(1))
    flushed = p.flushed = []
    return p


def test_a_freed_block_is_handed_out_again_for_the_same_rounded_size():
    p = pool()
    a = p.array((10, 10), np.float32)  # 400 bytes: one granule
    first = a.block.id
    b = p.array((3,), np.float64)  # also one granule, while a is alive: a block of its own
    assert b.block.id != first and p.misses == 2
    del a
    gc.collect()
    assert p.cached_bytes == _cuda_pool.GRANULE
    c = p.array((128,), np.float32)  # 512 bytes: a's block
    assert c.block.id == first and p.hits == 1 and p.cached_bytes == 0
    d = p.array((129,), np.float32)  # 516 bytes: two granules, a new block
    assert d.block.size == 2 * _cuda_pool.GRANULE and d.block.id not in (first, b.block.id)


def test_a_zero_sized_array_still_gets_a_block():
    p = pool()
    assert p.array((0, 4), np.float32).block.size == _cuda_pool.GRANULE


def test_a_failed_allocation_releases_the_cache_and_tries_once_more():
    p = pool(fail=[False, True])
    a = p.array((1000,), np.float32)
    del a
    gc.collect()
    assert p.cached_bytes > 0
    b = p.array((2000,), np.float32)  # the first try fails: the cached block is dropped, then it works
    assert b.block.size == 8192 and p.cached_bytes == 0


def test_a_release_from_a_collection_inside_the_pool_does_not_deadlock():
    # A finalizer may run on any allocation, the pool's own while it holds its lock: releases
    # only queue the block, so a collection there returns it instead of waiting on the lock.
    p = pool()
    a = p.array((10,), np.float32)
    cycle = [a]
    cycle.append(cycle)  # only the cycle collector frees it
    del a, cycle

    class CollectingDict(dict):
        def get(self, key, default=None):
            gc.collect()  # the collection lands inside array()'s locked section
            return super().get(key, default)

    p._free = CollectingDict()
    got = []
    worker = threading.Thread(target=lambda: got.append(p.array((10,), np.float32)), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the pool deadlocked on a release from inside its own lock"
    assert p.cached_bytes == _cuda_pool.GRANULE  # a's block, released during the collection
    p._free = dict(p._free)
    assert p.array((10,), np.float32).block.size == _cuda_pool.GRANULE and p.hits == 1


def test_a_failed_allocation_with_nothing_cached_raises():
    p = pool(fail=[True])
    with pytest.raises(MemoryError, match="planted"):
        p.array((10,), np.float32)


def test_empty_drops_the_cached_blocks():
    p = pool()
    arrays = [p.array((n,), np.float32) for n in (100, 1000)]
    ids = {a.block.id for a in arrays}
    del arrays
    gc.collect()
    assert p.empty() == _cuda_pool.GRANULE + 4096 and p.flushed == [1]  # numba told to free them now
    assert p.cached_bytes == 0 and p.array((100,), np.float32).block.id not in ids


@pytest.mark.cuda
def test_device_arrays_reuse_memory_only_once_unreferenced():
    from numbacnn.device import get_backend, is_simulator

    if is_simulator():
        pytest.skip("the simulator's arrays are NumPy's: no pool")
    backend = get_backend("cuda")
    ptr = lambda a: a.device_ctypes_pointer.value  # noqa: E731
    a = backend.new((64, 64), np.float32)
    where = ptr(a)
    view = a[3:5]
    del a
    gc.collect()
    b = backend.new((64, 64), np.float32)  # a view still reads the first block
    assert ptr(b) != where
    del view
    gc.collect()
    c = backend.new((64, 64), np.float32)
    assert ptr(c) == where
    host = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    c.copy_to_device(host)
    np.testing.assert_array_equal(backend.to_host(c), host)
    d = backend.to_device(host * 2)  # through the pool too
    np.testing.assert_array_equal(d.copy_to_host(), host * 2)
