"""The three example plugins, installed for real: discovered, listed, trained, saved, loaded.

Each plugin under plugins/ is copied to a temporary directory and installed with pip
(``--no-deps --no-build-isolation --no-index --target DIR``); the tests put DIR on sys.path
and take it off again. Their own conformance tests live beside them (plugins/*/tests).
"""

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import numbacnn as nc
from numbacnn import registry
from numbacnn.cli import main

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
DISTS = {"swish": "numbacnn-swish", "localconv": "numbacnn-localconv", "spp": "numbacnn-spp"}
# Whether the plugins are installed in this environment already (CI installs them).
PREINSTALLED = importlib.util.find_spec("numbacnn_swish") is not None


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("plugins")
    for dist in DISTS.values():
        shutil.copytree(PLUGINS / dist, src / dist, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info",
                                                                              "__pycache__"))
    target = src / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--no-cache-dir", "--disable-pip-version-check", "--target", str(target),
           *(str(src / d) for d in DISTS.values())]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture
def plugins(site):
    sys.path.append(str(site))
    importlib.invalidate_caches()
    registry.refresh()
    yield site
    sys.path.remove(str(site))
    importlib.invalidate_caches()
    registry.refresh()


def test_plugins_register_through_their_entry_points(plugins):
    for name, dist in DISTS.items():
        info = nc.layer_info(name)
        assert (info["distribution"], info["version"], info["builtin"]) == (dist, "0.1.0", False)
        assert info["class"].startswith(f"{dist.replace('-', '_')}.{name}:")
        assert info["devices"] == ["cpu", "cuda"] and info["error"] is None


def test_numbacnn_layers_lists_them_with_provider_version_and_devices(plugins, capsys):
    assert main(["layers"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    for name, dist in DISTS.items():
        assert rows[name] == [name, dist, "0.1.0", "cpu,cuda", "ok"]
    assert rows["relu"][1:3] == ["numbacnn", "(built-in)"]


def test_a_model_using_the_plugins_trains_saves_and_loads(plugins, tmp_path):
    g = nc.Graph()
    x = g.input((2, 6, 6))
    h = g.swish(x, beta=1.0, name="act")
    h = g.localconv(h, out_channels=3, kernel_size=3, padding=1, name="lc")
    g.output(g.spp(h, levels=[1, 2], name="pool"))
    model = nc.Model(g, seed=0)
    assert model.output_shape == (3 * 5,)

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((8, 2, 6, 6)).astype(np.float32)
    target = rng.standard_normal((8, 15)).astype(np.float32)
    opt = nc.optim.SGD(model, lr=0.1)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss, gy = nc.losses.mse(model.forward(xb, training=True), target)
        model.backward(gy)
        opt.step()
        losses.append(loss)
    assert losses[-1] < 0.8 * losses[0], losses
    assert float(model.params["act.beta"][0]) != 1.0  # beta learns

    path = tmp_path / "plugged.npz"
    model.save(path)
    loaded = nc.Model.load(path)
    providers = {n["layer"]: n["provider"] for n in loaded.to_spec()["graph"]["nodes"] if "provider" in n}
    assert providers["swish"] == {"distribution": "numbacnn-swish", "version": "0.1.0"}
    np.testing.assert_array_equal(loaded.forward(xb), model.forward(xb))


def test_layers_check_runs_the_kit_on_an_installed_plugin(plugins, capsys):
    assert main(["layers", "--check", "swish"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "swish: numbacnn_swish.swish:Swish from numbacnn-swish 0.1.0; devices: cpu, cuda"
    assert out[1].startswith("PASS  Swish(beta=1.0) on (2, 3, 4, 5): ")
    assert out[-1] == "swish: 2 of 2 example(s) passed"


@pytest.mark.skipif(PREINSTALLED, reason="numbacnn-swish is installed in this environment: it cannot go missing")
def test_a_saved_model_names_the_missing_plugin(site, tmp_path):
    path = tmp_path / "swish.npz"
    sys.path.append(str(site))
    registry.refresh()
    try:
        g = nc.Graph()
        g.output(g.swish(g.input((4,))))
        nc.Model(g).save(path)
    finally:
        sys.path.remove(str(site))
        registry.refresh()
    with pytest.raises(nc.PluginError) as e:
        nc.Model.load(path)
    assert str(e.value) == "layer 'swish' is provided by numbacnn-swish 0.1.0, which is not installed"


def test_user_code_never_imports_a_plugin(site):
    script = textwrap.dedent('''
        import sys
        import numpy as np
        import numbacnn as nc

        g = nc.Graph()
        x = g.input((1, 5, 5))
        assert not [m for m in sys.modules if m.startswith(("numbacnn_swish", "numbacnn_spp", "numbacnn_localconv"))]
        g.output(g.swish(x, beta=2.0))
        assert "numbacnn_swish" in sys.modules and "numbacnn_spp" not in sys.modules
        print(nc.Model(g).param_count())
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == "1", done.stderr


CPU_KERNELS = '''
from numbacnn.kernels import cpu_kernel, prange

__all__ = ["tt_triple_forward", "tt_triple_backward_input"]


@cpu_kernel
def tt_triple_forward(x, y):
    three = x.dtype.type(3)
    for i in prange(x.size):
        y[i] = three * x[i]


@cpu_kernel
def tt_triple_backward_input(x, gy, gx):
    three = x.dtype.type(3)
    for i in prange(x.size):
        gx[i] = three * gy[i]
'''


def test_new_plugin_writes_a_package_that_installs_and_tests(tmp_path, capsys):
    assert main(["new-plugin", "tt_triple", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "numbacnn-tt-triple"
    assert f"wrote {root}/" in capsys.readouterr().out
    for rel in ("pyproject.toml", "README.md", "numbacnn_tt_triple/tt_triple.py", "numbacnn_tt_triple/tt_triple_cpu.py",
                "numbacnn_tt_triple/tt_triple_cuda.py", "tests/test_tt_triple.py", "tests/test_tt_triple_benchmark.py"):
        assert (root / rel).is_file(), rel
    assert main(["new-plugin", "tt_triple", "--dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err

    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--no-cache-dir", "--target", str(target), str(root)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
    assert done.returncode == 0, done.stderr
    sys.path.append(str(target))
    registry.refresh()
    try:
        assert nc.layer_info("tt_triple")["distribution"] == "numbacnn-tt-triple"
        assert main(["layers", "--check", "tt_triple"]) == 1
        assert ("raised NotImplementedError: tt_triple_forward in numbacnn_tt_triple/tt_triple_cpu.py is not "
                "written yet") in capsys.readouterr().out
    finally:
        sys.path.remove(str(target))
        registry.refresh()

    # a child pytest is no xdist worker (pytest-benchmark reads PYTEST_XDIST_WORKER and disables itself)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM" and not k.startswith("PYTEST_XDIST")}

    def run_tests(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args], cwd=root,
                              capture_output=True, text=True, env=env, timeout=300).stdout

    # Unwritten: the conformance tests fail, the benchmarks skip, each saying what to write.
    out = run_tests("tests", "--benchmark-disable")
    assert "2 failed, 5 skipped" in out and "is not written yet" in out, out
    assert re.search(r"SKIPPED \[4\] tests/test_tt_triple_benchmark.py:\d+: not written yet: tt_triple_forward in "
                     r"numbacnn_tt_triple/tt_triple_cpu.py is not written yet", out) and "Warning" not in out, out
    # Written: the kernels, the reference and the NumPy peer; the package's own tests then pass.
    (root / "numbacnn_tt_triple" / "tt_triple_cpu.py").write_text(CPU_KERNELS)
    test_file = root / "tests" / "test_tt_triple.py"
    test_file.write_text(test_file.read_text().replace(
        '    raise NotImplementedError("write the NumPy reference of tt_triple in tests/test_tt_triple.py")',
        "    return 3 * x"))
    bench_file = root / "tests" / "test_tt_triple_benchmark.py"
    bench_file.write_text(bench_file.read_text().replace(
        '    raise NotImplementedError("write the NumPy forward of tt_triple in tests/test_tt_triple_benchmark.py")',
        "    return 3 * x").replace(
        '    raise NotImplementedError("write the NumPy backward of tt_triple in tests/test_tt_triple_benchmark.py")',
        "    return 3 * gy").replace("SHAPES = [(16, 64, 32, 32)]", "SHAPES = [(4, 8, 16, 16)]"))
    out = run_tests("tests", "--benchmark-disable")
    assert "6 passed, 1 skipped" in out, out
    # Timed, a few rounds: one group per mode, numbacnn's row beside NumPy's.
    out = run_tests("tests/test_tt_triple_benchmark.py", "--benchmark-json=run.json", "--benchmark-min-rounds=2",
                    "--benchmark-max-time=0.000001", "--benchmark-warmup=off")
    assert "4 passed" in out, out
    rows = json.loads((root / "run.json").read_text())["benchmarks"]
    groups = {}
    for row in rows:
        assert row["stats"]["rounds"] >= 2 and row["stats"]["median"] > 0
        groups.setdefault(row["group"], set()).add(row["extra_info"]["peer"])
    assert groups == {"tt_triple forward cpu 4x8x16x16": {"numbacnn", "numpy"},
                      "tt_triple forward+backward cpu 4x8x16x16": {"numbacnn", "numpy"}}
