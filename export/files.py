"""Writing and reading `.onnx` files safely: atomic writes, external data that stays next to the model.

A model whose weights exceed `EXTERNAL_DATA_THRESHOLD` bytes (protobuf cannot serialise a message over 2 GiB)
is written as `NAME.onnx` plus `NAME.onnx.data` in the same directory, the data file named by a bare relative
location. A reader must not follow a location out of the model's directory: `check_external_data` refuses
locations that are absolute, contain '..', or name a symlink, before any byte of external data is read.
"""

import errno
import os
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from onnx import TensorProto, external_data_helper

# Initializer bytes above which weights go to an external-data file: protobuf's hard limit is 2 GiB for the
# whole message, so leave headroom for the graph and metadata.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**27


def initializer_bytes(model):
    """Total bytes of the model's initializers held in the proto."""
    return sum(len(t.raw_data) or t.ByteSize() for t in _all_tensors(model))


def _all_tensors(model):
    yield from external_data_helper._get_all_tensors(model)


def external_locations(model):
    """The external-data locations the model's tensors refer to (in order, without duplicates)."""
    seen = []
    for tensor in _all_tensors(model):
        if tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL:
            info = external_data_helper.ExternalDataInfo(tensor)
            if info.location not in seen:
                seen.append(info.location)
    return seen


def check_external_data(model, base_dir, *, source="the model"):
    """Refuse external-data locations that could read outside `base_dir`; return the resolved data files.

    Refused: an absolute path (POSIX or Windows form), any '..' component, a location that is or passes
    through a symlink, and a missing file. Raises ValueError naming the tensor's location.
    """
    base = Path(base_dir).resolve()
    files = []
    for location in external_locations(model):
        posix, windows = PurePosixPath(location), PureWindowsPath(location)
        absolute = posix.is_absolute() or windows.is_absolute() or windows.drive
        if not location or absolute or location.startswith(("/", "\\")):
            raise ValueError(
                f"{source}: external data location {location!r} is absolute: expected a file name "
                "relative to the model's directory"
            )
        if ".." in posix.parts or ".." in windows.parts:
            raise ValueError(
                f"{source}: external data location {location!r} contains '..': expected a file "
                "inside the model's directory"
            )
        path = base
        for part in windows.parts:  # PureWindowsPath splits on both '/' and '\\'
            path = path / part
            if path.is_symlink():
                raise ValueError(
                    f"{source}: external data location {location!r} goes through a symlink "
                    f"({path}): expected a plain file next to the model"
                )
        if not path.is_file():
            raise ValueError(f"{source}: external data file {location!r} not found next to the model in {base}")
        files.append(path)
    return files


def load_index_tensors(model, base_dir):
    """Load the (small) integer tensors kept externally, so shape inference can read shapes and axes."""
    for tensor in _all_tensors(model):
        if (
            tensor.HasField("data_location")
            and tensor.data_location == TensorProto.EXTERNAL
            and tensor.data_type in (TensorProto.INT64, TensorProto.INT32)
        ):
            external_data_helper.load_external_data_for_tensor(tensor, str(base_dir))
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]
    return model


def load_model_safely(path, *, load_external_data=True):
    """onnx.load with the external-data checks above; a ValueError for missing, truncated or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"onnx_path={str(path)!r}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ValueError(f"{path}: not a readable ONNX file ({type(err).__name__}: {err})") from None
    check_external_data(model, path.parent, source=str(path))
    if load_external_data and external_locations(model):
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    return model


def check_output_file(path: str | Path, *, must_exist: bool = False) -> Path:
    """Fail before any work on an output path that cannot be written: a missing or read-only folder, a directory,
    a name not ending in .onnx. `must_exist` (for --verify-only): the file must be there. Raises ValueError."""
    path = Path(path)
    if must_exist:
        if not path.is_file():
            raise ValueError(f"--output {str(path)!r}: no such file to verify")
        return path
    if path.is_dir():
        raise ValueError(f"--output {str(path)!r} is a directory: expected a file name such as model.onnx")
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"--output {str(path)!r}: expected a file name ending in .onnx")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"--output {str(path)!r}: directory {str(folder)!r} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--output {str(path)!r} cannot be written (no write permission)")
    return path


def _replace_temporary(err, tmp, path):
    """The same exception with the temporary's name replaced by the final path's (a user never sees .tmp names)."""
    text = str(err).replace(str(tmp), str(path)).replace(str(tmp.parent), str(path.parent))
    try:
        return type(err)(text)
    except Exception:  # an exception type that takes other arguments: keep the original
        return err


TEMP_PREFIX = ".diffspec-export-"  # temporary folders: .diffspec-export-PID-XXXXXXXX.tmp next to the output
STALE_SECONDS = 60.0


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def prune_temporaries(folder: str | Path, *, older_than: float = STALE_SECONDS) -> list[str]:
    """Remove the temporary folders of exports that were killed before they could clean up: those whose process
    no longer exists and that are older than `older_than` seconds. Returns the names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        pid = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_dir(follow_symlinks=False) or not pid.isdigit():
            continue
        try:
            stale = now - entry.stat(follow_symlinks=False).st_mtime >= older_than
        except OSError:
            continue
        if stale and not _pid_alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return removed


def write_atomically(model, path, *, external_data_threshold=EXTERNAL_DATA_THRESHOLD, check=None):
    """Save `model` to `path` via a temporary directory in the same folder, run `check(tmp_path)`, then rename.

    With more than `external_data_threshold` initializer bytes, the weights go to `path.name + ".data"` next to
    the model. If saving or `check` raises, nothing is left behind and an existing file at `path` is untouched;
    the error names `path`, never the temporary (a full disk says "no space left on device"). Temporary folders
    left by a killed export in the same folder are removed first (`prune_temporaries`).
    Returns the list of files written.
    """
    path = Path(path)
    prune_temporaries(path.parent)
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise OSError(err.errno, f"cannot write {str(path)!r} ({err.strerror or err})") from None
    tmp = tmpdir / path.name
    try:
        data_name = path.name + ".data"
        try:
            if initializer_bytes(model) > external_data_threshold:
                onnx.save_model(
                    model,
                    str(tmp),
                    save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location=data_name,
                    size_threshold=1024,
                )
            else:
                onnx.save_model(model, str(tmp))
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise OSError(err.errno, f"no space left on device while writing {str(path)!r}") from None
            raise OSError(err.errno, f"cannot write {str(path)!r} ({err.strerror or err})") from None
        if check is not None:
            try:
                check(tmp)
            except Exception as err:
                raise _replace_temporary(err, tmp, path) from None
        written = []
        if (tmpdir / data_name).exists():
            os.replace(tmpdir / data_name, path.parent / data_name)
            written.append(path.parent / data_name)
        os.replace(tmp, path)
        written.insert(0, path)
        return written
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
