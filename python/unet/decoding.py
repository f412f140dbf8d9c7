"""Decoding CTC outputs into label sequences, on numpy.

``log_probs`` is what a CTC model emits: (T, N, C) time-major log-probabilities (a Tensor or
an array; (T, C) for one sequence), with ``input_lengths`` saying how many steps of each
sequence count. Probabilities work too where noted (greedy decoding only needs the argmax).

- ``ctc_greedy_decode``: the best path (argmax at each step), then repeats collapsed and
  blanks dropped. Fast, and what a well-trained model needs.
- ``ctc_prefix_beam_search``: prefix beam search (Hannun et al. 2014, without a language
  model). It keeps the ``beam_width`` most probable label prefixes, each with the
  probability of its alignments ending in a blank and ending in its last label, so a
  labelling's score sums over its alignments: it finds the most probable labelling where the
  best single path does not (e.g. two frames each 0.6 blank / 0.4 "a": the best path is
  blank-blank, but "a" has probability 0.64).
"""
from __future__ import annotations

import numpy as np

from .backend import is_cupy_array
from .tensor import Tensor


def _as_steps(log_probs, input_lengths, blank):
    """log_probs as a host (T, N, C) array, the lengths as N ints, whether it was unbatched."""
    raw = log_probs.data if isinstance(log_probs, Tensor) else log_probs
    if is_cupy_array(raw):
        raw = raw.get()
    array = np.asarray(raw)
    if array.ndim not in (2, 3) or array.dtype.kind != "f":
        raise ValueError(f"log_probs: expected a float array of shape (T, N, C) or (T, C), got "
                         f"{array.dtype} {array.shape}")
    unbatched = array.ndim == 2
    if unbatched:
        array = array[:, None, :]
    steps, batch, classes = array.shape
    if isinstance(blank, (bool, np.bool_)) or not isinstance(blank, (int, np.integer)) \
            or not 0 <= blank < classes:
        raise ValueError(f"blank: expected a class index in [0, C={classes}), got {blank!r}")
    if input_lengths is None:
        lengths = np.full(batch, steps, dtype=np.int64)
    else:
        raw_lengths = input_lengths.data if isinstance(input_lengths, Tensor) else input_lengths
        if is_cupy_array(raw_lengths):
            raw_lengths = raw_lengths.get()
        lengths = np.asarray(raw_lengths).reshape(-1) if unbatched else np.asarray(raw_lengths)
        if lengths.dtype.kind not in "iu" or lengths.shape != (batch,):
            raise ValueError(f"input_lengths: expected {batch} ints, got {lengths.dtype} {lengths.shape}")
        if batch and (lengths.min() < 0 or lengths.max() > steps):
            raise ValueError(f"input_lengths: expected values in [0, T={steps}], got {lengths.tolist()}")
    return array, lengths, unbatched


def ctc_greedy_decode(log_probs, input_lengths=None, blank: int = 0):
    """Best-path decoding: the argmax label at each of a sequence's first ``input_lengths`` steps,
    repeats collapsed, blanks dropped. Returns a list of label lists, one per sequence (one list
    for unbatched (T, C) input). Works on log-probabilities, probabilities or logits alike."""
    array, lengths, unbatched = _as_steps(log_probs, input_lengths, blank)
    best = array.argmax(axis=2)  # (T, N)
    sequences = []
    for n, length in enumerate(lengths):
        path = best[:length, n]
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        sequences.append([int(c) for c in path[keep] if c != blank])
    return sequences[0] if unbatched else sequences


def _prefix_beam_search(log_probs, beam_width, blank):
    """One sequence: log_probs (T, C). Returns (best labels, log-probability)."""
    neg_inf = -np.inf
    # prefix -> [log P(prefix, alignment ends in blank), log P(prefix, ends in its last label)]
    beams = {(): [0.0, neg_inf]}
    labels = np.array([c for c in range(log_probs.shape[1]) if c != blank])
    for frame in log_probs:
        grown = {}

        def add(prefix, which, value):
            entry = grown.setdefault(prefix, [neg_inf, neg_inf])
            entry[which] = np.logaddexp(entry[which], value)

        for prefix, (p_blank, p_label) in beams.items():
            total = np.logaddexp(p_blank, p_label)
            add(prefix, 0, total + frame[blank])  # a blank keeps the prefix
            last = prefix[-1] if prefix else None
            if last is not None:  # the last label repeated without a blank between: same prefix
                add(prefix, 1, p_label + frame[last])
            # a new label; repeating the last one needs a blank in between
            extended = total + frame[labels]
            if last is not None:
                extended[labels == last] = p_blank + frame[last]
            for c, value in zip(labels.tolist(), extended.tolist()):
                if value > neg_inf:
                    add(prefix + (c,), 1, value)
        ranked = sorted(grown.items(), key=lambda kv: np.logaddexp(*kv[1]), reverse=True)
        beams = dict(ranked[:beam_width])
    prefix, (p_blank, p_label) = max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))
    return list(prefix), float(np.logaddexp(p_blank, p_label))


def ctc_prefix_beam_search(log_probs, input_lengths=None, beam_width: int = 8, blank: int = 0):
    """Prefix beam search over log-probabilities (T, N, C) or (T, C).

    Returns ``(sequences, scores)``: per sequence the most probable labelling found (a list of
    labels) and its log-probability, summed over its alignments that stayed in the beam (exact
    when the beam never drops a prefix of it). Unbatched input gives one list and one float.
    """
    if isinstance(beam_width, (bool, np.bool_)) or not isinstance(beam_width, (int, np.integer)) \
            or beam_width < 1:
        raise ValueError(f"beam_width: expected a positive int, got {beam_width!r}")
    array, lengths, unbatched = _as_steps(log_probs, input_lengths, blank)
    array = array.astype(np.float64, copy=False)
    results = [_prefix_beam_search(array[:length, n], int(beam_width), blank)
               for n, length in enumerate(lengths)]
    sequences = [labels for labels, _ in results]
    scores = np.array([score for _, score in results])
    return (sequences[0], float(scores[0])) if unbatched else (sequences, scores)
