"""The data stream: batches as a pure function of their position in the stream.

Position p of the stream is sample `perm_e[p mod N]` of this rank's shard, with e = p // N the epoch and
perm_e a permutation drawn from numpy's generator seeded with (seed, rank, e). Nothing about the order is
state: a run resumed at step s reads from position s * accumulation * batch and sees the same samples as a run
that never stopped.
"""

import numpy as np
import torch


def shard_indices(n: int, rank: int, world: int, name: str) -> np.ndarray:
    idx = np.arange(n)[rank::world]
    if len(idx) == 0:
        raise ValueError(f"data {name!r} has {n} samples: fewer than the {world} ranks")
    return idx


class StreamOrder:
    """Which sample sits at each position of the stream (see the module docstring)."""

    def __init__(self, idx: np.ndarray, *, seed: int, rank: int):
        self.idx, self.seed, self.rank = idx, seed, rank
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.idx)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            rng = np.random.default_rng([self.seed, self.rank, epoch])
            self._perms[epoch] = self.idx[rng.permutation(len(self.idx))]
        return self._perms[epoch]

    def indices(self, start: int, size: int) -> np.ndarray:
        """Dataset indices of positions start .. start + size - 1."""
        n = len(self.idx)
        pos = np.arange(start, start + size)
        epochs = pos // n
        sel = np.empty(size, dtype=np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            sel[m] = self._perm(int(e))[pos[m] % n]
        return sel


class BatchStream:
    """A data set held whole on the device (points, small image sets), read in stream order."""

    def __init__(self, ds, device, *, seed: int, rank: int, world: int):
        self.order = StreamOrder(shard_indices(len(ds.x), rank, world, ds.name), seed=seed, rank=rank)
        self.x = torch.as_tensor(ds.x, device=device)
        self.y = torch.as_tensor(ds.y, device=device) if ds.y is not None else None

    @property
    def shard_size(self) -> int:
        return len(self.order)

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        sel = torch.as_tensor(self.order.indices(start, size), device=self.x.device)
        return self.x[sel], (self.y[sel] if self.y is not None else None)

    def close(self) -> None:
        pass
