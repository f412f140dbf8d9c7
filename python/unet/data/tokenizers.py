"""Tokenizers: text -> list of token strings and back, one interface for all.

    tokenize(text, max_tokens=None) -> list[str]   the first max_tokens only, when given
    detokenize(tokens) -> str
    train(lines) -> self                           learns from text (BPE); a no-op otherwise
    vocabulary() -> list[str] | None               a fixed token set (BPE), or None
    to_config() / Tokenizer.from_config(config)    JSON-able, so a tokenizer saves with a model

Ids are not the tokenizer's business: a ``Vocab`` maps tokens to ids, so every
tokenizer shares the same special tokens and the same unknown-token policy.
"""
from __future__ import annotations

import functools
import itertools
import re
import unicodedata

from .text import char_class, codepoints, replace_surrogates


class Tokenizer:
    kind = None  # the "type" written in the config

    def tokenize(self, text: str, max_tokens: int | None = None) -> list:
        raise NotImplementedError

    def detokenize(self, tokens) -> str:
        raise NotImplementedError

    def train(self, lines) -> "Tokenizer":
        return self

    def vocabulary(self):
        return None

    def to_config(self) -> dict:
        return {"type": self.kind}

    @classmethod
    def from_config(cls, config: dict) -> "Tokenizer":
        """Rebuild from ``to_config()``; on the base class it picks the subclass named by ``type``."""
        if not isinstance(config, dict) or config.get("type") not in _KINDS:
            raise ValueError(f"config: expected a dict with 'type' in {sorted(_KINDS)}, got {config!r:.200}")
        found = _KINDS[config["type"]]
        if not issubclass(found, cls):
            raise ValueError(f"config: describes a {found.__name__}, not a {cls.__name__}")
        return found._from_config(config)

    @classmethod
    def _from_config(cls, config: dict) -> "Tokenizer":
        return cls()

    def __repr__(self):
        return f"{type(self).__name__}()"


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    return text


def _check_max_tokens(max_tokens):
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or max_tokens < 0):
        raise ValueError(f"max_tokens: expected a non-negative int or None, got {max_tokens!r}")


class CharTokenizer(Tokenizer):
    """One token per code point, whitespace included: ``detokenize(tokenize(s)) == s`` for every str."""

    kind = "char"

    def tokenize(self, text, max_tokens=None):
        _check_text(text)
        _check_max_tokens(max_tokens)
        return list(text if max_tokens is None else text[:max_tokens])

    def detokenize(self, tokens):
        return "".join(tokens)


# ---------------------------------------------------------------- words

@functools.lru_cache(maxsize=None)
def _word_pattern():
    # A word character is anything but whitespace, punctuation (P*) and symbols (S*):
    # letters, digits and combining marks alike (Python's \w would cut "नमस्ते" at its
    # vowel signs). Inside a word, a hyphen or an apostrophe joins two runs
    # ("well-known", "don't"), and . , : / join two digits ("3.14", "1,000", "03/03/98").
    # Every other non-space character is a token of its own. The joiners are not word
    # characters, so the pattern cannot backtrack: matching is linear in the text.
    word = f"[^\\s{char_class(sorted(codepoints('P') + codepoints('S')))}]+"
    return re.compile(f"{word}(?:(?:[-'\u2019]|(?<=\\d)[.,:/](?=\\d)){word})*|\\S")


# How a one-character token sits against its neighbours when the words are re-joined.
_NO_SPACE_BEFORE = set(".,;:!?%\u2030\u2026")      # and closing brackets, closing quotes
_NO_SPACE_AFTER = set("\u00bf\u00a1#@")             # and opening brackets/quotes, currency signs
_NO_SPACE_EITHER = set("/")
_STRAIGHT_QUOTES = set("\"'")                       # open and close alternately


def _attachment(token: str) -> str:
    if len(token) != 1:
        return "word"
    category = unicodedata.category(token)
    if token in _STRAIGHT_QUOTES:
        return "quote"
    if token in _NO_SPACE_BEFORE or category in ("Pe", "Pf"):
        return "left"
    if token in _NO_SPACE_AFTER or category in ("Ps", "Pi", "Sc"):
        return "right"
    if token in _NO_SPACE_EITHER:
        return "both"
    return "word"


class WordTokenizer(Tokenizer):
    """Words, numbers and contractions whole; each punctuation mark or symbol a token of its own.

    ``detokenize`` joins with single spaces, except none before closing marks
    (. , ! ? ) ...), none after opening ones (( ¿ $ ...), none around "/", and
    straight quotes taken to open and close in turn. So
    ``detokenize(tokenize(s)) == s`` for conventionally spaced text with single
    spaces ("Hello, world! It's (really) 3.14.") — not for every string: the
    tokens do not record spacing ("a , b" comes back as "a, b").
    """

    kind = "word"

    def tokenize(self, text, max_tokens=None):
        _check_text(text)
        _check_max_tokens(max_tokens)
        matches = _word_pattern().finditer(text)  # lazy: max_tokens stops the scan early
        return [m.group() for m in itertools.islice(matches, max_tokens)]

    def detokenize(self, tokens):
        out, glue_next, open_quotes = [], True, set()
        for token in tokens:
            kind = _attachment(token)
            if kind == "quote":
                kind = "left" if token in open_quotes else "right"
                open_quotes ^= {token}
            if not glue_next and kind not in ("left", "both"):
                out.append(" ")
            out.append(token)
            glue_next = kind in ("right", "both")
        return "".join(out)


# ---------------------------------------------------------------- byte-level BPE

class BPETokenizer(Tokenizer):
    """Byte-level BPE trained on your text by the Hugging Face ``tokenizers`` library.

    Byte-level: the text's UTF-8 bytes are the base alphabet (256 symbols), so
    every string tokenizes without an unknown token and
    ``detokenize(tokenize(s)) == s`` exactly; tokens are byte strings in GPT-2's
    printable spelling ("Ġworld" is " world"). ``vocab_size`` counts the 256
    bytes plus the learned merges; pairs seen fewer than ``min_frequency`` times
    are never merged. The trained state is ``tokenizers``' own JSON string, kept
    whole in ``to_config()``.
    """

    kind = "bpe"

    def __init__(self, vocab_size: int = 1000, min_frequency: int = 2):
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 256:
            raise ValueError(f"vocab_size: expected an int >= 256 (the byte alphabet), got {vocab_size!r}")
        if not isinstance(min_frequency, int) or isinstance(min_frequency, bool) or min_frequency < 0:
            raise ValueError(f"min_frequency: expected a non-negative int, got {min_frequency!r}")
        self.vocab_size = vocab_size
        self.min_frequency = min_frequency
        self._tokenizer = None

    @property
    def trained(self) -> bool:
        return self._tokenizer is not None

    def train(self, lines):
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tokenizer.train_from_iterator((replace_surrogates(_check_text(line)) for line in lines), trainer)
        self._tokenizer = tokenizer
        return self

    def _require_trained(self):
        if self._tokenizer is None:
            raise RuntimeError("BPETokenizer: not trained; call train(lines) or load a trained config")
        return self._tokenizer

    def tokenize(self, text, max_tokens=None):
        tokenizer = self._require_trained()
        text = replace_surrogates(_check_text(text))
        _check_max_tokens(max_tokens)
        if max_tokens is None:
            return tokenizer.encode(text).tokens
        # Encoding a 1 MB line takes seconds, so encode growing prefixes. Pre-tokens
        # (the byte-level regex's pieces) that end before the cut are the same as in
        # the whole text, and BPE works within one pre-token, so every token except
        # those of the last, possibly cut, pre-token is final.
        size = 8 * max_tokens + 64
        while size < len(text):
            encoding = tokenizer.encode(text[:size])
            last = encoding.word_ids[-1]
            final = [t for t, w in zip(encoding.tokens, encoding.word_ids) if w != last]
            if len(final) >= max_tokens:
                return final[:max_tokens]
            size *= 2
        return tokenizer.encode(text).tokens[:max_tokens]

    def detokenize(self, tokens):
        return self._require_trained().decoder.decode(list(tokens))

    def vocabulary(self):
        vocab = self._require_trained().get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    def to_config(self):
        return {"type": self.kind, "vocab_size": self.vocab_size, "min_frequency": self.min_frequency,
                "state": self._tokenizer.to_str() if self._tokenizer is not None else None}

    @classmethod
    def _from_config(cls, config):
        from tokenizers import Tokenizer as HFTokenizer

        tokenizer = cls(config["vocab_size"], config["min_frequency"])
        if config.get("state") is not None:
            tokenizer._tokenizer = HFTokenizer.from_str(config["state"])
        return tokenizer

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size}, trained={self.trained})"


_KINDS = {t.kind: t for t in (CharTokenizer, WordTokenizer, BPETokenizer)}


def get_tokenizer(spec) -> Tokenizer:
    """A Tokenizer from an instance or a name: "char", "word", "bpe"."""
    if isinstance(spec, Tokenizer):
        return spec
    if spec not in _KINDS:
        raise ValueError(f"tokenizer: expected a Tokenizer or one of {sorted(_KINDS)}, got {spec!r}")
    return _KINDS[spec]()
