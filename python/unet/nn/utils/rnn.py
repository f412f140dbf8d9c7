"""Variable-length batches for the recurrent layers, with torch.nn.utils.rnn's names.

unet's ``PackedSequence`` is simpler than torch's: it keeps the *padded* time-major data
(time, batch, *) and the per-sequence ``lengths`` (an int64 CPU Tensor), in the caller's
batch order. The recurrent kernels skip the padded steps themselves, so nothing is
sorted, packed or unpacked; ``enforce_sorted`` is checked only for torch's behaviour
(unsorted lengths raise ValueError when it is True). Passing ``lengths=`` straight to an
``nn.LSTM``/``GRU``/``RNN`` call does the same without the wrapper.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ... import functional as F
from ...backend import array_module
from ...functional.rnn import check_lengths
from ...tensor import Tensor


class PackedSequence(NamedTuple):
    """``data``: (max(lengths), batch, *) time-major, valid for t < lengths[b];
    ``lengths``: (batch,) int64 CPU Tensor."""

    data: Tensor
    lengths: Tensor

    @property
    def batch_sizes(self) -> Tensor:
        """torch's view of the same thing: how many sequences are still running at each step."""
        lengths = self.lengths.numpy()
        return Tensor._wrap((lengths[None, :] > np.arange(int(lengths.max()))[:, None]).sum(1).astype(np.int64))

    def to(self, *args, **kwargs) -> "PackedSequence":
        return PackedSequence(self.data.to(*args, **kwargs), self.lengths)


def _as_tensor(x, argname):
    if not isinstance(x, Tensor):
        raise TypeError(f"{argname}: expected a Tensor, got {type(x).__name__}")
    return x


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True) -> PackedSequence:
    """Wrap a padded batch (time, batch, *) — (batch, time, *) if batch_first — with its lengths."""
    x = _as_tensor(input, "input")
    if x.ndim < 2:
        raise ValueError(f"input: expected (time, batch, *) or (batch, time, *), got shape {x.shape}")
    if batch_first:
        x = x.transpose(0, 1)
    lengths = check_lengths(lengths, x.shape[0], x.shape[1])
    if enforce_sorted and np.any(np.diff(lengths) > 0):
        raise ValueError(f"lengths: expected lengths sorted in decreasing order when enforce_sorted=True, "
                         f"got {lengths.tolist()}; pass enforce_sorted=False for unsorted lengths")
    longest = int(lengths.max())
    return PackedSequence(x if longest == x.shape[0] else x[:longest], Tensor._wrap(lengths))


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """(padded, lengths): the data with ``padding_value`` past each length, (max(lengths) or
    total_length, batch, *) — (batch, time, *) if batch_first — and the int64 lengths."""
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"sequence: expected a PackedSequence, got {type(sequence).__name__}")
    data, lengths = sequence.data, sequence.lengths
    steps = data.shape[0]
    if total_length is not None:
        if isinstance(total_length, bool) or not isinstance(total_length, (int, np.integer)) \
                or total_length < steps:
            raise ValueError(f"total_length: expected an int >= the longest length {steps}, got {total_length!r}")
    xp = array_module(data.data)
    valid = xp.arange(steps)[:, None] < xp.asarray(lengths.numpy())[None, :]
    padded = data.masked_fill(~valid.reshape(valid.shape + (1,) * (data.ndim - 2)), padding_value)
    if total_length is not None and total_length > steps:
        fill = xp.full((total_length - steps,) + data.shape[1:], padding_value, dtype=data.dtype)
        padded = F.cat([padded, Tensor._wrap(fill)], dim=0)
    return (padded.transpose(0, 1) if batch_first else padded), lengths


def pad_sequence(sequences, batch_first=False, padding_value=0.0) -> Tensor:
    """Stack tensors (L_i, *) into (max L_i, batch, *) — (batch, max L_i, *) if batch_first —
    padding on the right with ``padding_value``."""
    sequences = list(sequences)
    if not sequences:
        raise ValueError("sequences: expected a non-empty list of tensors")
    for i, s in enumerate(sequences):
        _as_tensor(s, f"sequences[{i}]")
        if s.ndim < 1 or s.shape[1:] != sequences[0].shape[1:]:
            raise ValueError(f"sequences[{i}]: expected shape (length, *{sequences[0].shape[1:]}), got {s.shape}")
    longest = max(s.shape[0] for s in sequences)
    xp = array_module(sequences[0].data)
    padded = []
    for s in sequences:
        if s.shape[0] < longest:
            fill = xp.full((longest - s.shape[0],) + s.shape[1:], padding_value, dtype=s.dtype)
            s = F.cat([s, Tensor._wrap(fill)], dim=0)
        padded.append(s)
    return F.stack(padded, dim=0 if batch_first else 1)


def pack_sequence(sequences, enforce_sorted=True) -> PackedSequence:
    """``pack_padded_sequence(pad_sequence(sequences), lengths)``."""
    sequences = list(sequences)
    lengths = [s.shape[0] if isinstance(s, Tensor) and s.ndim else 0 for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


__all__ = ["PackedSequence", "pack_padded_sequence", "pad_packed_sequence", "pad_sequence", "pack_sequence"]
