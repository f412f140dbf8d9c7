"""Text normalisation: Unicode form, case, punctuation and whitespace, applied in that order.

NFKC first, so compatibility characters become the plain ones the later steps
know ("ﬁ" -> "fi", full-width "１２" -> "12", no-break space -> space); then
lowercasing; then punctuation (every Unicode category P*: ASCII marks, curly
quotes, dashes, CJK full stops); last, whitespace collapsing, so the gaps the
punctuation step leaves become single spaces.

Punctuation removal turns each mark into a space ("well-known" -> "well
known", "end.Next" -> "end Next") except apostrophes, which are deleted so a
contraction stays one word ("don't" -> "dont"). Symbols (categories S*: $ + ©
emoji) are not punctuation and stay.

Lone surrogates (U+D800..U+DFFF) are not text: a file read with
``errors="surrogateescape"`` or a bad JSON escape can produce them, and they
cannot be written as UTF-8 (nor handed to the Rust tokenizers), so every
normaliser replaces them with U+FFFD first.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import sys
import unicodedata

FORMS = ("NFC", "NFD", "NFKC", "NFKD")
APOSTROPHES = "'\u2019"  # ASCII and right single quotation mark (the usual typographic apostrophe)
_SURROGATES = re.compile("[\ud800-\udfff]")


def replace_surrogates(text: str) -> str:
    return _SURROGATES.sub("\ufffd", text)


def codepoints(major: str) -> tuple:
    """Every code point whose general category starts with ``major`` ("P": punctuation, "S": symbols)."""
    return _punctuation_and_symbols()[major]


@functools.lru_cache(maxsize=None)
def _punctuation_and_symbols() -> dict:
    # one pass over all of Unicode (~0.3 s), on first use rather than at import
    found = {"P": [], "S": []}
    for cp in range(sys.maxunicode + 1):
        major = unicodedata.category(chr(cp))[0]
        if major in found:
            found[major].append(cp)
    return {major: tuple(cps) for major, cps in found.items()}


def char_class(cps) -> str:
    """The inside of a regex character class matching exactly ``cps`` (sorted), as ranges."""
    parts, start, prev = [], None, None
    for cp in cps:
        if start is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            parts.append(_range(start, prev))
        start = prev = cp
    if start is not None:
        parts.append(_range(start, prev))
    return "".join(parts)


def _range(a: int, b: int) -> str:
    return f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}"


@functools.lru_cache(maxsize=None)
def _punctuation_table() -> dict:
    # str.translate runs in C: a 1 MB line costs milliseconds, not a Python loop per character
    table = {cp: " " for cp in codepoints("P")}
    table.update({ord(a): None for a in APOSTROPHES})
    return table


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """A text -> text function: ``Normalizer(lowercase=True)("Ｈｅｌｌｏ,  World") == "hello, world"``.

    ``form``: a Unicode normal form ("NFKC" by default) or None to keep the
    text's own; ``collapse_whitespace``: runs of Unicode whitespace (tabs,
    newlines, no-break spaces, ...) become one space and the ends are stripped.
    """

    form: str | None = "NFKC"
    lowercase: bool = False
    strip_punctuation: bool = False
    collapse_whitespace: bool = True

    def __post_init__(self):
        if self.form is not None and self.form not in FORMS:
            raise ValueError(f"form: expected one of {FORMS} or None, got {self.form!r}")
        for name in ("lowercase", "strip_punctuation", "collapse_whitespace"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        text = replace_surrogates(text)
        if self.form is not None:
            text = unicodedata.normalize(self.form, text)
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            text = text.translate(_punctuation_table())
        if self.collapse_whitespace:
            text = " ".join(text.split())
        return text

    def to_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> "Normalizer":
        return cls(**config)


def preprocess(text: str, lowercase: bool = False, strip_punctuation: bool = False,
               form: str | None = "NFKC", collapse_whitespace: bool = True) -> str:
    """``Normalizer(...)(text)`` in one call."""
    return Normalizer(form, lowercase, strip_punctuation, collapse_whitespace)(text)
