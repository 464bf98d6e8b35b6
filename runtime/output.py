"""Writing samples: a PNG grid of images, a PNG scatter plot of 2-D points, or the arrays as .npy / .npz.

Values arrive in the data's original range (`DataInfo.range`); images are mapped from that range to 0..255.
Files are written to a temporary name in the same folder (`.diffspec-PID-*`) and renamed, so a failed run never
leaves half a file; the temporaries of a run that was killed are removed by the next write to that folder. Files
get the usual mode (0666 less the umask), as `open` would give them.
"""

import errno
import math
import os
import tempfile
import time

import numpy as np

SUFFIXES = (".png", ".npy", ".npz")


def check_output_path(path):
    """Fail early (before sampling) on an output path that cannot be written or has an unknown suffix."""
    path = os.fspath(path)
    if os.path.isdir(path):
        example = os.path.join(path, "grid.png")
        raise ValueError(f"output {path!r} is a directory: expected a file name such as {example}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"output {path!r}: expected a name ending in {', '.join(SUFFIXES)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"output {path!r}: folder {folder!r} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"output {path!r} cannot be written (no write permission)")
    return path


TEMP_PREFIX = ".diffspec-"  # temporaries are named .diffspec-PID-XXXXXXXX.SUFFIX next to the output
STALE_SECONDS = 60.0


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def prune_temporaries(folder: str, *, older_than: float = STALE_SECONDS) -> list[str]:
    """Remove `.diffspec-PID-*` temporaries in `folder` left by a run that was killed before it could clean up:
    those whose process no longer exists and that are older than `older_than` seconds. Returns the removed names."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
            continue
        pid_text = name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime >= older_than:
                os.remove(entry.path)
                removed.append(name)
        except OSError:
            pass
    return removed


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path, write):
    """write(tmp) to a temporary next to `path`, give it the usual mode (0666 less the umask), rename it to `path`.
    A full disk or any other OSError raises an OSError naming `path` (never the temporary)."""
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    prune_temporaries(folder)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        if err.errno == errno.ENOSPC:
            raise OSError(err.errno, f"no space left on device while writing {path!r}") from None
        raise OSError(err.errno, f"cannot write {path!r} ({err.strerror or err})") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp):
    try:
        os.remove(tmp)
    except OSError:
        pass


def to_uint8(images, value_range):
    """Images in [lo, hi] -> uint8 0..255."""
    lo, hi = (float(v) for v in value_range)
    scaled = (np.asarray(images, dtype=np.float64) - lo) / (hi - lo)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(images, value_range, *, columns=None, pad=1, min_tile=48):
    """(n, C, H, W) or (n, H, W) images with C in {1, 3} -> one uint8 grid (rows, cols[, 3]), tiles upscaled by an
    integer factor (nearest neighbour) to at least `min_tile` pixels so small images stay visible."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"samples of shape {images.shape[1:]} are not images with 1 or 3 channels: write .npy or .npz instead"
        )
    n, c, h, w = images.shape
    scale = max(1, math.ceil(min_tile / max(h, w)))
    tiles = to_uint8(images, value_range).repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((c, rows * (h + pad) + pad, columns * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = tiles[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


_PALETTE = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ],
    dtype=np.uint8,
)


def scatter_image(points, *, labels=None, value_range=None, size=512, margin=16, dot=2):
    """(n, 2) points -> an RGB uint8 scatter plot drawn with numpy: axes span the data range (or the points'
    extent if wider), with a grey frame and zero lines; points coloured by label if given."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"samples of shape {points.shape[1:]} are not 2-D points: write .npy or .npz instead")
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    if value_range is not None:
        lo = np.minimum(lo, float(value_range[0]))
        hi = np.maximum(hi, float(value_range[1]))
    center, half = (lo + hi) / 2, max(float(np.max(hi - lo)) / 2, 1e-12) * 1.05
    inner = size - 2 * margin
    px = margin + (points - center + half) / (2 * half) * (inner - 1)
    cols = np.round(px[:, 0]).astype(int)
    rows = np.round(size - 1 - px[:, 1]).astype(int)
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    grey = np.array([200, 200, 200], dtype=np.uint8)
    img[margin, margin : size - margin] = grey
    img[size - margin - 1, margin : size - margin] = grey
    img[margin : size - margin, margin] = grey
    img[margin : size - margin, size - margin - 1] = grey
    for axis, coord in ((0, 0.0), (1, 0.0)):  # zero lines where visible
        p = margin + (coord - center[axis] + half) / (2 * half) * (inner - 1)
        if margin < p < size - margin:
            if axis == 0:
                img[margin : size - margin, int(round(p))] = [235, 235, 235]
            else:
                img[int(round(size - 1 - p)), margin : size - margin] = [235, 235, 235]
    if labels is not None:
        colors = _PALETTE[np.asarray(labels) % len(_PALETTE)]
    else:
        colors = np.tile(_PALETTE[0], (len(points), 1))
    for dr in range(-dot + 1, dot):
        for dc in range(-dot + 1, dot):
            r, c = np.clip(rows + dr, 0, size - 1), np.clip(cols + dc, 0, size - 1)
            img[r, c] = colors
    return img


def write_samples(path, samples, *, kind, value_range, labels=None, indices=None, metadata=None, columns=None):
    """Write samples by the suffix of `path`: .png (image grid or 2-D scatter), .npy (the array), .npz (samples,
    labels if any, indices). `columns`: tiles per row of an image grid (default: a square-ish grid)."""
    from PIL import Image

    path = check_output_path(path)
    suffix = os.path.splitext(path)[1].lower()
    samples = np.asarray(samples)
    if suffix == ".npy":
        _atomic_write(path, lambda tmp: np.save(tmp, samples.astype(np.float32)))
    elif suffix == ".npz":
        arrays = {"samples": samples.astype(np.float32)}
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=np.int64)
        if indices is not None:
            arrays["indices"] = np.asarray(indices, dtype=np.int64)
        for k, v in (metadata or {}).items():
            arrays[k] = np.asarray(v)
        _atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    else:
        if kind == "points" or (samples.ndim == 2 and samples.shape[1] == 2):
            pixels = scatter_image(samples, labels=labels, value_range=value_range)
        else:
            pixels = image_grid(samples, value_range, columns=columns)
        _atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
    return path
