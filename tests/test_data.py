import functools
import gzip
import http.server
import shutil
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

from numbacnn import augment, data
from numbacnn.data import DatasetError


def write_idx(path, array, magic):
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    raw = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def synthetic_mnist(folder, n_images=5, n_labels=5, prefix="t10k"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n_labels, dtype=np.uint8)
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, 0x803)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, 0x801)
    return images, labels


def test_load_digits():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_load_digits_reads_scikit_learns_file_without_importing_it_and_matches_its_loader():
    code = ("import sys, numbacnn.data as d\n"
            "assert d._digits_table() is not None\n"
            "d.load_digits()\n"
            "print(sorted(m for m in sys.modules if m == 'sklearn' or m.startswith('sklearn.')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    sk = pytest.importorskip("sklearn.datasets").load_digits()
    x, y = data.load_digits()
    np.testing.assert_array_equal(x, (sk.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8))
    np.testing.assert_array_equal(y, sk.target)


def test_train_test_split():
    x, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10)
    (a, ya), (b, yb) = data.train_test_split(x, y, test_size=0.3, seed=1)
    assert len(a) == 7 and len(b) == 3 and not set(ya) & set(yb)
    (a, _), (b, yb) = data.train_test_split(x, y, test_size=2, shuffle=False)
    assert list(yb) == [8, 9] and len(a) == 8
    with pytest.raises(ValueError, match="leaves no training"):
        data.train_test_split(x, y, test_size=10)


def test_raw_idx_round_trip(tmp_path):
    images, labels = synthetic_mnist(tmp_path)
    x, y = data.load_mnist(tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("cut,match", [(100, "truncated: the header"), (3000, "truncated: the header"),
                                       (784 * 5 + 14, "shorter than the 16-byte IDX header")])
def test_truncated_idx_refused(tmp_path, cut, match):
    synthetic_mnist(tmp_path)
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-cut])
    with pytest.raises(DatasetError, match=match) as e:
        data.load_mnist(tmp_path)
    assert str(f) in str(e.value)


def test_mismatched_counts_refused(tmp_path):
    synthetic_mnist(tmp_path, n_images=5, n_labels=4)
    with pytest.raises(DatasetError, match="holds 5 images but .*labels-idx1-ubyte holds 4 labels"):
        data.load_mnist(tmp_path)


def test_bad_magic_and_label_refused(tmp_path):
    synthetic_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((5, 28, 28), np.uint8), 0x803)
    with pytest.raises(DatasetError, match="magic number 0x00000803, expected 0x00000801"):
        data.load_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 2, 3, 4, 12], np.uint8), 0x801)
    with pytest.raises(DatasetError, match="corrupt: label 12"):
        data.load_mnist(tmp_path)


def test_missing_split_says_what_to_do(tmp_path):
    synthetic_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz: no such file .*download=True"):
        data.load_mnist(tmp_path, split="train")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_mnist(tmp_path, split="val")


def test_real_mnist_test_set(mnist_dir):
    x, y = data.load_mnist(mnist_dir)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert 0.0 == x.min() and x.max() == 1.0
    assert list(y[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_official_gzip_refused(tmp_path, mnist_dir, damage):
    for f in mnist_dir.glob("t10k-*.gz"):
        shutil.copy(f, tmp_path / f.name)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[5000] ^= 0xFF
    else:
        del raw[len(raw) // 2:]
    target.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz: corrupt: md5 \w+, expected 9fb629c4"):
        data.load_mnist(tmp_path)


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/'served'."""
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_into_cache(http_dir, mnist_dir, tmp_path, monkeypatch):
    served, url = http_dir
    for f in mnist_dir.glob("t10k-*.gz"):
        shutil.copy(f, served / f.name)
    monkeypatch.setenv("NUMBACNN_DATA", str(tmp_path / "cache"))
    x, y = data.load_mnist(download=True, url=url)
    assert x.shape == (10000, 1, 28, 28)
    cached = sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir())
    assert cached == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for f in served.iterdir():
        f.unlink()
    x2, _ = data.load_mnist()  # from the cache now, no server files needed
    np.testing.assert_array_equal(x, x2)


def test_download_refuses_corrupt_and_missing(http_dir, tmp_path):
    served, url = http_dir
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not the real file")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz: downloaded file is corrupt: md5"):
        data.load_mnist(cache, download=True, url=url)
    assert not any(cache.iterdir())  # nothing half-downloaded is kept
    (served / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="download failed .*404"):
        data.load_mnist(cache, download=True, url=url)


def write_cifar(path, records, labels=None):
    rng = np.random.default_rng(0)
    rec = rng.integers(0, 256, (records, data.CIFAR_RECORD), dtype=np.uint8)
    rec[:, 0] = rng.integers(0, 10, records) if labels is None else labels
    rec.tofile(path)
    return rec


def test_cifar10_test_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rec = write_cifar(folder / "test_batch.bin", data.CIFAR_PER_BATCH)
    x, y = data.load_cifar10(tmp_path, split="test")  # the parent folder works too
    assert x.shape == (10000, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, rec[:, 0])
    i, c, h, w = 17, 2, 5, 30  # channel planes of 1024 bytes, rows of 32
    assert x[i, c, h, w] == np.float32(rec[i, 1 + c * 1024 + h * 32 + w]) / np.float32(255)


@pytest.mark.parametrize("records,match", [(9999, "truncated: 30726927 bytes"), (10001, "corrupt \\(too long\\)")])
def test_cifar10_wrong_size_refused(tmp_path, records, match):
    write_cifar(tmp_path / "test_batch.bin", records)
    with pytest.raises(DatasetError, match=match) as e:
        data.load_cifar10(tmp_path, split="test")
    assert "test_batch.bin" in str(e.value)


def test_cifar10_cut_mid_record_and_bad_label_refused(tmp_path):
    f = tmp_path / "test_batch.bin"
    write_cifar(f, data.CIFAR_PER_BATCH)
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(DatasetError, match="truncated"):
        data.load_cifar10(tmp_path, split="test")
    labels = np.zeros(data.CIFAR_PER_BATCH, np.uint8)
    labels[123] = 11
    write_cifar(f, data.CIFAR_PER_BATCH, labels)
    with pytest.raises(DatasetError, match="record 123 has label 11"):
        data.load_cifar10(tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin: no such file"):
        data.load_cifar10(tmp_path, split="train")


def test_load_dataset_names():
    (x, y), (xv, yv) = data.load_dataset("digits")
    assert len(x) + len(xv) == 1797 and len(xv) == 359
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="cifar10: give the folder"):
        data.load_dataset("cifar10")


def test_load_dataset_refuses_arguments_it_would_ignore(tmp_path):
    with pytest.raises(ValueError, match="digits: scikit-learn's bundled digits read no files; path="):
        data.load_dataset("digits", tmp_path)
    with pytest.raises(ValueError, match="digits: download=True applies to MNIST only"):
        data.load_dataset("digits", download=True)
    with pytest.raises(ValueError, match="cifar10: download=True applies to MNIST only"):
        data.load_dataset("cifar10", tmp_path, download=True)


def test_missing_mnist_file_is_a_missing_data_error(tmp_path):
    with pytest.raises(data.MissingDataError) as e:
        data.load_mnist(tmp_path)
    assert isinstance(e.value, FileNotFoundError)
    assert e.value.file == tmp_path / "t10k-images-idx3-ubyte.gz" and e.value.present == []


def test_random_shift():
    rng = np.random.default_rng(0)
    x = rng.random((20, 2, 6, 7)).astype(np.float32)
    out = augment.RandomShift(1)(x, np.random.default_rng(5))
    assert out.shape == x.shape and out.dtype == np.float32
    for i in range(len(x)):
        padded = np.pad(x[i], ((0, 0), (1, 1), (1, 1)))
        assert any(np.array_equal(out[i], padded[:, 1 - a:7 - a, 1 - b:8 - b])
                   for a in (-1, 0, 1) for b in (-1, 0, 1))
    np.testing.assert_array_equal(out, augment.RandomShift(1)(x, np.random.default_rng(5)))
    np.testing.assert_array_equal(augment.RandomShift(0)(x, rng), x)


def test_random_crop_flip():
    x = np.random.default_rng(0).random((30, 3, 5, 5)).astype(np.float32)
    out = augment.RandomCropFlip(padding=0)(x, np.random.default_rng(1))
    flipped = [np.array_equal(o, xi[:, :, ::-1]) for o, xi in zip(out, x)]
    assert all(f or np.array_equal(o, xi) for f, o, xi in zip(flipped, out, x))
    assert 5 < sum(flipped) < 25
    out = augment.RandomCropFlip(padding=2, flip=False)(x, np.random.default_rng(1))
    assert out.shape == x.shape and (out == 0).any()


def test_augment_parse():
    assert repr(augment.parse("shift:2")) == "RandomShift(2)"
    assert repr(augment.parse("crop-flip")) == "RandomCropFlip(padding=4, flip=True)"
    for bad, match in (("rotate", "unknown augmentation"), ("shift:-1", "max_shift must be")):
        with pytest.raises(ValueError, match=match):
            augment.parse(bad)
