"""Model files never mislead and are never destroyed: atomic saves, no non-finite weights,
errors that name the file and say what it is, malformed specs named before anything is built."""

import json
import os
import stat

import numpy as np
import pytest

import numbacnn as nc
from numbacnn._checkpoint import check_writable
from numbacnn.model import MODEL_FORMAT


def small_model(seed=0):
    g = nc.Graph()
    g.output(g.linear(g.flatten(g.input((1, 4, 4))), out_features=3, name="fc"))
    return nc.Model(g, seed=seed)


def write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def spec_bytes(spec):
    return np.frombuffer(json.dumps(spec).encode(), np.uint8)


# atomic writes ---------------------------------------------------------------------------------
def test_interrupted_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    small_model(seed=0).save(path)
    before = path.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def interrupted(fp, array, *args, **kwargs):  # Ctrl-C in the middle of the second array
        calls.append(array.shape)
        if len(calls) == 2:
            fp.write(b"half an array")
            raise KeyboardInterrupt
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        small_model(seed=1).save(path)
    monkeypatch.undo()
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind
    np.testing.assert_array_equal(nc.Model.load(path).params["fc.weight"], small_model(seed=0).params["fc.weight"])


def test_save_writes_exactly_the_path_with_ordinary_permissions(tmp_path):
    small_model().save(tmp_path / "weights")  # no ".npz" appended
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert sorted(os.listdir(tmp_path)) == ["plain", "weights"]
    mode = stat.S_IMODE(os.stat(tmp_path / "weights").st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode)  # the umask decides, as for open()


# non-finite weights ----------------------------------------------------------------------------
def test_nonfinite_weights_are_never_saved(tmp_path):
    path = tmp_path / "m.npz"
    small_model().save(path)
    before = path.read_bytes()
    model = small_model(seed=1)
    model.params["fc.weight"][0, 0] = np.nan
    model.params["fc.bias"][1] = np.inf
    with pytest.raises(ValueError, match=r"m.npz: not saved: fc.weight, fc.bias hold NaN or inf .*"
                                         r"allow_nonfinite=True"):
        model.save(path)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="new.npz: not saved: fc.weight, fc.bias"):
        model.save(tmp_path / "new.npz")
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    model.save(tmp_path / "debug.npz", allow_nonfinite=True)  # the explicit opt-in, for debugging
    assert np.isnan(nc.Model.load(tmp_path / "debug.npz").params["fc.weight"][0, 0])


# reading: say what the file is, never suggest unpickling ---------------------------------------
def test_random_bytes_are_not_a_checkpoint_and_nothing_says_pickle(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="random.npz: not a numbacnn checkpoint") as e:
        nc.Model.load(path)
    assert "pickle" not in str(e.value)


def test_npy_file_is_named_as_such(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"weights.npy: a single NumPy array \(.npy\), not a numbacnn checkpoint"):
        nc.Model.load(path)


def test_object_arrays_are_refused_without_suggesting_allow_pickle(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, spec=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="objects.npz: .*Python objects, which numbacnn never unpickles") as e:
        nc.Model.load(path)
    assert "allow_pickle" not in str(e.value)


def test_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        nc.Model.load(tmp_path)


def test_corrupt_spec_json_names_the_file(tmp_path):
    path = tmp_path / "bad-spec.npz"
    write_npz(path, spec=np.frombuffer(b'{"format": ', np.uint8))
    with pytest.raises(ValueError, match="bad-spec.npz: corrupt checkpoint: its model spec is not valid JSON"):
        nc.Model.load(path)


def test_malformed_spec_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "no-graph.npz"
    write_npz(path, spec=spec_bytes({"format": MODEL_FORMAT}))
    with pytest.raises(nc.GraphError, match="no-graph.npz: model spec: no 'graph' entry"):
        nc.Model.load(path)


# spec structure --------------------------------------------------------------------------------
def good_spec():
    return json.loads(json.dumps(small_model().to_spec()))


def broken(edit):
    spec = good_spec()
    edit(spec)
    return spec


@pytest.mark.parametrize("spec,match", [
    ({"format": MODEL_FORMAT}, "model spec: no 'graph' entry"),
    (broken(lambda s: s.update(dtype="int8")), "'dtype' must be one of float32, float64, found 'int8'"),
    (broken(lambda s: s.update(seed="0")), "'seed' must be an int, found '0'"),
    (broken(lambda s: s.update(graph={"format": "numbacnn.graph/1"})), "graph spec: 'nodes' must be a list, found nothing"),
    (broken(lambda s: s["graph"].update(nodes=["input"])), "graph spec: node 0 must be a dict .*found str 'input'"),
    (broken(lambda s: s["graph"]["nodes"][1].pop("layer")), r"node 1 \('flatten_1'\): 'layer' must be a str, found nothing"),
    (broken(lambda s: s["graph"]["nodes"][2].update(config=[3])), r"node 2 \('fc'\): 'config' must be a dict, found list"),
    (broken(lambda s: s["graph"]["nodes"][2].update(inputs=[1])), "'inputs' must list node names, found \\[1\\]"),
    (broken(lambda s: s["graph"]["nodes"][2].update(name="flatten_1")), "the name is used twice"),
    (broken(lambda s: s["graph"]["nodes"][0]["config"].pop("shape")), "an input's config needs 'shape'"),
    (broken(lambda s: s["graph"].update(outputs=["zz"])), "'outputs' names 'zz', which is not a node of the spec"),
    (broken(lambda s: s["graph"].update(inputs=["fc"])), "'inputs' names 'fc', which is not an input node"),
])
def test_malformed_specs_are_named(spec, match):
    with pytest.raises(nc.GraphError, match=match):
        nc.Model.from_spec(spec)


def test_good_spec_still_round_trips():
    model = nc.Model.from_spec(good_spec())
    assert list(model.params) == ["fc.weight", "fc.bias"]


# checkpoint paths ------------------------------------------------------------------------------
def test_check_writable_names_the_problem(tmp_path):
    check_writable(tmp_path / "new.npz")
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere does not exist"):
        check_writable(tmp_path / "nowhere" / "x.npz")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_writable(tmp_path)
