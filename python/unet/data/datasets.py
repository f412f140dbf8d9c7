"""Data sets: examples as named columns, read from text files or built from Python lists.

    TextLineDataset  one example a line (language models)           column "text"
    PairDataset      source<TAB>target (translation, summarising)   "source", "target"
    LabeledDataset   text<TAB>label (classification)                "text", "label"

Files are read as UTF-8 (a leading BOM dropped; lines end at LF, a CR before it
is dropped); bytes that are not UTF-8 become U+FFFD, so a damaged file still
loads, and a warning says how many sequences were replaced and on which line
the first was. A line holding only whitespace is
skipped by default (``skip_empty=True``); with ``skip_empty=False`` it is an
example with empty text in a TextLineDataset and a malformed line in a TSV. A
TSV line without exactly one tab raises a ValueError naming the file and the
line number (fields cannot contain tabs): dropping it silently would shrink the
data unnoticed.

``encode(...)`` turns the text columns into int64 id arrays and labels into
ints, once, up front; the result is a ``Dataset`` with the same column names,
ready for the DataLoader.
"""
from __future__ import annotations

import codecs
import operator
import os
import re
import warnings

import numpy as np

from .vocab import Vocab


class Dataset:
    """Equal-length columns; ``ds[i]`` is ``{"index": i, column: value, ...}``.

    ``sequences`` names the columns holding text or ids (not labels): their
    lengths are the example's length for bucketing and padding.
    """

    def __init__(self, columns: dict, sequences=()):
        if not columns or "index" in columns:
            raise ValueError(f"columns: expected named columns other than 'index', got {list(columns)}")
        sizes = {name: len(column) for name, column in columns.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"columns: all columns need the same length, got {sizes}")
        if not set(sequences) <= set(columns):
            raise ValueError(f"sequences: {list(sequences)} are not all among the columns {list(columns)}")
        self._columns = {name: list(column) for name, column in columns.items()}
        self.sequences = tuple(sequences)
        self._lengths = None

    @classmethod
    def _of(cls, columns: dict):
        """An instance of a file-reading subclass built from columns in memory (its __init__ reads a file)."""
        dataset = cls.__new__(cls)
        Dataset.__init__(dataset, columns, cls.SEQUENCES)
        return dataset

    def __len__(self):
        return len(next(iter(self._columns.values())))

    def __getitem__(self, i) -> dict:
        i, n = operator.index(i), len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} examples")
        i %= n
        item = {"index": i}
        item.update((name, column[i]) for name, column in self._columns.items())
        return item

    @property
    def columns(self) -> tuple:
        return tuple(self._columns)

    def column(self, name: str) -> list:
        if name not in self._columns:
            raise KeyError(f"no column {name!r}; the columns are {list(self._columns)}")
        return self._columns[name]

    @property
    def lengths(self) -> np.ndarray:
        """int64 [N]: each example's summed sequence lengths (characters, or ids once encoded)."""
        if self._lengths is None:
            lengths = np.zeros(len(self), np.int64)
            for name in self.sequences:
                lengths += np.fromiter(map(len, self._columns[name]), np.int64, len(self))
            lengths.flags.writeable = False
            self._lengths = lengths
        return self._lengths

    def __repr__(self):
        return f"{type(self).__name__}({len(self)} examples, columns={list(self._columns)})"


# ---------------------------------------------------------------- reading files

def read_lines(path):
    """(line number, line without its ending) for each line of a UTF-8 text file."""
    path = os.fspath(path)
    replaced, first_line = 0, None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            raw = raw.rstrip(b"\n").removesuffix(b"\r")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                # each maximal invalid sequence became one U+FFFD; count those the bytes did not hold
                replaced += line.count("\ufffd") - raw.count("\ufffd".encode())
                first_line = first_line or number
            yield number, line
    if replaced:
        warnings.warn(f"{path}: {replaced} invalid UTF-8 byte sequence(s) replaced by U+FFFD "
                      f"(the first on line {first_line})", UnicodeWarning, stacklevel=2)


def _read_tsv(path, skip_empty: bool, layout: str):
    rows = []
    for number, line in read_lines(path):
        if skip_empty and not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{os.fspath(path)}, line {number}: expected 2 tab-separated fields "
                             f"({layout}), got {len(fields)}: {line[:80]!r}")
        rows.append((number, fields[0], fields[1]))
    return rows


def _encode_column(texts, encoder, max_length):
    return [np.asarray(encoder.encode(text, max_length=max_length), dtype=np.int64) for text in texts]


def _check_strings(values, what: str):
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{what}[{i}]: expected a str, got {type(value).__name__}")


def _kept(lines, skip_empty: bool) -> list:
    return [line for line in lines if not (skip_empty and not line.strip())]


def _pairs(pairs, what: str):
    pairs = list(pairs)
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{what}[{i}]: expected a pair, got {pair!r:.80}")
    return pairs


# ---------------------------------------------------------------- the three kinds

class TextLineDataset(Dataset):
    """One example per line of ``path`` (column "text")."""

    SEQUENCES = ("text",)

    def __init__(self, path, *, skip_empty: bool = True):
        super().__init__({"text": _kept((line for _, line in read_lines(path)), skip_empty)}, self.SEQUENCES)

    @classmethod
    def from_lines(cls, lines, *, skip_empty: bool = True) -> "TextLineDataset":
        lines = list(lines)
        _check_strings(lines, "lines")
        return cls._of({"text": _kept(lines, skip_empty)})

    @property
    def texts(self) -> list:
        return self.column("text")

    def encode(self, encoder, max_length: int | None = None) -> Dataset:
        """Ids for every line through ``encoder`` (a fitted TextEncoder; None: its own max_length)."""
        return Dataset({"text": _encode_column(self.texts, encoder, max_length)}, self.SEQUENCES)


class PairDataset(Dataset):
    """source<TAB>target lines of ``path`` (columns "source", "target")."""

    SEQUENCES = ("source", "target")

    def __init__(self, path, *, skip_empty: bool = True):
        rows = _read_tsv(path, skip_empty, "source<TAB>target")
        super().__init__({"source": [r[1] for r in rows], "target": [r[2] for r in rows]}, self.SEQUENCES)

    @classmethod
    def from_pairs(cls, pairs) -> "PairDataset":
        pairs = _pairs(pairs, "pairs")
        sources, targets = [p[0] for p in pairs], [p[1] for p in pairs]
        _check_strings(sources, "sources")
        _check_strings(targets, "targets")
        return cls._of({"source": sources, "target": targets})

    @property
    def sources(self) -> list:
        return self.column("source")

    @property
    def targets(self) -> list:
        return self.column("target")

    def encode(self, source_encoder, target_encoder=None, max_length: int | None = None) -> Dataset:
        """Ids for both sides; ``target_encoder`` defaults to ``source_encoder`` (a shared vocabulary)."""
        target_encoder = source_encoder if target_encoder is None else target_encoder
        return Dataset({"source": _encode_column(self.sources, source_encoder, max_length),
                        "target": _encode_column(self.targets, target_encoder, max_length)}, self.SEQUENCES)


_INTEGER = re.compile(r"-?[0-9]+")


class LabeledDataset(Dataset):
    """text<TAB>label lines of ``path`` (columns "text", "label"); labels are stripped strings.

    ``label_vocab()`` numbers the labels in sorted order — numerically when every
    label is an integer, so labels "0".."9", "10" keep their values as ids.
    """

    SEQUENCES = ("text",)

    def __init__(self, path, *, skip_empty: bool = True):
        rows = _read_tsv(path, skip_empty, "text<TAB>label")
        for number, _, label in rows:
            if not label.strip():
                raise ValueError(f"{os.fspath(path)}, line {number}: empty label")
        labels = [r[2].strip() for r in rows]
        super().__init__({"text": [r[1] for r in rows], "label": labels}, self.SEQUENCES)

    @classmethod
    def from_pairs(cls, pairs) -> "LabeledDataset":
        """From (text, label) pairs; int labels become their decimal strings, as if read from a file."""
        pairs = _pairs(pairs, "pairs")
        texts = [p[0] for p in pairs]
        _check_strings(texts, "texts")
        labels = []
        for i, (_, label) in enumerate(pairs):
            if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
                label = str(int(label))
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"labels[{i}]: expected a non-empty str or an int, got {label!r}")
            labels.append(label.strip())
        return cls._of({"text": texts, "label": labels})

    @property
    def texts(self) -> list:
        return self.column("text")

    @property
    def labels(self) -> list:
        return self.column("label")

    def label_vocab(self) -> Vocab:
        names = set(self.labels)
        numeric = all(_INTEGER.fullmatch(name) for name in names)
        key = (lambda name: (int(name), name)) if numeric else None  # "1" and "01" both: a fixed order
        return Vocab(sorted(names, key=key), specials=False)

    def encode(self, encoder, labels: Vocab | None = None, max_length: int | None = None) -> Dataset:
        """Text ids through ``encoder``, labels through ``labels`` (default: this set's ``label_vocab()``;
        pass the training set's for a test set). A label it lacks raises a KeyError."""
        labels = self.label_vocab() if labels is None else labels
        return Dataset({"text": _encode_column(self.texts, encoder, max_length),
                        "label": [labels.index(label) for label in self.labels]}, self.SEQUENCES)
