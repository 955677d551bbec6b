"""The ONNX entries of the second phase's layers (conv_transpose2d, upsample, conv1d/conv3d,
1-D and 3-D pools and batch norms, lp_pool2d, adaptive and global max pools, softmax,
log_softmax, elu, gelu, hardtanh, relu6), both ways, on their documented configs.

(They ran on torch.nn.functional stand-ins while the layers were being written; every case now
runs on the real layer, and a built-in without a case fails below.)
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import numbacnn as nc

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

_spec = importlib.util.spec_from_file_location("onnx_export_checks", Path(__file__).with_name("test_onnx_export.py"))
_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_checks)
check_export, randomised = _checks.check_export, _checks.randomised


ARRIVING = {
    "conv_transpose2d": lambda g: g.conv_transpose2d(g.input((4, 5, 5)), out_channels=6, kernel_size=4, stride=2,
                                                     padding=1, output_padding=0, groups=2, bias=True, dilation=1),
    "conv_transpose2d_output_padding": lambda g: g.conv_transpose2d(g.input((3, 4, 4)), out_channels=2, kernel_size=3,
                                                                    stride=3, padding=1, output_padding=1),
    "upsample_nearest": lambda g: g.upsample(g.input((2, 3, 4)), scale_factor=2, mode="nearest"),
    "upsample_bilinear_size": lambda g: g.upsample(g.input((2, 3, 4)), size=(7, 9), mode="bilinear",
                                                   align_corners=False),
    "upsample_bilinear_align_corners": lambda g: g.upsample(g.input((2, 3, 4)), scale_factor=2, mode="bilinear",
                                                            align_corners=True),
    "conv1d": lambda g: g.conv1d(g.input((3, 10)), out_channels=4, kernel_size=3, stride=2, padding=1),
    "conv3d": lambda g: g.conv3d(g.input((2, 4, 5, 5)), out_channels=3, kernel_size=3, padding=1),
    "max_pool1d+avg_pool1d": lambda g: g.avg_pool1d(g.max_pool1d(g.input((3, 12)), kernel_size=2), kernel_size=3,
                                                    stride=1, padding=1),
    "max_pool3d+avg_pool3d": lambda g: g.avg_pool3d(g.max_pool3d(g.input((2, 4, 6, 6)), kernel_size=2), kernel_size=2),
    "batch_norm1d_features": lambda g: g.batch_norm1d(g.input((5,))),
    "batch_norm1d_sequence": lambda g: g.batch_norm1d(g.input((3, 6))),
    "batch_norm3d": lambda g: g.batch_norm3d(g.input((2, 3, 4, 4))),
    "lp_pool2d": lambda g: g.lp_pool2d(g.input((2, 6, 6)), norm_type=2, kernel_size=2),
    "adaptive_avg_pool2d_1x1": lambda g: g.adaptive_avg_pool2d(g.input((3, 5, 7)), output_size=(1, 1)),
    "adaptive_avg_pool2d_divisible": lambda g: g.adaptive_avg_pool2d(g.input((3, 6, 6)), output_size=2),
    "adaptive_max_pool2d": lambda g: g.adaptive_max_pool2d(g.input((3, 6, 6)), output_size=3),
    "global_max_pool2d": lambda g: g.global_max_pool2d(g.input((3, 5, 4))),
    "softmax": lambda g: g.softmax(g.linear(g.flatten(g.input((2, 3, 3))), out_features=5), dim=1),
    "log_softmax": lambda g: g.log_softmax(g.input((4, 3, 3)), dim=1),
    "elu": lambda g: g.elu(g.input((2, 3, 3)), alpha=0.5),
    "gelu": lambda g: g.gelu(g.input((2, 3, 3)), approximate="none"),
    "gelu_tanh": lambda g: g.gelu(g.input((2, 3, 3)), approximate="tanh"),
    "hardtanh": lambda g: g.hardtanh(g.input((2, 3, 3)), min_val=-0.5, max_val=0.7),
    "relu6": lambda g: g.relu6(g.input((2, 3, 3))),
}


def layers_of(case):
    """The layers a case needs: its name's '+'-joined parts, each up to a suffix after the stem."""
    return {re.sub(r"_(output_padding|nearest|bilinear_size|bilinear_align_corners|1x1|divisible|features|sequence|"
                   r"tanh)$", "", part) for part in case.split("+")}


@pytest.fixture
def layers_for():
    """Checks that a case's layers are registered (the PyTorch-export tests share it)."""
    def need(names):
        missing = sorted(set(names) - set(nc.layer_names()))
        assert not missing, f"layers the test needs are not registered: {missing}"

    return need


@pytest.mark.parametrize("case", list(ARRIVING))
def test_arriving_layers_export_and_import(case, layers_for, tmp_path):
    layers_for(layers_of(case))
    g = nc.Graph()
    g.output(ARRIVING[case](g))
    model = randomised(nc.Model(g))
    # onnx.reference's ConvTranspose fails on group > 1 (a reshape error inside it); onnxruntime runs it
    back = check_export(model, tmp_path / "m.onnx", reference=case != "conv_transpose2d")
    if not case.startswith("adaptive"):  # adaptive pools come back as their fixed pools
        assert [back.graph.nodes[n].layer for n in back.order] == [g.nodes[n].layer for n in back.order]


def test_every_builtin_layer_has_an_export_case(tmp_path):
    """Each built-in is exported by a case here or in test_onnx_export's every-built-in graph, and
    by now on its real layer: a built-in added without an ONNX case fails here."""
    from numbacnn.layers import BUILTIN

    first_release = {"add", "avg_pool2d", "batch_norm2d", "concat", "conv2d", "dropout", "flatten",
                     "global_avg_pool2d", "leaky_relu", "linear", "max_pool2d", "relu", "sigmoid", "tanh"}
    built = set()
    for case in ARRIVING:
        g = nc.Graph()
        g.output(ARRIVING[case](g))
        built |= {node.layer for node in g.nodes.values()} - {"input"}
    missing = sorted(set(BUILTIN) - first_release - built)
    assert not missing, f"built-in layers without an ONNX export case: {missing}"
    assert not {name for case in ARRIVING for name in layers_of(case)} - set(BUILTIN)  # every case on a built-in
