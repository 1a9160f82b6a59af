"""Endless, resumable, rank-sharded order of data items for the training DataLoader (a torch `Sampler`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableDataOrder(Sampler[int]):
    """Epoch-seeded shuffles of `n` items laid end to end; rank r reads its slice of each global batch.

    Global sample position p = step·global_batch + rank·per_rank + i, epoch = p // n, and the item is
    permutation(seed + epoch)[p % n]. The order therefore depends only on (seed, step), not on the
    number of processes, and a run resumed at step k continues exactly where step k left off instead
    of repeating the first batches (docs/reference.md §4.4 restores no data position; we do).
    """

    def __init__(
        self, n: int, global_batch: int, rank: int, world_size: int, seed: int, start_step: int = 0
    ):
        if n <= 0:
            raise ValueError(f"dataset is empty (n={n})")
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} not divisible by {world_size} processes")
        self.n, self.global_batch, self.rank = n, global_batch, rank
        self.per_rank = global_batch // world_size
        self.seed, self.start_step = seed, start_step

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        epoch, perm = -1, None
        step = self.start_step
        while True:
            base = step * self.global_batch + self.rank * self.per_rank
            for pos in range(base, base + self.per_rank):
                e, off = divmod(pos, self.n)
                if e != epoch:  # positions only grow, so each epoch's permutation is built once
                    epoch, perm = e, self._perm(e)
                yield int(perm[off])
            step += 1
