"""Datasets: ``load_digits()``, ``load_mnist()``, ``load_cifar10()``; splits and named datasets
(among them tasks made from the MNIST test set for the zoo's 32x32, 1-D, 3-D and image-to-image
models: ``numbacnn._mnist_tasks``).

Every loader returns ``(x, y)``: float32 NCHW images scaled to [0, 1] and int64 labels. Files
are checked whole before anything is returned: a truncated, corrupt (wrong checksum, bad
header, out-of-range label) or mismatched (image and label counts differ) file is refused with
an error that names it; there is never a silent partial load. Augmentations live in
``numbacnn.augment``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DatasetError", "MissingDataError", "load_digits", "load_mnist", "load_cifar10", "train_test_split",
           "load_dataset", "DATASETS", "DATASET_SHAPES", "cache_dir", "MNIST_MD5"]

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: md5 of the official gzip files (as distributed by LeCun et al. and mirrored by torchvision).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_MNIST_PREFIX = {"train": "train", "test": "t10k"}
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_PER_BATCH = 10_000


class DatasetError(ValueError):
    """A dataset file is truncated, corrupt or inconsistent (the message names the file)."""


class MissingDataError(FileNotFoundError):
    """A dataset file is not there: ``file`` is what was looked for, ``present`` the files that
    the folder holds (front ends such as the CLI phrase their own advice from these)."""

    def __init__(self, message: str, file: Path, present: list[str]) -> None:
        super().__init__(message)
        self.file, self.present = file, present

    def __reduce__(self) -> tuple:
        return type(self), (self.args[0], self.file, self.present)


def cache_dir() -> Path:
    """Where downloads go: ``$NUMBACNN_DATA``, else ``~/.cache/numbacnn``."""
    return Path(os.environ.get("NUMBACNN_DATA") or Path.home() / ".cache" / "numbacnn")


def _digits_table() -> np.ndarray | None:
    """scikit-learn's ``digits.csv.gz`` (64 pixels and the label per row), read without
    importing scikit-learn, which takes 1.4 s of a 2-core machine's first second or two; None
    when the file is not where scikit-learn keeps it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
    try:
        table = np.loadtxt(path, delimiter=",")
    except (OSError, ValueError):
        return None
    return table if table.shape == (1797, 65) else None


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, (N, 1, 8, 8), no download."""
    table = _digits_table()
    if table is not None:
        images, target = table[:, :-1], table[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits as sk_load_digits
        except ImportError:
            raise ImportError("load_digits needs scikit-learn (pip install scikit-learn)") from None
        d = sk_load_digits()
        images, target = d.images, d.target
    x = (images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    return np.ascontiguousarray(x), target.astype(np.int64)


# MNIST ----------------------------------------------------------------------------------------
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """One IDX file (gzip or raw), refused unless its header and length agree exactly."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: unreadable or truncated gzip data ({e})") from None
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DatasetError(f"{path}: truncated: {len(raw)} bytes, shorter than the {head}-byte IDX header")
    found, *dims = struct.unpack(f">{1 + ndim}I", raw[:head])
    if found != magic:
        raise DatasetError(f"{path}: not an IDX file of this kind: magic number {found:#010x}, expected {magic:#010x}")
    want = head + int(np.prod(dims, dtype=np.int64))
    if len(raw) != want:
        what = "truncated" if len(raw) < want else "corrupt (trailing data)"
        raise DatasetError(f"{path}: {what}: the header {tuple(dims)} needs {want} bytes, found {len(raw)}")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _download(url: str, dest: Path) -> None:
    import urllib.request  # only downloads need it (and it is slow to import)

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as r:
            while chunk := r.read(1 << 20):
                out.write(chunk)
        got, want = _md5(Path(tmp)), MNIST_MD5[dest.name]
        if got != want:
            raise DatasetError(f"{url}: downloaded file is corrupt: md5 {got}, expected {want}; nothing was kept")
        os.replace(tmp, dest)
    except OSError as e:
        raise DatasetError(f"{url}: download failed ({e})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _mnist_file(folder: Path, name: str, download: bool, url: str) -> Path:
    gz, raw = folder / (name + ".gz"), folder / name
    if gz.exists():
        return gz
    if raw.exists():
        return raw
    if download:
        _download(url.rstrip("/") + "/" + gz.name, gz)
        return gz
    present = sorted(p.name for p in folder.glob("*idx*")) if folder.is_dir() else []
    raise MissingDataError(
        f"{gz}: no such file (the folder holds: {', '.join(present) or 'no IDX files'}); "
        f"pass download=True, or path= a folder holding the MNIST files", gz, present)


def load_mnist(path: str | os.PathLike | None = None, download: bool = False, split: str = "test",
               url: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from IDX files (gzip or raw), (N, 1, 28, 28); ``split`` is ``"train"`` or ``"test"``.

    ``path`` is the folder holding the files (default: ``cache_dir() / "mnist"``). Gzip files
    of the official names are md5-checked against ``MNIST_MD5``; raw files are checked for an
    exact header/length match. ``download=True`` fetches missing files from ``url`` (default
    ``$NUMBACNN_MNIST_URL`` or ``MNIST_URL``) and keeps them only if their md5 matches.
    """
    if split not in _MNIST_PREFIX:
        raise ValueError(f"load_mnist: split must be 'train' or 'test', found {split!r}")
    folder = Path(path) if path is not None else cache_dir() / "mnist"
    url = url or os.environ.get("NUMBACNN_MNIST_URL") or MNIST_URL
    prefix = _MNIST_PREFIX[split]
    files = [_mnist_file(folder, f"{prefix}-{kind}-ubyte", download, url)
             for kind in ("images-idx3", "labels-idx1")]
    for f in files:
        want = MNIST_MD5.get(f.name)
        if want is not None and (got := _md5(f)) != want:
            raise DatasetError(f"{f}: corrupt: md5 {got}, expected {want} (delete it and load again "
                               f"with download=True, or copy the official file)")
    images = _read_idx(files[0], 0x00000803, 3)
    labels = _read_idx(files[1], 0x00000801, 1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{files[0]} holds {images.shape[0]} images but {files[1]} holds "
                           f"{labels.shape[0]} labels; the two files do not belong together")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{files[1]}: corrupt: label {int(labels.max())} (expected 0..9)")
    x = (images.astype(np.float32) / np.float32(255.0))[:, None]
    return np.ascontiguousarray(x), labels.astype(np.int64)


# CIFAR-10 -------------------------------------------------------------------------------------
def _cifar_folder(path: Path) -> Path:
    inner = path / "cifar-10-batches-bin"
    return inner if inner.is_dir() else path


def load_cifar10(path: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the official binary batches, (N, 3, 32, 32).

    ``path`` is the folder holding ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
    ``test_batch.bin`` (or its parent, holding ``cifar-10-batches-bin``). ``split="train"``
    reads the five data batches, ``"test"`` the test batch; each must be exactly 10,000
    records of 3,073 bytes (a label byte, then 3x32x32 pixels).
    """
    names = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    if split not in names:
        raise ValueError(f"load_cifar10: split must be 'train' or 'test', found {split!r}")
    folder = _cifar_folder(Path(path))
    records = []
    for name in names[split]:
        f = folder / name
        if not f.exists():
            raise FileNotFoundError(f"{f}: no such file (CIFAR-10 binary version expected in {folder})")
        raw = np.fromfile(f, np.uint8)
        want = CIFAR_RECORD * CIFAR_PER_BATCH
        if raw.size != want:
            what = "truncated" if raw.size < want else "corrupt (too long)"
            raise DatasetError(f"{f}: {what}: {raw.size} bytes, expected {want} "
                               f"({CIFAR_PER_BATCH} records of {CIFAR_RECORD} bytes)")
        rec = raw.reshape(CIFAR_PER_BATCH, CIFAR_RECORD)
        if rec[:, 0].max() > 9:
            bad = int(np.argmax(rec[:, 0] > 9))
            raise DatasetError(f"{f}: corrupt: record {bad} has label {int(rec[bad, 0])} (expected 0..9)")
        records.append(rec)
    rec = np.concatenate(records) if len(records) > 1 else records[0]
    x = (rec[:, 1:].astype(np.float32) / np.float32(255.0)).reshape(-1, 3, 32, 32)
    return np.ascontiguousarray(x), rec[:, 0].astype(np.int64)


# splits and named datasets --------------------------------------------------------------------
def train_test_split(x: np.ndarray, y: np.ndarray, test_size: float | int = 0.2, shuffle: bool = True,
                     seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))``; ``test_size`` a fraction or a count.

    Without ``shuffle`` the test part is the last ``test_size`` samples (MNIST's 8000/2000).
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"train_test_split: {n} images but {len(y)} labels")
    k = int(round(test_size * n)) if isinstance(test_size, float) else int(test_size)
    if not 0 < k < n:
        raise ValueError(f"train_test_split: test_size {test_size!r} leaves no training or no test data of {n}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    tr, te = np.sort(order[:n - k]), np.sort(order[n - k:])
    return (x[tr], y[tr]), (x[te], y[te])


DATASETS = {
    "digits": "scikit-learn's 1,797 8x8 digits; a shuffled 80/20 split (seed 0)",
    "mnist": "MNIST train (60,000) / test (10,000); needs the files or --download",
    "mnist-t10k": "the MNIST test set only: first 8,000 to train, last 2,000 held out",
    "cifar10": "CIFAR-10 binary batches: train (50,000) / test (10,000); needs --data-dir",
    "mnist32-t10k": "mnist-t10k's images zero-padded to 32x32",
    "mnist-rows-t10k": "mnist-t10k's images as sequences of 28 rows of 28 pixels, (28, 28) for conv1d",
    "mnist-video-t10k": "mnist-t10k's digits moving over 8 frames of 22x22, (1, 8, 22, 22) for conv3d",
    "mnist-denoise-t10k": "mnist-t10k's images with Gaussian noise (std 0.5) -> the clean images (mse)",
}
#: Each named dataset's per-sample input shape; all but mnist-denoise-t10k (clean images as
#: targets) have 10 classes.
DATASET_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "mnist-t10k": (1, 28, 28), "cifar10": (3, 32, 32),
                  "mnist32-t10k": (1, 32, 32), "mnist-rows-t10k": (28, 28), "mnist-video-t10k": (1, 8, 22, 22),
                  "mnist-denoise-t10k": (1, 28, 28)}
#: The MNIST-derived datasets: name -> task of ``numbacnn._mnist_tasks`` (targets are the digits,
#: except denoise's, which are the clean images).
_MNIST_TASKS = {"mnist32-t10k": "pad32", "mnist-rows-t10k": "rows", "mnist-video-t10k": "video",
                "mnist-denoise-t10k": "denoise"}


def load_dataset(name: str, path: str | os.PathLike | None = None, download: bool = False) -> tuple[Any, Any]:
    """A named dataset of ``DATASETS`` as ``((x_train, y_train), (x_test, y_test))``.

    ``path`` and ``download`` apply to the datasets read from files; giving them where they
    mean nothing (the bundled digits; a download of CIFAR-10) is an error, not ignored.
    """
    if name in DATASETS and download and not name.startswith("mnist"):
        raise ValueError(f"{name}: download=True applies to MNIST only; {name} is never downloaded")
    if name == "digits":
        if path is not None:
            raise ValueError(f"digits: scikit-learn's bundled digits read no files; path={os.fspath(path)!r} "
                             f"would be ignored (leave it out)")
        return train_test_split(*load_digits(), test_size=0.2, seed=0)
    if name == "mnist":
        return load_mnist(path, download, "train"), load_mnist(path, download, "test")
    if name == "mnist-t10k":
        return train_test_split(*load_mnist(path, download, "test"), test_size=2000, shuffle=False)
    if name in _MNIST_TASKS:
        from ._mnist_tasks import make_task

        pairs = make_task(_MNIST_TASKS[name], *load_mnist(path, download, "test"), seed=0)
        return train_test_split(*pairs, test_size=2000, shuffle=False)
    if name == "cifar10":
        if path is None:
            raise ValueError("cifar10: give the folder of the binary batches (path=, or --data-dir)")
        return load_cifar10(path, "train"), load_cifar10(path, "test")
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
