"""The ONNX entries of the newer layers at the edges of their configs, where PyTorch's
semantics (numbacnn's) and ONNX's part: a ceil_mode window PyTorch drops, upsample's
recompute_scale_factor, hardtanh's infinite bounds, batch norm's cumulative momentum, and
lp_pool2d, whose ONNX form is the same only for even p and without partial windows. Each
either exports and agrees with onnxruntime and onnx.reference, or is refused naming the node.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_spec = importlib.util.spec_from_file_location("onnx_export_checks", Path(__file__).with_name("test_onnx_export.py"))
_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_checks)
check_export, randomised = _checks.check_export, _checks.randomised
INF = float("inf")

EDGES = {
    # PyTorch drops the last window (it would start in the padding): as many windows as floor
    "max_pool2d_ceil_dropped_window": lambda g: g.max_pool2d(g.input((2, 5, 5)), kernel_size=2, stride=2, padding=1,
                                                             ceil_mode=True),
    "avg_pool3d_ceil_dropped_window": lambda g: g.avg_pool3d(g.input((2, 5, 5, 5)), kernel_size=2, stride=2,
                                                             padding=1, ceil_mode=True),
    "max_pool1d_ceil_partial_window": lambda g: g.max_pool1d(g.input((2, 12)), kernel_size=3, dilation=2, stride=2,
                                                             padding=1, ceil_mode=True),
    "lp_pool2d_p4_ceil_without_partial_window": lambda g: g.lp_pool2d(g.input((2, 7, 7)), norm_type=4, kernel_size=3,
                                                                      stride=2, ceil_mode=True),
    "hardtanh_infinite_min": lambda g: g.hardtanh(g.input((2, 3, 3)), min_val=-INF, max_val=0.5),
    "hardtanh_infinite_max": lambda g: g.hardtanh(g.input((2, 3, 3)), min_val=0.25, max_val=INF),
    "upsample_nearest_recompute": lambda g: g.upsample(g.input((2, 5, 7)), scale_factor=1.7,
                                                       recompute_scale_factor=True),
    "upsample_bilinear_recompute": lambda g: g.upsample(g.input((2, 5, 7)), scale_factor=(1.7, 1.3), mode="bilinear",
                                                        recompute_scale_factor=True),
    "batch_norm2d_cumulative_momentum": lambda g: g.batch_norm2d(g.input((3, 4, 4)), momentum=None),
    "batch_norm1d_cumulative_momentum": lambda g: g.batch_norm1d(g.input((3,)), momentum=None),
}


@pytest.mark.parametrize("case", list(EDGES))
def test_edge_configs_export_and_agree(case, tmp_path):
    g = nc.Graph()
    g.output(EDGES[case](g))
    back = check_export(randomised(nc.Model(g)), tmp_path / "m.onnx")
    layers = [back.graph.nodes[n].layer for n in back.order]
    assert layers == [g.nodes[n].layer for n in back.order]
    if case.endswith("cumulative_momentum"):  # ONNX has no cumulative average: the default comes back
        assert back.graph.nodes[back.order[0]].config["momentum"] == pytest.approx(0.1)


REFUSED = {
    "lp_p1": (lambda g: g.lp_pool2d(g.input((2, 6, 6)), norm_type=1, kernel_size=2, name="lp"),
              r"norm_type=1: ONNX's LpPool computes \(sum \|x\|\^p\)\^\(1/p\), PyTorch's lp_pool2d"),
    "lp_p3": (lambda g: g.lp_pool2d(g.input((2, 6, 6)), norm_type=3, kernel_size=2, name="lp"), "norm_type=3"),
    "lp_partial_window": (lambda g: g.lp_pool2d(g.input((2, 7, 7)), norm_type=2, kernel_size=2, ceil_mode=True,
                                                name="lp"), r"ceil_mode adds a partial window .* \(7, 7\)"),
    "lp_free_size_ceil": (lambda g: g.lp_pool2d(g.input((2, None, None)), norm_type=2, kernel_size=2, ceil_mode=True,
                                                name="lp"), "the size being free"),
    "ceil_dropped_and_partial": (lambda g: g.max_pool2d(g.input((2, 5, 6)), kernel_size=(2, 3), stride=2, padding=1,
                                                        ceil_mode=True, name="lp"),
                                 "drops a last window starting in the padding on some axes and keeps a partial"),
    "recompute_free_size": (lambda g: g.upsample(g.input((2, None, None)), scale_factor=1.5,
                                                 recompute_scale_factor=True, name="lp"),
                            "recompute_scale_factor=True with a non-integer scale_factor"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_configs_without_an_onnx_form_are_refused(case, tmp_path):
    build, message = REFUSED[case]
    g = nc.Graph()
    g.output(build(g))
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match=r"node 'lp': cannot be exported to ONNX: .*" + message):
        nc.onnx.export(nc.Model(g), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def save(tmp_path, node, shape, inits=()):
    graph = helper.make_graph([node], "edge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    onnx.save(model, str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


def test_a_clip_with_one_bound_is_a_hardtanh(tmp_path):
    """torch.clamp(x, max=0.5) exports a Clip without its min."""
    path = save(tmp_path, helper.make_node("Clip", ["x", "", "hi"], ["y"]), (2, 3),
                [numpy_helper.from_array(np.array(0.5, np.float32), "hi")])
    model = nc.onnx.load(path)
    node = model.graph.nodes[model.order[0]]
    assert (node.layer, node.config["min_val"], node.config["max_val"]) == ("hardtanh", -INF, 0.5)
    x = np.random.default_rng(0).standard_normal((2, 2, 3)).astype(np.float32) * 2
    np.testing.assert_array_equal(model.forward(x), np.minimum(x, np.float32(0.5)))


@pytest.mark.parametrize("attrs, shape, message", [
    (dict(p=1), (2, 6, 6), r"p=1: ONNX's LpPool is \(sum \|x\|\^p\)\^\(1/p\)"),
    (dict(p=2, ceil_mode=1), (2, 7, 7), r"ceil_mode adds a partial window at the edge of input size \(7, 7\)"),
])
def test_lp_pools_numbacnn_cannot_match_are_refused_at_load(attrs, shape, message, tmp_path):
    path = save(tmp_path, helper.make_node("LpPool", ["x"], ["y"], name="lp", kernel_shape=[2, 2], strides=[2, 2],
                                           **attrs), shape)
    with pytest.raises(nc.onnx.UnsupportedOperatorError, match=r"ONNX node 'lp' \(LpPool, opset 18\): " + message):
        nc.onnx.load(path)
