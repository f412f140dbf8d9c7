"""TextEncoder: normaliser + tokenizer + vocabulary, text <-> ids in one object that saves as JSON.

    enc = TextEncoder("char", add_eos=True).fit(train_texts)
    ids = enc.encode("3 March 1998")          # list of ints, <eos> last
    enc.decode(ids) == "3 March 1998"         # the normalised text
    unet.save({"source_encoder": enc.to_config(), ...}, path)   # or enc.save("enc.json")

For the char and BPE tokenizers ``decode(encode(s)) == normalizer(s)`` whenever
no token is unknown (byte-level BPE never has unknown tokens); for the word
tokenizer, when the normalised text is spaced the way ``WordTokenizer`` re-joins
it. An unknown token decodes as "<unk>".
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid

from .text import Normalizer, replace_surrogates
from .tokenizers import Tokenizer, get_tokenizer
from .vocab import SPECIAL_TOKENS, Vocab

_FORMAT = 1


def _check_max_length(max_length, reserved: int):
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                   or max_length < max(1, reserved)):
        raise ValueError(f"max_length: expected None or an int >= {max(1, reserved)} "
                         f"(room for <bos>/<eos>), got {max_length!r}")


class TextEncoder:
    """Text -> ids and back.

    ``tokenizer``: a Tokenizer or "char", "word", "bpe". ``normalizer``: applied
    before tokenizing (None: the text as it is, lone surrogates aside).
    ``add_bos``/``add_eos``/``max_length``: the defaults for ``encode``;
    ``max_length`` counts every id, <bos>/<eos> included; with ``truncation``
    (the default) a longer text is cut, else it raises a ValueError; truncation keeps
    them (the end of the text is what goes).
    """

    pad_id, unk_id, bos_id, eos_id = Vocab.pad_id, Vocab.unk_id, Vocab.bos_id, Vocab.eos_id
    special_tokens = SPECIAL_TOKENS

    def __init__(self, tokenizer="char", normalizer: Normalizer | None = Normalizer(), *,
                 add_bos: bool = False, add_eos: bool = False, max_length: int | None = None,
                 truncation: bool = True, vocab: Vocab | None = None):
        self.tokenizer = get_tokenizer(tokenizer)
        if normalizer is not None and not isinstance(normalizer, Normalizer):
            raise TypeError(f"normalizer: expected a Normalizer or None, got {type(normalizer).__name__}")
        if vocab is not None and not (isinstance(vocab, Vocab) and vocab.specials):
            raise TypeError(f"vocab: expected a Vocab with special tokens, got {vocab!r}")
        _check_max_length(max_length, int(add_bos) + int(add_eos))
        self.normalizer = normalizer
        self.vocab = vocab
        self.add_bos, self.add_eos, self.max_length = bool(add_bos), bool(add_eos), max_length
        self.truncation = bool(truncation)

    # ------------------------------------------------------------ fitting

    def fit(self, texts, min_freq: int = 1, max_size: int | None = None) -> "TextEncoder":
        """Train the tokenizer (BPE) on ``texts`` and build the vocabulary from them.

        ``min_freq``/``max_size`` shape a char or word vocabulary (see
        ``Vocab.build``); a BPE vocabulary is the tokenizer's own, sized by its
        ``vocab_size``.
        """
        normalised = [self.normalize(text) for text in texts]
        self.tokenizer.train(normalised)
        fixed = self.tokenizer.vocabulary()
        if fixed is None:
            self.vocab = Vocab.build((self.tokenizer.tokenize(t) for t in normalised), min_freq, max_size)
        elif min_freq != 1 or max_size is not None:
            raise ValueError(f"min_freq/max_size: a {type(self.tokenizer).__name__} has its own vocabulary; "
                             "size it with the tokenizer's arguments")
        else:
            self.vocab = Vocab(fixed)
        return self

    # ------------------------------------------------------------ text <-> ids

    def normalize(self, text: str) -> str:
        if self.normalizer is None:
            if not isinstance(text, str):
                raise TypeError(f"text: expected a str, got {type(text).__name__}")
            return replace_surrogates(text)
        return self.normalizer(text)

    def tokenize(self, text: str) -> list:
        return self.tokenizer.tokenize(self.normalize(text))

    def encode(self, text: str, add_bos: bool | None = None, add_eos: bool | None = None,
               max_length: int | None = None) -> list:
        """Ids for ``text``; each None argument takes the encoder's default."""
        vocab = self._require_vocab()
        add_bos = self.add_bos if add_bos is None else add_bos
        add_eos = self.add_eos if add_eos is None else add_eos
        max_length = self.max_length if max_length is None else max_length
        reserved = int(add_bos) + int(add_eos)
        _check_max_length(max_length, reserved)
        budget = None if max_length is None else max_length - reserved
        # the tokenizer stops after `budget` tokens (one more to see an overflow): a 1 MB line
        # costs the normaliser's linear pass only
        probe = budget if budget is None or self.truncation else budget + 1
        tokens = self.tokenizer.tokenize(self.normalize(text), probe)
        if budget is not None and len(tokens) > budget:
            raise ValueError(f"text: more than max_length={max_length} ids ({budget} tokens and "
                             f"{reserved} of <bos>/<eos>) and truncation=False: {text[:60]!r}...")
        return vocab.encode(tokens, add_bos, add_eos)

    def decode(self, ids, strip_special: bool = True) -> str:
        return self.tokenizer.detokenize(self._require_vocab().decode(ids, strip_special))

    def _require_vocab(self) -> Vocab:
        if self.vocab is None:
            raise RuntimeError("TextEncoder: no vocabulary; call fit(texts) or load a saved encoder")
        return self.vocab

    def __len__(self):
        """The vocabulary size (the embedding table's rows)."""
        return len(self._require_vocab())

    # ------------------------------------------------------------ saving

    def to_config(self) -> dict:
        return {"format": _FORMAT,
                "normalizer": None if self.normalizer is None else self.normalizer.to_config(),
                "tokenizer": self.tokenizer.to_config(),
                "vocab": None if self.vocab is None else self.vocab.to_config(),
                "add_bos": self.add_bos, "add_eos": self.add_eos, "max_length": self.max_length,
                "truncation": self.truncation}

    @classmethod
    def from_config(cls, config: dict) -> "TextEncoder":
        if not isinstance(config, dict) or config.get("format") != _FORMAT:
            raise ValueError(f"config: expected a TextEncoder config of format {_FORMAT}, "
                             f"got {config!r:.200}")
        try:
            return cls(Tokenizer.from_config(config["tokenizer"]),
                       None if config["normalizer"] is None else Normalizer.from_config(config["normalizer"]),
                       add_bos=config["add_bos"], add_eos=config["add_eos"], max_length=config["max_length"],
                       truncation=config.get("truncation", True),
                       vocab=None if config["vocab"] is None else Vocab.from_config(config["vocab"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"config: not a valid TextEncoder config ({e!r})") from e

    def save(self, path) -> None:
        """Write the config as JSON; like checkpoints, through a temporary file renamed into place."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.to_config(), f)  # ASCII escapes: any str survives
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path) -> "TextEncoder":
        with open(os.fspath(path), encoding="utf-8") as f:
            return cls.from_config(json.load(f))

    def __repr__(self):
        return (f"TextEncoder({self.tokenizer!r}, {self.normalizer!r}, vocab={self.vocab!r}, "
                f"add_bos={self.add_bos}, add_eos={self.add_eos}, max_length={self.max_length})")
