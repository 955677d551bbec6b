"""The two ways to write a layer, both supported: forward/backward written once against
``ctx.kernels`` (the kernel module of the layer's stem for the node's device), or per device
(forward_cpu/backward_cpu, forward_cuda/backward_cuda), as plugins written before did.

The layers here live in a small package written to a temporary directory; their "kernels" are
NumPy functions, which the interface allows and which compile nothing.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import numbacnn as nc
from numbacnn.registry import LayerContractError, check_contract, layer_devices, unregister_layer
from numbacnn.testing import check_layer

PKG = "tt_kstyle"

FILES = {
    "__init__.py": "",
    # A layer written once: y = 3 x, on whichever device's kernels ctx.kernels holds.
    "triple.py": '''
        import numbacnn as nc


        class Triple(nc.Layer):
            name = "tt_triple_once"

            def output_shape(self, x_shape):
                return x_shape

            def forward(self, ctx, x):
                y = ctx.empty_like(x)
                ctx.kernels.triple_forward(x.reshape(x.size), y.reshape(y.size))
                return y

            def backward(self, ctx, gy):
                gx = ctx.empty_like(gy)
                ctx.kernels.triple_forward(gy.reshape(gy.size), gx.reshape(gx.size))
                return gx


        class Lost(Triple):
            """Written once, but no kernel module anywhere up its classes' modules."""

            kernels = "tt_kstyle.nowhere"
    ''',
    "triple_cpu.py": '''
        __all__ = ["triple_forward"]


        def triple_forward(x, y):
            y[:] = 3 * x
    ''',
    # Both devices' kernels: only found, never imported, when the registry lists devices.
    "both.py": '''
        from tt_kstyle.triple import Triple


        class Both(Triple):
            name = "tt_both"
    ''',
    "both_cpu.py": "from tt_kstyle.triple_cpu import triple_forward\n",
    "both_cuda.py": "raise ImportError('the registry must not import kernel modules to list devices')\n",
}


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("kstyle")
    for name, text in FILES.items():
        path = root / PKG / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    yield __import__(f"{PKG}.triple", fromlist=["Triple"])
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
        del sys.modules[name]


def triple_ref(x):
    return 3 * x


def run(layer, x):
    nc.register_layer(type(layer))
    try:
        g = nc.Graph()
        g.output(g.layer(layer.name, g.input(x.shape[1:]), **layer.config))
        model = nc.Model(g, dtype="float64")
        y = model.forward(x, training=True)
        return y, model.backward(np.ones_like(y))
    finally:
        unregister_layer(layer.name)


def test_a_layer_written_once_runs_on_its_stems_kernels(pkg):
    cls = pkg.Triple
    assert check_contract(cls) == [] and layer_devices(cls) == ["cpu"]
    x = np.arange(6.0).reshape(1, 2, 3)
    y, gx = run(cls(), x)
    np.testing.assert_array_equal(y, 3 * x)
    np.testing.assert_array_equal(gx, np.full_like(x, 3.0))
    check_layer(cls(), [(2, 3, 4)], triple_ref, cuda=False)


def test_devices_are_the_kernel_modules_found_without_importing_them(pkg):
    both = __import__(f"{PKG}.both", fromlist=["Both"]).Both
    assert layer_devices(both) == ["cpu", "cuda"]
    assert f"{PKG}.both_cuda" not in sys.modules
    x = np.ones((2, 3))
    np.testing.assert_array_equal(run(both(), x)[0], 3 * x)  # the CPU twin of its own stem


def test_a_class_attribute_names_another_stem_and_a_subclass_keeps_its_parents(pkg):
    class Elsewhere(nc.Layer):  # in a module without kernels, naming the stem it uses
        name = "tt_elsewhere"
        kernels = f"{PKG}.triple"
        forward, backward = pkg.Triple.forward, pkg.Triple.backward

        def output_shape(self, x_shape):
            return x_shape

    assert layer_devices(Elsewhere) == ["cpu"]
    x = np.full((1, 4), 2.0)
    np.testing.assert_array_equal(run(Elsewhere(), x)[0], 3 * x)

    class Sub(pkg.Triple):  # defined here, in a module with no kernels: the parent's stem
        name = "tt_sub_triple"

    assert check_contract(Sub) == [] and layer_devices(Sub) == ["cpu"]
    np.testing.assert_array_equal(run(Sub(), x)[1], np.full_like(x, 3.0))


def test_a_layer_written_once_without_cpu_kernels_is_refused_saying_what_to_do(pkg):
    assert check_contract(pkg.Lost) == [
        "no CPU kernels: module tt_kstyle.nowhere_cpu was not found (write it beside the layer, name another "
        "stem with kernels = 'package.stem', or set kernels = None for a layer that calls no kernels)"]
    with pytest.raises(LayerContractError, match="no CPU kernels"):
        nc.register_layer(pkg.Lost)


class Reshape(nc.Layer):
    """No kernels at all (a view): every device."""

    name = "tt_view"
    kernels = None

    def output_shape(self, x_shape):
        return (int(np.prod(x_shape)),)

    def forward(self, ctx, x):
        ctx.save(x.shape)
        return x.reshape(x.shape[0], x.size // x.shape[0])

    def backward(self, ctx, gy):
        return gy.reshape(ctx.saved[0])


def test_kernels_none_runs_everywhere_and_ctx_kernels_says_why_not():
    assert check_contract(Reshape) == [] and layer_devices(Reshape) == ["cpu", "cuda"]
    check_layer(Reshape(), [(2, 3, 2)], lambda x: x.reshape(len(x), -1), cuda=False)

    class Asks(Reshape):
        name = "tt_asks"

        def forward(self, ctx, x):
            return ctx.kernels.anything(x)

    with pytest.raises(RuntimeError, match=r"layer 'tt_asks' \(.*Asks\) declares kernels = None, yet asked for "
                                           r"ctx.kernels"):
        run(Asks(), np.ones((1, 2)))


def test_a_ctx_made_without_its_layer_names_the_fix():
    from numbacnn.device import get_backend

    ctx = nc.Ctx("n1", "cpu", np.float32, get_backend("cpu"), np.random.default_rng(0))
    with pytest.raises(RuntimeError, match=r"node 'n1': this Ctx was made without its layer.*Ctx\(\.\.\., layer="):
        ctx.kernels


class OldStyle(nc.Layer):
    """y = 2 x, written per device the way plugins were before the one interface."""

    name = "tt_old_style"

    def output_shape(self, x_shape):
        return x_shape

    def forward_cpu(self, ctx, x):
        y = ctx.empty_like(x)
        np.multiply(x, x.dtype.type(2), out=y)
        return y

    def backward_cpu(self, ctx, gy):
        gx = ctx.empty_like(gy)
        np.multiply(gy, gy.dtype.type(2), out=gx)
        return gx


def test_an_old_style_layer_keeps_working():
    assert check_contract(OldStyle) == [] and layer_devices(OldStyle) == ["cpu"]
    check_layer(OldStyle(), [(2, 3, 4)], lambda x: 2 * x, cuda=False)

    class WithCuda(OldStyle):
        name = "tt_old_cuda"
        forward_cuda, backward_cuda = OldStyle.forward_cpu, OldStyle.backward_cpu

    assert layer_devices(WithCuda) == ["cpu", "cuda"]


def test_directions_may_mix_styles_and_each_must_be_there(pkg):
    class ForwardOnce(nc.Layer):  # backward per device, forward written once
        name = "tt_mixed"
        kernels = f"{PKG}.triple"
        forward = pkg.Triple.forward
        backward_cpu = OldStyle.backward_cpu

        def output_shape(self, x_shape):
            return x_shape

    assert check_contract(ForwardOnce) == [] and layer_devices(ForwardOnce) == ["cpu"]

    class NoBackward(nc.Layer):
        name = "tt_no_backward_once"
        kernels = None

        def output_shape(self, x_shape):
            return x_shape

        def forward(self, ctx, x):
            return x

    assert check_contract(NoBackward) == ["method backward() is missing (or backward_cpu(), written per device)"]


@pytest.mark.cuda
def test_placing_a_layer_written_once_without_cuda_kernels_fails_naming_it(pkg):
    nc.register_layer(pkg.Triple)
    try:
        g = nc.Graph()
        g.output(g.tt_triple_once(g.input((2, 3)), name="t"))
        model = nc.Model(g)
        with pytest.raises(nc.DeviceError, match=r"tt_triple_once node 't'.*has no cuda kernels \(it implements: "
                                                 r"cpu\)"):
            model.to("cuda")
        assert model.device == "cpu"
    finally:
        unregister_layer("tt_triple_once")
