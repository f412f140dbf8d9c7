"""DistributedSampler: each rank's share of a data set's indices (torch's semantics)."""
from __future__ import annotations

import math

import numpy as np

from . import group as _group_module


class DistributedSampler:
    """Indices ``rank, rank + num_replicas, ...`` of one epoch's order, the same length on every rank.

    ``shuffle``: the order is a permutation drawn from ``seed + epoch`` (call ``set_epoch`` each
    epoch; every rank draws the same one). Without ``drop_last`` the order is padded with its
    own first indices up to a multiple of ``num_replicas``; with it the tail is dropped.
    (torch's rules exactly; the permutation comes from numpy, so shuffled orders differ from torch's.)
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None:
            num_replicas = _group_module.get_world_size()
        if rank is None:
            rank = _group_module.get_rank()
        if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"num_replicas: expected a positive int, got {num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected an int in [0, {num_replicas}), got {rank!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        size = len(dataset)
        if self.drop_last and size % self.num_replicas:
            self.num_samples = math.ceil((size - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        size = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(size)
        else:
            order = np.arange(size)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > size:
            order = np.concatenate([order, np.resize(order, self.total_size - size)])
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())
