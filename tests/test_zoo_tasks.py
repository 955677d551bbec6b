"""The MNIST-derived datasets the second-phase zoo models train on (numbacnn._mnist_tasks)."""

import numpy as np
import pytest

from numbacnn import data
from numbacnn._mnist_tasks import NOISE_STD, VIDEO_FRAMES, VIDEO_SIZE, make_task


def images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28), np.float32)
    x[:, :, 4:24, 6:22] = rng.random((n, 1, 20, 16), dtype=np.float32)  # a "digit" off the border
    return x, rng.integers(0, 10, n)


def test_pad32_centres_the_image():
    x, y = images()
    p, labels = make_task("pad32", x, y)
    assert p.shape == (6, 1, 32, 32) and p.dtype == np.float32 and labels is y
    np.testing.assert_array_equal(p[:, :, 2:30, 2:30], x)
    assert p.sum() == x.sum()


def test_rows_are_the_sequence_steps():
    x, y = images()
    s, _ = make_task("rows", x, y)
    assert s.shape == (6, 28, 28) and s.flags.c_contiguous
    # step (L) t holds image row t; channel c holds pixel column c
    for t in (0, 5, 27):
        np.testing.assert_array_equal(s[:, :, t], x[:, 0, t, :])


def test_video_moves_the_halved_digit_one_pixel_a_frame():
    x, y = images(40)
    v, _ = make_task("video", x, y, seed=3)
    assert v.shape == (40, 1, VIDEO_FRAMES, VIDEO_SIZE, VIDEO_SIZE) and v.dtype == np.float32
    small = x[:, 0].reshape(40, 14, 2, 14, 2).mean(axis=(2, 4))
    moves = set()
    for i in range(40):
        # find the digit in every frame: each frame holds it whole, once, somewhere
        where = []
        for t in range(VIDEO_FRAMES):
            hits = [(r, c) for r in range(VIDEO_SIZE - 13) for c in range(VIDEO_SIZE - 13)
                    if np.array_equal(v[i, 0, t, r:r + 14, c:c + 14], small[i])]
            assert hits, (i, t)
            assert np.isclose(v[i, 0, t].sum(), small[i].sum(), rtol=1e-5)
            where.append(hits[0])
        steps = np.diff(np.array(where), axis=0)
        assert (steps == steps[0]).all() and np.abs(steps[0]).max() <= 1, where
        moves.add(tuple(steps[0]))
    assert len(moves) > 3  # the direction is drawn per sample
    again, _ = make_task("video", x, y, seed=3)
    np.testing.assert_array_equal(v, again)


def test_denoise_pairs_noisy_inputs_with_clean_targets():
    x, y = images(200)
    noisy, clean = make_task("denoise", x, y)
    assert clean is x and noisy.dtype == np.float32 and noisy.shape == x.shape
    assert noisy.min() == 0 and noisy.max() == 1
    np.testing.assert_array_equal(make_task("denoise", x, y)[0], noisy)
    # On mid-grey, noise of std 0.5 clips to 0 with probability P(z < -1) = 0.1587, and the
    # noise is otherwise unbiased.
    grey = np.full((200, 1, 28, 28), 0.5, np.float32)
    g, _ = make_task("denoise", grey, y, seed=1)
    assert abs((g == 0).mean() - 0.1587) < 0.005 and abs((g == 1).mean() - 0.1587) < 0.005
    assert abs(g.mean() - 0.5) < 0.005 and NOISE_STD == 0.5


def test_bad_task_and_bad_images():
    x, y = images()
    with pytest.raises(ValueError, match="unknown MNIST task 'sound'; expected one of pad32, rows"):
        make_task("sound", x, y)
    with pytest.raises(ValueError, match=r"expected images \(N, 1, H, W\), found \(6, 28, 28\)"):
        make_task("rows", x[:, 0], y)


@pytest.mark.parametrize("name", ["mnist32-t10k", "mnist-rows-t10k", "mnist-video-t10k", "mnist-denoise-t10k"])
def test_named_datasets_from_the_real_test_set(name, mnist_dir):
    (x, y), (xv, yv) = data.load_dataset(name, mnist_dir)
    assert len(x) == 8000 and len(xv) == 2000 and x.shape[1:] == data.DATASET_SHAPES[name]
    assert x.dtype == np.float32 and x.flags.c_contiguous
    (m, labels), _ = data.load_dataset("mnist-t10k", mnist_dir)
    if name == "mnist-denoise-t10k":
        np.testing.assert_array_equal(y, m)
    else:
        np.testing.assert_array_equal(y, labels)
