"""The data stream: batches as a pure function of their position in the stream.

Position p of the stream is sample `perm_e[p mod N]` of this rank's shard, with e = p // N the epoch and
perm_e a permutation drawn from numpy's generator seeded with (seed, rank, e). The random augmentations of
position p (horizontal flip, crop offsets) are uniforms drawn from a second generator seeded with
(seed, rank, e, 1). Nothing about the order or the augmentations is state, and nothing depends on which
process reads a sample: a run resumed at step s reads from position s * accumulation * batch and sees the same
samples, flipped and cropped the same way, as a run that never stopped, with any number of loader workers.

Two streams share that order: `BatchStream` for data held whole on the device (points, digits, arrays) and
`LoaderStream` for image folders, read and decoded by a `torch.utils.data.DataLoader` with worker processes.
"""

from collections.abc import Iterator

import numpy as np
import torch

NUM_UNIFORMS = 3  # per position: flip, crop row, crop column


def shard_indices(n: int, rank: int, world: int, name: str) -> np.ndarray:
    idx = np.arange(n)[rank::world]
    if len(idx) == 0:
        raise ValueError(f"data {name!r} has {n} samples: fewer than the {world} ranks")
    return idx


class StreamOrder:
    """Which sample sits at each position of the stream, and its augmentation uniforms (module docstring)."""

    def __init__(self, idx: np.ndarray, *, seed: int, rank: int):
        self.idx, self.seed, self.rank = idx, seed, rank
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}  # uniforms drawn on first use

    def __len__(self) -> int:
        return len(self.idx)

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            perm = self.idx[np.random.default_rng([self.seed, self.rank, epoch]).permutation(len(self.idx))]
            self._cache[epoch] = (perm, None)
        return self._cache[epoch]

    def _uniforms_of(self, epoch: int) -> np.ndarray:
        perm, u = self._epoch(epoch)
        if u is None:
            u = np.random.default_rng([self.seed, self.rank, epoch, 1]).random((len(self.idx), NUM_UNIFORMS))
            self._cache[epoch] = (perm, u)
        return u

    def indices(self, start: int, size: int) -> np.ndarray:
        """Dataset indices of positions start .. start + size - 1."""
        n = len(self.idx)
        pos = np.arange(start, start + size)
        epochs = pos // n
        sel = np.empty(size, dtype=np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            sel[m] = self._epoch(int(e))[0][pos[m] % n]
        return sel

    def uniforms(self, start: int, size: int) -> np.ndarray:
        """(size, NUM_UNIFORMS) uniforms in [0, 1) of positions start .. start + size - 1."""
        n = len(self.idx)
        pos = np.arange(start, start + size)
        epochs = pos // n
        out = np.empty((size, NUM_UNIFORMS))
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self._uniforms_of(int(e))[pos[m] % n]
        return out


class BatchStream:
    """A data set held whole on the device (points, small image sets), read in stream order."""

    def __init__(self, ds, device, *, seed: int, rank: int, world: int, random_flip: bool = False):
        self.order = StreamOrder(shard_indices(len(ds.x), rank, world, ds.name), seed=seed, rank=rank)
        self.x = torch.as_tensor(ds.x, device=device)
        self.y = torch.as_tensor(ds.y, device=device) if ds.y is not None else None
        self.random_flip = random_flip

    @property
    def shard_size(self) -> int:
        return len(self.order)

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        sel = torch.as_tensor(self.order.indices(start, size), device=self.x.device)
        x = self.x[sel]
        if self.random_flip:
            flip = torch.as_tensor(self.order.uniforms(start, size)[:, 0] < 0.5, device=x.device)
            x = torch.where(flip.reshape((-1,) + (1,) * (x.ndim - 1)), x.flip(-1), x)
        return x, (self.y[sel] if self.y is not None else None)

    def close(self) -> None:
        pass


class _FolderItems(torch.utils.data.Dataset):
    """Item (index, u_flip, u_row, u_col) -> the image tensor, decoded in a loader worker."""

    def __init__(self, folder, random_flip: bool):
        self.folder, self.random_flip = folder, random_flip

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item):
        index, u_flip, u_row, u_col = item
        arr = self.folder.load(int(index), (u_row, u_col))
        if self.random_flip and u_flip < 0.5:
            arr = arr[..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(arr))


class _Positions(torch.utils.data.Sampler):
    """Batches of stream items from position `start` on, without end."""

    def __init__(self, order: StreamOrder, start: int, size: int):
        self.order, self.start, self.size = order, start, size

    def __iter__(self) -> Iterator[list]:
        pos = self.start
        while True:
            idx, u = self.order.indices(pos, self.size), self.order.uniforms(pos, self.size)
            yield [(int(i), *map(float, row)) for i, row in zip(idx, u)]
            pos += self.size


class LoaderStream:
    """An image folder streamed through a DataLoader: `workers` processes decode, resize, crop and flip ahead of the
    loop (prefetching a few batches each); only the batches in flight are in memory."""

    def __init__(self, folder, device, *, seed: int, rank: int, world: int, workers: int, random_flip: bool = False):
        self.order = StreamOrder(shard_indices(len(folder), rank, world, folder.name), seed=seed, rank=rank)
        self.items = _FolderItems(folder, random_flip)
        self.device, self.workers = device, workers
        self._it: Iterator | None = None
        self._next: int | None = None
        self._size: int | None = None

    @property
    def shard_size(self) -> int:
        return len(self.order)

    def _open(self, start: int, size: int) -> None:
        self.close()
        loader = torch.utils.data.DataLoader(
            self.items,
            batch_sampler=_Positions(self.order, start, size),
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None,
            persistent_workers=False,
        )
        self._it, self._next, self._size = iter(loader), start, size

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, None]:
        if self._it is None or start != self._next or size != self._size:
            self._open(start, size)
        assert self._it is not None  # opened above
        x = next(self._it)
        self._next = start + size
        return x.to(self.device, non_blocking=True), None

    def close(self) -> None:
        if self._it is not None:
            shutdown = getattr(self._it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._it = None
