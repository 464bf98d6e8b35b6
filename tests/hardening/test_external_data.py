"""The runtime's own external-data containment check, with onnxruntime's check out of the picture."""

import os

import numpy as np
import onnx
import pytest
from diffspec.runtime import cli
from diffspec.runtime import model as runtime_model
from diffspec.runtime.external_data import ExternalDataError, check_external_data, external_locations
from hardening_helpers import W, assert_clean_failure, external_model, run_cli


@pytest.fixture
def layout(tmp_path):
    """model/ (where models go) next to secret/w.bin, a file a crafted model must not read."""
    (tmp_path / "model").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "w.bin").write_bytes(W.tobytes())
    return tmp_path


def _symlinked_file(layout):
    os.symlink(layout / "secret" / "w.bin", layout / "model" / "w.bin")
    return "w.bin"


def _symlinked_folder(layout):
    os.symlink(layout / "secret", layout / "model" / "sub")
    return "sub/w.bin"


BAD = [  # (id, make the location given the layout, words the message must contain)
    ("dotdot", lambda d: "../secret/w.bin", "'..'"),
    ("dotdot-inner", lambda d: "a/../../secret/w.bin", "'..'"),
    ("absolute", lambda d: str(d / "secret" / "w.bin"), "absolute"),
    ("etc-passwd", lambda d: "/etc/passwd", "absolute"),
    ("windows-drive", lambda d: "C:/secret/w.bin", "absolute"),
    ("backslash", lambda d: "..\\secret\\w.bin", "backslash"),
    ("empty", lambda d: "", "empty"),
    ("symlink-file", _symlinked_file, "symlink"),
    ("symlink-folder", _symlinked_folder, "symlink"),
    ("missing", lambda d: "nothing-here.bin", "no such file"),
]


@pytest.mark.parametrize("make_location, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
@pytest.mark.parametrize("where", ["initializer", "subgraph", "sparse"])
def test_checker_refuses_locations_outside_the_folder(layout, make_location, words, where):
    location = make_location(layout)
    path = external_model(layout / "model" / "m.onnx", location, where=where)
    with pytest.raises(ExternalDataError) as info:
        check_external_data(path)
    message = str(info.value)
    assert repr(location) in message and words in message and "\n" not in message


def test_checker_accepts_a_plain_file_and_finds_every_location(layout):
    (layout / "model" / "w.bin").write_bytes(W.tobytes())
    (layout / "model" / "data").mkdir()
    (layout / "model" / "data" / "w.bin").write_bytes(W.tobytes())
    for location in ("w.bin", "./w.bin", "data/w.bin"):
        path = external_model(layout / "model" / "m.onnx", location)
        assert check_external_data(path) == [
            os.path.join(str(layout / "model"), *location.split("/")[-2:])
            if location.startswith("data")
            else str(layout / "model" / "w.bin")
        ]
    # the walk agrees with the onnx package's view of the same files, on each kind of tensor it covers
    for where in ("initializer", "subgraph", "sparse"):
        path = external_model(layout / "model" / f"{where}.onnx", "w.bin", where=where)
        with open(path, "rb") as f:
            ours = external_locations(f.read())
        model = onnx.load(path, load_external_data=False)
        tensors = [*onnx.external_data_helper._get_all_tensors(model)]
        tensors += [s.values for s in model.graph.sparse_initializer]  # onnx's helper skips sparse initializers
        theirs = [(t.name, "w.bin") for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
        assert ours == theirs and ours


def test_checker_refuses_a_truncated_file(layout):
    (layout / "model" / "w.bin").write_bytes(W.tobytes())
    data = open(external_model(layout / "model" / "m.onnx", "w.bin"), "rb").read()
    cut = data.rindex(b"location") + 10  # inside the location entry: the enclosing fields now run past the end
    (layout / "model" / "cut.onnx").write_bytes(data[:cut])
    with pytest.raises(ExternalDataError, match="not a well-formed ONNX file"):
        check_external_data(layout / "model" / "cut.onnx")


class _Spy:
    """Stands in for onnxruntime.InferenceSession: records that it was asked to open a file."""

    opened = []

    def __init__(self, path, *args, **kwargs):
        _Spy.opened.append(path)
        raise AssertionError("onnxruntime was asked to open a model the runtime should have refused")


@pytest.mark.parametrize("location", ["../secret/w.bin", "/etc/passwd", "w.bin"], ids=["dotdot", "absolute", "link"])
def test_sample_refuses_before_onnxruntime_opens_the_file(layout, monkeypatch, location):
    if location == "w.bin":
        _symlinked_file(layout)
    path = external_model(layout / "model" / "m.onnx", location)
    ort = runtime_model._ort()
    monkeypatch.setattr(ort, "InferenceSession", _Spy)
    _Spy.opened.clear()
    out = layout / "model" / "s.npy"
    code, _, err = run_cli(cli.main, [path, "-n", 2, "--steps", 2, "--out", out, "--no-progress"])
    assert_clean_failure(code, err, repr(location))
    assert _Spy.opened == [] and not out.exists()


def test_sample_runs_with_a_legitimate_external_data_file(layout):
    (layout / "model" / "w.bin").write_bytes(W.tobytes())
    path = external_model(layout / "model" / "m.onnx", "w.bin")
    out = layout / "model" / "s.npy"
    code, _, err = run_cli(cli.main, [path, "-n", 3, "--steps", 2, "--out", out, "--no-progress"])
    assert code == 0, err
    assert np.load(out).shape == (3, 2)
