"""Vocab: token strings <-> int ids, with four special tokens at fixed ids.

    0 <pad>   fills batches to a common length (``pad_batch``'s default)
    1 <unk>   stands for any token the vocabulary does not hold
    2 <bos>   begins a sequence (decoder input)
    3 <eos>   ends a sequence (decoder target, LM target)

The specials are ids, not strings: a text that contains "<unk>" maps it like
any other token, never to id 1. A vocabulary built with ``specials=False``
(class labels) has none of them; its ids start at 0 and an unknown token is an
error there, not <unk>.
"""
from __future__ import annotations

import collections
import operator

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")


class Vocab:
    """``Vocab(tokens)``: the specials (unless ``specials=False``) then ``tokens``, in that order."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, tokens=(), *, specials: bool = True):
        if not isinstance(specials, bool):
            raise TypeError(f"specials: expected a bool, got {specials!r}")
        tokens = list(tokens)
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise TypeError(f"tokens[{i}]: expected a str, got {type(token).__name__}")
        offset = len(SPECIAL_TOKENS) if specials else 0
        self._ids = {token: offset + i for i, token in enumerate(tokens)}
        if len(self._ids) != len(tokens):
            duplicates = sorted(t for t, c in collections.Counter(tokens).items() if c > 1)[:5]
            raise ValueError(f"tokens: each token must appear once; repeated: {duplicates}")
        self._tokens = (list(SPECIAL_TOKENS) if specials else []) + tokens
        self.specials = specials

    @classmethod
    def build(cls, token_lists, min_freq: int = 1, max_size: int | None = None, *,
              specials: bool = True) -> "Vocab":
        """The tokens of ``token_lists`` seen at least ``min_freq`` times, most frequent first.

        Ties go in code-point order of the token, so the ids depend on the counts
        alone, not on the order of the corpus (a shuffled corpus gives the same
        vocabulary). ``max_size`` caps ``len(vocab)``, the specials included, so it
        is the size of the embedding table; the rarest tokens are dropped.
        """
        if not isinstance(min_freq, int) or isinstance(min_freq, bool) or min_freq < 1:
            raise ValueError(f"min_freq: expected an int >= 1, got {min_freq!r}")
        floor = len(SPECIAL_TOKENS) if specials else 0
        if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool)
                                     or max_size < floor):
            raise ValueError(f"max_size: expected None or an int >= {floor}, got {max_size!r}")
        counts = collections.Counter()
        for tokens in token_lists:
            counts.update(tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[:max_size - floor]
        return cls(ranked, specials=specials)

    def __len__(self):
        return len(self._tokens)

    def __contains__(self, token):
        return token in self._ids

    @property
    def tokens(self) -> tuple:
        """Every token by id, specials first."""
        return tuple(self._tokens)

    def index(self, token: str) -> int:
        """The id of ``token``: <unk>'s for an unknown one, a KeyError without specials."""
        if token in self._ids:
            return self._ids[token]
        if self.specials:
            return UNK_ID
        raise KeyError(f"token {token!r} is not in this vocabulary (of {len(self)}, no <unk>)")

    def encode(self, tokens, add_bos: bool = False, add_eos: bool = False) -> list:
        if (add_bos or add_eos) and not self.specials:
            raise ValueError("add_bos/add_eos: this vocabulary has no special tokens")
        ids = [BOS_ID] if add_bos else []
        if self.specials:
            get = self._ids.get
            ids.extend(get(token, UNK_ID) for token in tokens)
        else:
            ids.extend(self.index(token) for token in tokens)
        if add_eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids, strip_special: bool = True) -> list:
        """Token strings for ``ids`` (a list or a 1-D int array).

        ``strip_special``: stop at the first <eos> (what a model emits after it is
        not part of the sequence) and leave out <pad> and <bos>. <unk> stays: it
        stands for a real token.
        """
        out = []
        for position, i in enumerate(ids):
            try:
                i = operator.index(i)
            except TypeError:
                raise TypeError(f"ids[{position}]: expected an int, got {type(i).__name__}") from None
            if not 0 <= i < len(self._tokens):
                raise ValueError(f"ids[{position}]: {i} is out of range for a vocabulary of {len(self)}")
            if strip_special and self.specials:
                if i == EOS_ID:
                    break
                if i in (PAD_ID, BOS_ID):
                    continue
            out.append(self._tokens[i])
        return out

    def to_config(self) -> dict:
        start = len(SPECIAL_TOKENS) if self.specials else 0
        return {"tokens": self._tokens[start:], "specials": self.specials}

    @classmethod
    def from_config(cls, config: dict) -> "Vocab":
        return cls(config["tokens"], specials=config["specials"])

    def __repr__(self):
        return f"Vocab({len(self)} tokens, specials={self.specials})"
