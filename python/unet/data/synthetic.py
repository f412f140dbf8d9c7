"""Synthetic sequence-to-sequence tasks: real structure, no download, deterministic for a seed.

``dates_task``: a date written one of many ways -> ISO 8601.

    "the 3rd of March 1998", "Tuesday, March 3, 1998", "03.03.1998", "3 mar 98"  ->  "1998-03-03"

``numbers_task``: a number in English words -> its digits.

    "four hundred and twelve", "Four Hundred Twelve"  ->  "412"

Both are meant character-level. Sources are distinct within one call, so a
split of one call's output (e.g. the last 10% held out) tests on inputs never
seen in training; the held-out dates still share formats with the training set,
so what is tested is reading a format, not remembering a string.
"""
from __future__ import annotations

import datetime
import string

import numpy as np

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)
# two-digit years are read in this window ("98" -> 1998, "07" -> 2007), so they are used only there
TWO_DIGIT_YEARS = (1950, 2049)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _fields(date: datetime.date) -> dict:
    return {"d": date.day, "dd": f"{date.day:02d}", "ord": _ordinal(date.day), "m": date.month,
            "mm": f"{date.month:02d}", "Month": MONTHS[date.month - 1], "Mon": MONTHS[date.month - 1][:3],
            "y": date.year, "yy": f"{date.year % 100:02d}", "Weekday": WEEKDAYS[date.weekday()]}


# Numeric forms are day first (as in most of the world), never month first: "03/04/1998" must mean
# one date for the task to be learnable. Named months come in either order.
DATE_FORMATS = (
    "{d} {Month} {y}", "{d} {Mon} {y}", "{ord} {Month} {y}", "the {ord} of {Month} {y}",
    "{Month} {d}, {y}", "{Mon}. {d}, {y}", "{Month} {ord}, {y}", "{Month} {d} {y}",
    "{Weekday}, {d} {Month} {y}", "{Weekday}, {Month} {d}, {y}", "{Weekday} the {ord} of {Month}, {y}",
    "{dd}/{mm}/{y}", "{d}/{m}/{y}", "{dd}.{mm}.{y}", "{dd}-{Mon}-{y}", "{y}/{mm}/{dd}", "{y}{mm}{dd}",
    "{d} {Mon} '{yy}", "{dd}/{mm}/{yy}", "{d}.{m}.{yy}", "{Mon} {d} '{yy}",
)
_SHORT_YEAR = tuple("{yy}" in f for f in DATE_FORMATS)


def _check_n(n):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    return int(n)


def _distinct(n: int, seed, draw) -> list:
    """``n`` pairs from ``draw(rng)`` with distinct sources, in draw order."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    seen, pairs, attempts = set(), [], 0
    while len(pairs) < n:
        attempts += 1
        if attempts > 20 * n + 1000:
            raise ValueError(f"n: could not draw {n} distinct examples; ask for fewer")
        source, target = draw(rng)
        if source not in seen:
            seen.add(source)
            pairs.append((source, target))
    return pairs


def _restyle(rng, text: str, styles) -> str:
    """``text`` through one of ``styles``, (probability, str -> str) pairs."""
    weights, functions = zip(*styles)
    return functions[int(rng.choice(len(functions), p=weights))](text)


_DATE_CASES = ((0.7, str), (0.2, str.lower), (0.1, str.upper))
_NUMBER_CASES = ((0.6, str), (0.2, str.capitalize), (0.1, string.capwords), (0.1, str.upper))


def dates_task(n: int, seed: int = 0) -> list:
    """``n`` (written date, ISO date) pairs, dates uniform over 1900-2099, with distinct sources."""
    n = _check_n(n)
    span = LAST_DAY.toordinal() - FIRST_DAY.toordinal() + 1

    def draw(rng):
        date = datetime.date.fromordinal(FIRST_DAY.toordinal() + int(rng.integers(span)))
        short_ok = TWO_DIGIT_YEARS[0] <= date.year <= TWO_DIGIT_YEARS[1]
        formats = [f for f, short in zip(DATE_FORMATS, _SHORT_YEAR) if short_ok or not short]
        source = formats[int(rng.integers(len(formats)))].format(**_fields(date))
        return _restyle(rng, source, _DATE_CASES), date.isoformat()

    return _distinct(n, seed, draw)


ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ("", " thousand", " million")


def _below_hundred(n: int, hyphen: bool) -> str:
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + (("-" if hyphen else " ") + ONES[ones] if ones else "")


def _below_thousand(n: int, conjunction: bool, hyphen: bool) -> str:
    hundreds, rest = divmod(n, 100)
    words = [ONES[hundreds] + " hundred"] if hundreds else []
    if rest:
        words += ["and"] * (conjunction and bool(hundreds)) + [_below_hundred(rest, hyphen)]
    return " ".join(words)


def number_words(n: int, conjunction: bool = True, hyphen: bool = True) -> str:
    """English words for 0 <= n < 10**9: 1012 -> "one thousand and twelve".

    ``conjunction``: the British "and" after hundreds and before a last group
    under a hundred ("one thousand and twelve"); without it, American usage
    ("one thousand twelve"). ``hyphen``: "forty-two" rather than "forty two".
    """
    if not 0 <= n < 10**9:
        raise ValueError(f"n: expected 0 <= n < 10**9, got {n}")
    if n == 0:
        return ONES[0]
    groups, words = [], []
    while n:
        n, group = divmod(n, 1000)
        groups.append(group)
    for scale in reversed(range(len(groups))):
        group = groups[scale]
        if not group:
            continue
        if scale == 0 and group < 100 and words and conjunction:
            words.append("and")
        words.append(_below_thousand(group, conjunction, hyphen) + SCALES[scale])
    return " ".join(words)


def numbers_task(n: int, seed: int = 0, max_value: int = 999_999) -> list:
    """``n`` (number in words, digits) pairs with distinct sources, 0 <= number <= max_value.

    The number of digits is drawn uniformly first, so "seven" and "six hundred
    thousand and one" are both common; the words vary in "and", hyphens and case.
    """
    n = _check_n(n)
    if (not isinstance(max_value, (int, np.integer)) or isinstance(max_value, bool)
            or not 0 <= max_value < 10**9):
        raise ValueError(f"max_value: expected an int in [0, 10**9), got {max_value!r}")
    digits = len(str(max_value))

    def draw(rng):
        k = int(rng.integers(1, digits + 1))
        low, high = (0 if k == 1 else 10 ** (k - 1)), min(10**k - 1, max_value)
        value = int(rng.integers(low, high + 1))
        words = number_words(value, conjunction=bool(rng.random() < 0.5), hyphen=bool(rng.random() < 0.7))
        return _restyle(rng, words, _NUMBER_CASES), str(value)

    return _distinct(n, seed, draw)
