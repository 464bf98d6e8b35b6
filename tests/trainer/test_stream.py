"""The data stream: batches are a pure function of the position, whatever the number of loader workers, so a
resumed run on an image folder continues bit for bit; flips and crops are drawn per position."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffspec.trainer.data import load_dataset
from diffspec.trainer.loop import TrainConfig, train
from diffspec.trainer.stream import BatchStream, LoaderStream
from PIL import Image
from safetensors.torch import load_file

torch.set_num_threads(1)
CPU = torch.device("cpu")


@pytest.fixture
def folder(tmp_path):
    """Eleven 10x12 RGB images: red a left-to-right ramp (flips and crops are visible), blue the image's number."""
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(11):
        img = np.zeros((10, 12, 3), np.uint8)
        img[..., 0] = np.linspace(0, 255, 12).round().astype(np.uint8)[None, :]
        img[..., 2] = 20 * i
        Image.fromarray(img).save(root / f"{i:02d}.png")
    return root


def _batches(stream, start, size, count):
    out = [stream.batch(start + k * size, size)[0] for k in range(count)]
    stream.close()
    return out


def test_workers_and_restarts_give_the_same_batches(folder):
    ds = load_dataset(str(folder), resolution=8)
    kw = dict(seed=3, rank=0, world=1, random_flip=True)
    direct = _batches(LoaderStream(ds, CPU, workers=0, **kw), 0, 4, 6)  # 24 positions: past two epochs of 11
    parallel = _batches(LoaderStream(ds, CPU, workers=2, **kw), 0, 4, 6)
    resumed = _batches(LoaderStream(ds, CPU, workers=2, **kw), 12, 4, 3)
    for a, b in zip(direct, parallel):
        assert torch.equal(a, b)
    for a, b in zip(direct[3:], resumed):
        assert torch.equal(a, b)
    assert direct[0].shape == (4, 3, 8, 8) and direct[0].dtype == torch.float32
    # each epoch visits every image once: the blue channel says which image it is
    ids = torch.round((torch.cat(direct)[:, 2, 0, 0] + 1) * 255 / 2 / 20).long().tolist()
    assert sorted(ids[:11]) == list(range(11)) and sorted(ids[11:22]) == list(range(11)) and ids[:11] != ids[11:22]


def test_random_flip_flips_about_half_and_crops_move(folder):
    ds = load_dataset(str(folder), resolution=8)
    x = torch.cat(_batches(LoaderStream(ds, CPU, workers=0, seed=0, rank=0, world=1, random_flip=True), 0, 11, 8))
    red = x[:, 0]  # a ramp: increasing left to right unless flipped
    flipped = (red[:, 0, -1] < red[:, 0, 0]).float().mean()
    assert 0.3 < float(flipped) < 0.7  # 88 draws of a fair coin
    left_edges = {round(float(v), 4) for v in red[:, 0, 0]}
    assert len(left_edges) > 2  # random crops start at different columns

    arrays = load_dataset("digits")
    plain = BatchStream(arrays, CPU, seed=0, rank=0, world=1).batch(0, 64)[0]
    flip = BatchStream(arrays, CPU, seed=0, rank=0, world=1, random_flip=True).batch(0, 64)[0]
    same = (flip == plain).flatten(1).all(1)
    mirrored = (flip == plain.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int((~same).sum()) < 54


def test_resume_on_an_image_folder_with_workers_is_bit_exact(folder, tmp_path):
    kw = dict(
        data=str(folder),
        resolution=8,
        random_flip=True,
        dataloader_num_workers=2,
        max_train_steps=6,
        checkpointing_steps=3,
        train_batch_size=4,
        model_kwargs={"model_channels": 8, "groups": 4, "num_heads": 2},
        progress=False,
        validation_steps=10**6,
        num_validation_samples=2,
        num_inference_steps=2,
        logging_steps=1,
        device="cpu",
        threads=1,
    )
    train(TrainConfig(output_dir=str(tmp_path / "straight"), **kw))
    train(TrainConfig(output_dir=str(tmp_path / "split"), **kw))
    shutil.rmtree(tmp_path / "split" / "checkpoint-6")
    res = train(TrainConfig(output_dir=str(tmp_path / "split"), resume_from_checkpoint="latest", **kw))
    assert res["start_step"] == 3
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(str(Path(tmp_path, "straight", "checkpoint-6", name)))
        b = load_file(str(Path(tmp_path, "split", "checkpoint-6", name)))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
