"""Batching: padding, masks, length bucketing and a resumable, seeded DataLoader.

Batches are dicts of numpy arrays; the model layer makes Tensors of them. The
default ``collate`` pads each id column to ``[B, T]`` int64 with <pad> (id 0)
and adds its lengths as ``<column>_lengths`` int64 ``[B]``; label columns
become int64 ``[B]``; ``index`` holds the examples' positions in the data set
(bucketing reorders them, so predictions can be put back in order); text left
unencoded stays a list of str.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .vocab import PAD_ID


def _positive_int(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def pad_batch(sequences, pad_id: int = PAD_ID):
    """(ids int64 [B, T], lengths int64 [B]): ``sequences`` left-aligned, padded to the longest.

    Empty sequences are allowed (length 0); T is 0 when all are empty.
    """
    if not isinstance(pad_id, (int, np.integer)) or isinstance(pad_id, bool):
        raise TypeError(f"pad_id: expected an int, got {pad_id!r}")
    arrays = []
    for i, seq in enumerate(sequences):
        array = np.asarray(seq)
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise ValueError(f"sequences[{i}]: expected a 1-D sequence of ints, got shape {array.shape} "
                             f"dtype {array.dtype}")
        arrays.append(array)
    if not arrays:
        raise ValueError("sequences: expected at least one sequence, got none")
    lengths = np.fromiter(map(len, arrays), np.int64, len(arrays))
    ids = np.full((len(arrays), int(lengths.max())), pad_id, dtype=np.int64)
    # one scatter for the whole batch: the row-major mask visits the cells in the concatenation's order
    ids[sequence_mask(lengths)] = np.concatenate(arrays).astype(np.int64, copy=False)
    return ids, lengths


def sequence_mask(lengths, max_length: int | None = None) -> np.ndarray:
    """bool [B, T]: True where a position holds a token, False on padding (T = max_length or the longest)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError(f"lengths: expected a 1-D array of non-negative ints, got {lengths!r:.80}")
    width = int(lengths.max(initial=0)) if max_length is None else max_length
    return np.arange(width) < lengths[:, None]


def batch_indices(lengths, batch_size: int, rng=None, bucket: bool = True, chunk: int = 100,
                  drop_last: bool = False) -> list:
    """One epoch's batches as arrays of example indices; each example in exactly one batch.

    ``rng`` (a numpy Generator) shuffles; None keeps the data order. ``bucket``:
    shuffle, cut into chunks of ``chunk * batch_size`` examples, sort each chunk
    by length and cut it into batches, then shuffle the batches — similar lengths
    share a batch (little padding) while the chunks keep batches random.
    ``drop_last`` drops a final batch smaller than ``batch_size``.
    """
    batch_size, chunk = _positive_int(batch_size, "batch_size"), _positive_int(chunk, "chunk")
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    if bucket:
        span = chunk * batch_size
        order = np.concatenate([part[np.argsort(lengths[part], kind="stable")]
                                for part in np.split(order, range(span, len(order), span))])
    batches = np.split(order, range(batch_size, len(order), batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if rng is not None and bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(items: list) -> dict:
    """The default batch maker: see the module docstring."""
    batch = {}
    for name in items[0]:
        values = [item[name] for item in items]
        if isinstance(values[0], np.ndarray):
            batch[name], batch[f"{name}_lengths"] = pad_batch(values)
        elif isinstance(values[0], (int, np.integer)):
            batch[name] = np.asarray(values, dtype=np.int64)
        else:
            batch[name] = values
    return batch


class DataLoader:
    """Batches of ``dataset``, epoch after epoch, reproducible from ``seed`` and resumable.

    The order of epoch ``e`` is a function of ``(seed, e)`` alone (a numpy
    Generator seeded with both), so ``state_dict()`` — seed, epoch and the next
    batch's position — is all a checkpoint needs to resume at the same batch.
    ``seed=None`` draws one from unet's random state (``unet.manual_seed`` fixes
    it). ``bucket=True`` groups similar lengths (``batch_indices``); it needs
    the data set's ``lengths``. Iterating continues the current epoch where it
    stopped, or starts the next one when the current one is done.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, seed: int | None = None,
                 bucket: bool = True, collate=collate, drop_last: bool = False, bucket_chunk: int = 100):
        self.dataset = dataset
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.bucket_chunk = _positive_int(bucket_chunk, "bucket_chunk")
        self.shuffle, self.bucket, self.drop_last = bool(shuffle), bool(bucket), bool(drop_last)
        self.collate = collate
        if bucket and getattr(dataset, "lengths", None) is None:
            raise ValueError(f"bucket: needs a dataset with per-example `lengths`; {type(dataset).__name__} "
                             "has none (pass bucket=False)")
        if seed is None:
            seed = int(backend.random_state.generator(backend.Device("cpu")).integers(2**63))
        elif not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed: expected None or a non-negative int, got {seed!r}")
        self.seed = int(seed)
        n = len(dataset)
        self._num_batches = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self._num_batches == 0:
            raise ValueError(f"dataset: {n} examples make no batch of batch_size {self.batch_size}"
                             f"{' with drop_last' if self.drop_last else ''}")
        self.epoch, self.position = 0, 0
        self._cached = (None, None)  # (epoch, its batches)

    def __len__(self):
        """Batches per epoch."""
        return self._num_batches

    def epoch_batches(self, epoch: int) -> list:
        """Epoch ``epoch``'s batches as arrays of example indices."""
        if self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
            lengths = self.dataset.lengths if self.bucket else np.zeros(len(self.dataset), np.int64)
            self._cached = (epoch, batch_indices(lengths, self.batch_size, rng, self.bucket,
                                                 self.bucket_chunk, self.drop_last))
        return self._cached[1]

    def __iter__(self):
        if self.position >= self._num_batches:
            self.epoch, self.position = self.epoch + 1, 0
        batches = self.epoch_batches(self.epoch)
        while self.position < len(batches):
            indices = batches[self.position]
            # counted before the yield: a state saved after training on this batch resumes at the next
            self.position += 1
            yield self.collate([self.dataset[int(i)] for i in indices])
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "batch_size": self.batch_size, "num_examples": len(self.dataset)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``; a data set or batch size other than the saved one is an error."""
        expected = {"batch_size": self.batch_size, "num_examples": len(self.dataset)}
        found = {key: state.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"state: saved for {found}, but this loader has {expected}")
        for key in ("seed", "epoch", "position"):
            value = state.get(key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"state[{key!r}]: expected a non-negative int, got {value!r}")
        if state["position"] > self._num_batches:
            raise ValueError(f"state['position']: {state['position']} is past the epoch's "
                             f"{self._num_batches} batches")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._cached = (None, None)
