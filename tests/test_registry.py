"""Registry errors, with real throwaway plugin distributions.

The distributions are written into a temporary directory and installed with pip
(``--no-deps --no-build-isolation --no-index --target DIR``) into directories of their own,
which the tests put on ``sys.path`` and take off again; nothing is installed into the running
environment, and nothing of the entry-point machinery is mocked.
"""

import contextlib
import importlib
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import registry
from numbacnn.cli import main

LAYER = textwrap.dedent('''
    """A throwaway layer: y = x + b, b learnable of shape (1,)."""
    import numpy as np

    from numbacnn import Layer


    class {cls}(Layer):
        name = "{name}"

        def output_shape(self, x_shape):
            return x_shape

        def init_params(self, input_shapes, rng):
            return {{"b": np.ones((1,), np.float32)}}

        def forward_cpu(self, ctx, x):
            y = ctx.empty_like(x)
            np.add(x, ctx.params["b"][0], out=y)
            return y
''')
BACKWARD = '''
    def backward_cpu(self, ctx, gy):
        ctx.grads["b"] += gy.sum()
        return gy
'''


def write_dist(root: Path, dist: str, version: str, name: str, *, backward: bool = True,
               prelude: str = "") -> Path:
    """A source tree of distribution ``dist`` whose package provides layer ``name``."""
    pkg = dist.replace("-", "_")
    src = root / f"{dist}-{version}"
    (src / pkg).mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"

        [project.entry-points."numbacnn.layers"]
        {name} = "{pkg}.layer:{name.title().replace('_', '')}"

        [tool.setuptools]
        packages = ["{pkg}"]
    '''))
    (src / pkg / "__init__.py").write_text("")
    code = LAYER.format(cls=name.title().replace("_", ""), name=name) + (BACKWARD if backward else "")
    (src / pkg / "layer.py").write_text(prelude + code)
    return src


def pip_install(target: Path, sources: list[Path]) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), *map(str, sources)]
    env = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    """Three install directories: a mixed environment, and two versions of one plugin."""
    root = tmp_path_factory.mktemp("dists")
    plan = {
        "mixed": [
            write_dist(root, "numbacnn-tt-good", "0.1.0", "tt_good"),
            write_dist(root, "numbacnn-tt-broken", "0.2.0", "tt_broken",
                       prelude="import numbacnn_tt_missing_dependency\n"),
            write_dist(root, "numbacnn-tt-badclass", "0.3.0", "tt_badclass", backward=False),
            write_dist(root, "numbacnn-tt-dup-a", "1.0.0", "tt_dup"),
            write_dist(root, "numbacnn-tt-dup-b", "2.0.0", "tt_dup"),
        ],
        "gone": [write_dist(root, "numbacnn-tt-gone", "0.1.0", "tt_gone")],
        "gone2": [write_dist(root, "numbacnn-tt-gone", "0.2.0", "tt_gone")],
        "reserved": [write_dist(root, "numbacnn-tt-relu", "0.1.0", "relu")],
    }
    targets = {key: root / f"site-{key}" for key in plan}
    with ThreadPoolExecutor(len(plan)) as pool:
        list(pool.map(lambda key: pip_install(targets[key], plan[key]), plan))
    return targets


@contextlib.contextmanager
def installed(*targets: Path):
    """Put install directories on sys.path (as if installed) and rediscover plugins."""
    sys.path.extend(map(str, targets))
    importlib.invalidate_caches()
    registry.refresh()
    try:
        yield
    finally:
        for t in targets:
            sys.path.remove(str(t))
        for mod in [m for m in sys.modules if m.startswith("numbacnn_tt_")]:
            del sys.modules[mod]
        importlib.invalidate_caches()
        registry.refresh()


def test_unknown_name_lists_close_names_and_installed_plugins(sites):
    with installed(sites["mixed"]):
        with pytest.raises(nc.UnknownLayerError) as e:
            nc.get_layer("tt_goo")
    msg = str(e.value)
    assert msg.startswith("No layer 'tt_goo'. Did you mean 'tt_good'")
    assert "Built-in: " in msg and "relu" in msg
    for dist in ("numbacnn-tt-good 0.1.0", "numbacnn-tt-broken 0.2.0", "numbacnn-tt-dup-b 2.0.0"):
        assert dist in msg.split("plugins found: ")[1]


def test_two_distributions_claiming_one_name_is_an_error_naming_both(sites, capsys):
    with installed(sites["mixed"]):
        with pytest.raises(registry.LayerCollisionError) as e:
            nc.get_layer("tt_dup")
        assert main(["layers"]) == 0
    msg = str(e.value)
    assert msg.startswith("layer 'tt_dup' is provided by more than one distribution: ")
    assert "numbacnn-tt-dup-a 1.0.0 (numbacnn_tt_dup_a.layer:TtDup)" in msg
    assert "numbacnn-tt-dup-b 2.0.0 (numbacnn_tt_dup_b.layer:TtDup)" in msg
    assert "Uninstall all but one of them" in msg
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("tt_dup "))
    assert "broken: layer 'tt_dup' is provided by more than one distribution" in line


def test_a_broken_plugin_is_reported_and_does_not_affect_the_others(sites, capsys):
    with installed(sites["mixed"]):
        with pytest.raises(nc.PluginError) as e:
            nc.get_layer("tt_broken")
        info = nc.layer_info("tt_broken")
        g = nc.Graph()
        g.output(g.tt_good(g.input((2, 3))))
        y = nc.Model(g).forward(np.zeros((4, 2, 3), np.float32))
        assert main(["layers"]) == 0
    assert str(e.value) == ("layer 'tt_broken' from numbacnn-tt-broken 0.2.0 failed to load "
                            "(numbacnn_tt_broken.layer:TtBroken): ModuleNotFoundError: "
                            "No module named 'numbacnn_tt_missing_dependency'")
    assert info["error"] == str(e.value) and info["distribution"] == "numbacnn-tt-broken"
    np.testing.assert_array_equal(y, np.ones((4, 2, 3), np.float32))
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert lines["tt_good"].split() == ["tt_good", "numbacnn-tt-good", "0.1.0", "cpu", "ok"]
    assert "broken: layer 'tt_broken' from numbacnn-tt-broken 0.2.0 failed to load" in lines["tt_broken"]
    assert lines["relu"].split()[-1] == "ok"


def test_a_class_breaking_the_contract_is_rejected_when_registered(sites):
    with installed(sites["mixed"]):
        with pytest.raises(nc.PluginError) as e:
            nc.get_layer("tt_badclass")

        class Clash(nc.Layer):
            name = "tt_good"

            def output_shape(self, x_shape):
                return x_shape

            def forward_cpu(self, ctx, x):
                return x

            def backward_cpu(self, ctx, gy):
                return gy

        with pytest.raises(registry.LayerCollisionError) as clash:
            nc.register_layer(Clash)
    assert str(e.value) == ("layer 'tt_badclass' from numbacnn-tt-badclass 0.3.0 breaks the layer contract: "
                            "method backward_cpu() is missing")
    assert "already provided by numbacnn-tt-good 0.1.0 (numbacnn_tt_good.layer:TtGood)" in str(clash.value)

    class NoForward(nc.Layer):
        name = "tt_no_forward"

        def output_shape(self, x_shape):
            return x_shape

    with pytest.raises(registry.LayerContractError, match=r"method forward\(\) is missing \(or forward_cpu\(\), "
                                                          r"written per device\); method backward\(\) is missing"):
        nc.register_layer(NoForward)
    assert "tt_no_forward" not in nc.layer_names()


def test_a_plugin_claiming_a_builtin_name_is_refused_and_the_builtin_keeps_working(sites, capsys):
    with pytest.warns(registry.PluginWarning) as warned, installed(sites["reserved"]):
        cls = nc.get_layer("relu")
        info = nc.layer_info("relu")
        g = nc.Graph()
        g.output(g.relu(g.input((3,))))
        y = nc.Model(g).forward(np.array([[-1.0, 0.5, 2.0]], np.float32))
        assert main(["layers"]) == 0
        imported = [m for m in sys.modules if m.startswith("numbacnn_tt_relu")]
    why = ("plugin numbacnn-tt-relu 0.1.0 registers layer 'relu' (numbacnn_tt_relu.layer:Relu), a built-in "
           "name: built-in names are reserved, so that entry is refused and the built-in 'relu' is used. Rename "
           "the layer (its entry point in the 'numbacnn.layers' group and its class's name), or uninstall "
           "numbacnn-tt-relu.")
    assert [str(w.message) for w in warned] == [why]
    assert cls.__module__ == "numbacnn.layers.relu" and imported == []
    assert (info["distribution"], info["builtin"], info["error"], info["refused"]) == ("numbacnn", True, None, [why])
    np.testing.assert_array_equal(y, [[0.0, 0.5, 2.0]])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("relu "))
    assert line.split()[1:3] == ["numbacnn", "(built-in)"] and f" ok; refused: {why}" in line
    assert nc.layer_info("relu")["refused"] == []  # uninstalled: nothing refused any more


def test_loading_a_model_whose_plugin_is_missing_names_the_distribution(sites, tmp_path):
    path = tmp_path / "m.npz"
    with installed(sites["gone"]):
        g = nc.Graph()
        g.output(g.tt_gone(g.input((3,)), name="shift"))
        model = nc.Model(g)
        model.params["shift.b"][...] = 5.0
        model.save(path)
        assert nc.layer_info("tt_gone")["version"] == "0.1.0"
    with pytest.raises(nc.PluginError) as e:
        nc.Model.load(path)
    assert str(e.value) == f"{path}: layer 'tt_gone' is provided by numbacnn-tt-gone 0.1.0, which is not installed"

    with installed(sites["gone2"]):
        with pytest.warns(UserWarning, match="layer 'tt_gone' was saved with numbacnn-tt-gone 0.1.0; "
                                             "installed is 0.2.0"):
            loaded = nc.Model.load(path)
        np.testing.assert_array_equal(loaded.forward(np.zeros((1, 3), np.float32)), np.full((1, 3), 5.0))


def test_the_environment_switch_disables_plugins(sites, monkeypatch):
    with installed(sites["mixed"]):
        assert "tt_good" in nc.layer_names()
        monkeypatch.setenv(registry.DISABLE_ENV, "1")
        registry.refresh()
        names = nc.layer_names()
        with pytest.raises(nc.UnknownLayerError, match="plugins found: none"):
            nc.get_layer("tt_good")
        monkeypatch.delenv(registry.DISABLE_ENV)
    assert "tt_good" not in names and "tt_dup" not in names and "relu" in names


def test_no_plugin_is_imported_until_used(sites):
    script = textwrap.dedent('''
        import sys
        import numbacnn as nc
        from numbacnn import registry

        def loaded():
            return sorted(m for m in sys.modules if m.startswith("numbacnn_tt_"))

        names = nc.layer_names()
        assert {"tt_good", "tt_broken", "tt_badclass"} <= set(names), names
        g = nc.Graph()
        h = g.relu(g.input((4,)))
        assert loaded() == [], loaded()
        g.output(g.tt_good(h))
        nc.Model(g)
        assert loaded() == ["numbacnn_tt_good", "numbacnn_tt_good.layer"], loaded()
        assert registry._discover()["tt_broken"].error is None  # never tried
        print("ok")
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sites["mixed"]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr
