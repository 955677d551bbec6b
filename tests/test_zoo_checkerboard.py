"""bench/checkerboard.py: its measure, and its reduced (--quick) run, as CI runs it."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "checkerboard.py"


def script():
    spec = importlib.util.spec_from_file_location("checkerboard", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def spectral_reference(y):
    """The 2-pixel-period frequencies' share of each image's non-DC spectral energy, by FFT."""
    shares = []
    for img in y.reshape(-1, *y.shape[2:]).astype(np.float64):
        e = np.abs(np.fft.fft2(img)) ** 2
        h, w = img.shape
        total = e.sum() - e[0, 0]
        shares.append((e[h // 2, 0] + e[0, w // 2] + e[h // 2, w // 2]) / total)
    return float(np.mean(shares))


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 2, 6, 10), (1, 1, 2, 2)])
def test_measure_is_the_nyquist_share_of_the_spectrum(shape):
    y = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert script().checkerboard(y) == pytest.approx(spectral_reference(y), rel=1e-9)


def test_measure_of_plain_patterns():
    cb = script().checkerboard
    i, j = np.indices((12, 16))
    board = ((-1.0) ** (i + j))[None, None]
    stripes = ((-1.0) ** j)[None, None]
    smooth = np.cos(2 * np.pi * i / 12)[None, None] + np.sin(2 * np.pi * j / 16)[None, None]
    assert cb(board) == pytest.approx(1.0) and cb(stripes) == pytest.approx(1.0)
    assert cb(smooth) == pytest.approx(0.0, abs=1e-20)
    assert cb(smooth + 0.1 * board) == pytest.approx(0.01 / (1.0 + 0.01))  # variances 1 and 0.01
    with pytest.raises(ValueError, match="height and width must be even, found 5x4"):
        cb(np.zeros((1, 1, 5, 4)))


@pytest.mark.skipif("conv_transpose2d" not in nc.layer_names(), reason="conv_transpose2d not on this branch yet")
def test_quick_run_prints_both_measures_and_draws_the_figure(mnist_dir, tmp_path, capsys):
    figure = tmp_path / "cb.png"
    assert script().main(["--quick", "--mnist-dir", str(mnist_dir), "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(transposed|resize) +([\d,]+) +(\d+\.\d+) +(\d\.\d+e[-+]\d+)", out, re.M)}
    assert set(rows) == {"transposed", "resize"} and rows["transposed"][0] == rows["resize"][0] == "9,569"
    assert all(0 < float(r[1]) < 0.2 and 0 <= float(r[2]) <= 1 for r in rows.values()), out
    assert "512 training pairs, 1 epochs" in out and re.search(r"\(targets\) +\d\.\d+e[-+]\d+", out)
    if importlib.util.find_spec("matplotlib") is None:  # an extra of [bench], not of [test]
        assert "figure: not written (matplotlib missing)" in out and not figure.exists()
    else:
        assert f"figure: {figure}" in out and figure.stat().st_size > 10_000
