"""The runtime's own check of an `.onnx` file's external-data locations, done before onnxruntime opens the file.

An ONNX tensor may keep its bytes in another file, named by the `location` entry of `TensorProto.external_data`.
A crafted file can name `../secret`, `/etc/passwd` or a symlink there; onnxruntime releases before 1.24 read
such a file into a weight. The runtime therefore reads the locations itself, with a minimal protobuf walk (no
`onnx` package needed), and refuses, naming the location:

- an empty or absolute location (POSIX or Windows form), a backslash or a NUL byte in it;
- a `..` component;
- a symlink anywhere on the path from the model's folder to the file;
- a file that resolves outside the model's folder, or does not exist (or is not a regular file).

The walk covers every tensor a model can hold: `ModelProto.graph` and its subgraphs (node attributes of types
TENSOR, TENSORS, GRAPH, GRAPHS, SPARSE_TENSOR(S), recursively), sparse initializers (values and indices),
function bodies, and training-info graphs. Field numbers are those of onnx.proto (IR version 10).
"""

import mmap
import os
from collections.abc import Iterator

__all__ = ["ExternalDataError", "check_external_data", "external_locations"]


class ExternalDataError(ValueError):
    """An external-data location that could read outside the model's folder, or a broken protobuf structure."""


# onnx.proto field numbers (wire type 2 = length-delimited message) ---------------------------------------------
_MODEL_GRAPH, _MODEL_TRAINING_INFO, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_INIT, _TRAINING_ALGO = 1, 2
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA = 8, 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_MAX_DEPTH = 64  # nested subgraphs deeper than this are refused (a crafted file could recurse forever)


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise ExternalDataError(f"protobuf varint runs past byte {end}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each length-delimited field; other fields skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise ExternalDataError(f"a protobuf field of {length} bytes at byte {pos} runs past byte {end}")
            yield number, wire, pos, pos + length
            pos += length
            continue
        else:
            raise ExternalDataError(f"protobuf wire type {wire} at byte {pos} is not one ONNX uses")
        if pos > end:
            raise ExternalDataError(f"a protobuf field runs past byte {end}")


def _text(buf, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def _tensor(buf, start, end, out):
    name, location = "", None
    for number, _, s, e in _fields(buf, start, end):
        if number == _TENSOR_NAME:
            name = _text(buf, s, e)
        elif number == _TENSOR_EXTERNAL_DATA:
            key = value = None
            for n, _, s2, e2 in _fields(buf, s, e):
                if n == _ENTRY_KEY:
                    key = _text(buf, s2, e2)
                elif n == _ENTRY_VALUE:
                    value = _text(buf, s2, e2)
            if key == "location":
                location = value or ""
    if location is not None:
        out.append((name, location))


def _sparse(buf, start, end, out):
    for number, _, s, e in _fields(buf, start, end):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(buf, s, e, out)


def _node(buf, start, end, out, depth):
    for number, _, s, e in _fields(buf, start, end):
        if number != _NODE_ATTRIBUTE:
            continue
        for n, _, s2, e2 in _fields(buf, s, e):
            if n in (_ATTR_T, _ATTR_TENSORS):
                _tensor(buf, s2, e2, out)
            elif n in (_ATTR_G, _ATTR_GRAPHS):
                _graph(buf, s2, e2, out, depth + 1)
            elif n in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(buf, s2, e2, out)


def _graph(buf, start, end, out, depth):
    if depth > _MAX_DEPTH:
        raise ExternalDataError(f"subgraphs nested deeper than {_MAX_DEPTH} levels")
    for number, _, s, e in _fields(buf, start, end):
        if number == _GRAPH_INITIALIZER:
            _tensor(buf, s, e, out)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(buf, s, e, out)
        elif number == _GRAPH_NODE:
            _node(buf, s, e, out, depth)


def _model(buf, start, end, out):
    for number, _, s, e in _fields(buf, start, end):
        if number == _MODEL_GRAPH:
            _graph(buf, s, e, out, 0)
        elif number == _MODEL_TRAINING_INFO:
            for n, _, s2, e2 in _fields(buf, s, e):
                if n in (_TRAINING_INIT, _TRAINING_ALGO):
                    _graph(buf, s2, e2, out, 0)
        elif number == _MODEL_FUNCTIONS:
            for n, _, s2, e2 in _fields(buf, s, e):
                if n == _FUNCTION_NODE:
                    _node(buf, s2, e2, out, 0)


def external_locations(data) -> list[tuple[str, str]]:
    """[(tensor name, location)] of every tensor in a serialised ModelProto (bytes-like) that names external data."""
    out: list[tuple[str, str]] = []
    if data.find(b"location") < 0:  # every location entry spells its key: nothing to walk
        return out
    _model(data, 0, len(data), out)
    return out


def _check_location(location: str, base: str, *, source: str) -> str:
    where = f"{source}: external data location {location!r}"
    if not location or "\x00" in location:
        raise ExternalDataError(f"{where} is empty or contains a NUL byte: expected a file name next to the model")
    if "\\" in location or location.startswith("/") or (len(location) > 1 and location[1] == ":"):
        raise ExternalDataError(
            f"{where} is absolute or uses backslashes: expected a file name relative to the "
            "model's folder, with '/' separators"
        )
    parts = [p for p in location.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ExternalDataError(f"{where} contains '..': expected a file inside the model's folder")
    path = base
    for part in parts:
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise ExternalDataError(f"{where} goes through a symlink: expected a plain file inside the model's folder")
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    if os.path.commonpath([real_base, real]) != real_base or real == real_base:
        raise ExternalDataError(f"{where} resolves outside the model's folder")
    if not os.path.isfile(path):
        raise ExternalDataError(f"{where}: no such file next to the model (copy the model's data file with it)")
    return path


def check_external_data(path, *, source: str | None = None) -> list[str]:
    """Check every external-data location of the `.onnx` file at `path`; return the data files it names.

    Raises ExternalDataError (a ValueError) with one line naming the first bad location. The model's folder is
    the folder of `path` as given, the one onnxruntime resolves locations against.
    """
    path = os.fspath(path)
    source = repr(path) if source is None else source
    base = os.path.dirname(os.path.abspath(path))
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            try:
                found = external_locations(mm)
            except ExternalDataError as err:
                raise ExternalDataError(f"{source} is not a well-formed ONNX file ({err})") from None
    files = []
    for _, location in found:
        file = _check_location(location, base, source=source)
        if file not in files:
            files.append(file)
    return files
