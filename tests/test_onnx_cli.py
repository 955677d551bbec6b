"""numbacnn export CHECKPOINT OUT.onnx and numbacnn import IN.onnx OUT.npz: the model goes
round, the summary is printed, an existing output is kept unless --overwrite, errors are one
line with a non-zero status."""

from __future__ import annotations

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.cli import main

pytest.importorskip("onnx")


@pytest.fixture
def checkpoint(tmp_path):
    model = nc.zoo.lenet5(input_shape=(1, 8, 8), seed=3)
    model.save(tmp_path / "lenet5.npz")
    return model, tmp_path / "lenet5.npz"


def test_export_then_import_gives_the_model_back(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    assert main(["export", str(path), str(tmp_path / "m.onnx")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'm.onnx'}: 12 nodes, 21,386 parameters, opset 21\n"
    assert main(["import", str(tmp_path / "m.onnx"), str(tmp_path / "back.npz")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("node ") and "conv1      conv2d" in out and out.endswith(f"wrote {tmp_path / 'back.npz'}\n")
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(nc.Model.load(tmp_path / "back.npz").forward(x), model.forward(x))


def test_an_existing_output_is_kept_without_overwrite(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    (tmp_path / "m.onnx").write_bytes(b"keep me")
    assert main(["export", str(path), str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'm.onnx'} exists: add --overwrite to replace it\n"
    assert (tmp_path / "m.onnx").read_bytes() == b"keep me"
    assert main(["export", str(path), str(tmp_path / "m.onnx"), "--overwrite", "--opset", "17"]) == 0
    assert main(["import", str(tmp_path / "m.onnx"), str(path)]) == 2
    assert "exists: add --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["export", "{tmp}/none.npz", "{tmp}/m.onnx"], "error: {tmp}/none.npz: no such file\n"),
    (["import", "{tmp}/none.onnx", "{tmp}/m.npz"], "error: {tmp}/none.onnx: no such file\n"),
    (["import", "{tmp}/junk.onnx", "{tmp}/m.npz"], "error: {tmp}/junk.onnx: not a readable ONNX model"),
    (["export", "{tmp}/lenet5.npz", "{tmp}/m.onnx", "--opset", "9"], "error: opset must be an int from 13"),
])
def test_errors_are_one_line_and_exit_1(argv, message, checkpoint, tmp_path, capsys):
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1
