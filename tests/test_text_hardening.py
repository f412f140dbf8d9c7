"""Hostile text: hypothesis-made bytes and strings never crash the tokenizers or the data sets.

The policy under test (README, "Guarantees"): invalid UTF-8 becomes U+FFFD and is
counted in a warning; lone surrogates become U+FFFD; empty and whitespace-only
lines are dropped; over-long texts are cut to max_length, or refused with
truncation=False; unknown tokens become <unk>; every id is in range; for valid text
decode(encode(x)) gives back the normalised x; a batch whose targets are all
ignored has loss 0.
"""
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unet
from unet import functional as F
from unet.data import (UNK_ID, BPETokenizer, LabeledDataset, Normalizer, PairDataset, TextEncoder,
                       TextLineDataset)

# every code point, lone surrogates included (hypothesis leaves them out by default)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
VALID_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
SPECIALS = ["\x00", "\ufeff", "\r\n", "e\u0301", "\U0001F642\u200d\U0001F642", "\u05e9\u05dc\u05d5\u05dd",
            "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "", "   \t", "\u2028", "\U0010FFFF"]
HOSTILE_TEXT = st.lists(st.one_of(ANY_TEXT, st.sampled_from(SPECIALS)), max_size=6).map("".join)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ENCODERS = {}


def encoder(kind: str) -> TextEncoder:
    """One fitted encoder per tokenizer kind, shared by the examples (fitting BPE is the slow part)."""
    if kind not in ENCODERS:
        tokenizer = BPETokenizer(vocab_size=300) if kind == "bpe" else kind
        ENCODERS[kind] = TextEncoder(tokenizer).fit(["The quick brown fox, 42 times!", "ünïcödé 日本 🙂"])
    return ENCODERS[kind]


@FAST
@given(text=HOSTILE_TEXT, kind=st.sampled_from(["char", "word", "bpe"]),
       max_length=st.one_of(st.none(), st.integers(1, 20)))
def test_any_string_encodes_to_ids_in_range(text, kind, max_length):
    enc = encoder(kind)
    ids = enc.encode(text, max_length=max_length)
    assert all(isinstance(i, int) and 0 <= i < len(enc) for i in ids)
    assert max_length is None or len(ids) <= max_length
    decoded = enc.decode(ids)
    assert isinstance(decoded, str) and not re.search("[\ud800-\udfff]", decoded)
    decoded.encode("utf-8")  # always writable


@FAST
@given(text=VALID_TEXT)
def test_decode_of_encode_is_the_normalised_text(text):
    enc = TextEncoder("char").fit([text])  # every character known: nothing becomes <unk>
    assert enc.decode(enc.encode(text)) == enc.normalize(text)


@FAST
@given(text=VALID_TEXT)
def test_word_decoding_keeps_the_words(text):
    # words are lossless, the spacing around punctuation is the detokenizer's guess ("a : b" -> "a: b")
    enc = TextEncoder("word").fit([text])
    decoded = enc.decode(enc.encode(text))
    assert enc.tokenize(decoded) == enc.tokenize(text)


@FAST
@given(text=VALID_TEXT)
def test_bpe_round_trips_valid_text(text):
    enc = encoder("bpe")
    assert enc.decode(enc.encode(text)) == enc.normalize(text)


def test_unknown_tokens_become_unk():
    enc = TextEncoder("word").fit(["known words only"])
    assert enc.encode("known strangers") == [enc.vocab.index("known"), UNK_ID]


def test_over_long_text_is_cut_or_refused():
    enc = TextEncoder("char", add_eos=True).fit(["abcdef"])
    assert len(enc.encode("abcdef" * 10, max_length=5)) == 5
    strict = TextEncoder("char", add_eos=True, max_length=5, truncation=False, vocab=enc.vocab)
    assert len(strict.encode("abcd")) == 5
    with pytest.raises(ValueError, match="max_length=5.*truncation=False"):
        strict.encode("abcde")
    again = TextEncoder.from_config(strict.to_config())
    assert again.truncation is False


@FAST
@given(data=st.binary(max_size=3000))
def test_any_bytes_load_as_a_line_file(tmp_path, data):
    path = tmp_path / "lines.txt"
    path.write_bytes(data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts = TextLineDataset(path).texts
    assert all(t.strip() for t in texts)  # empty and whitespace-only lines dropped
    for t in texts:
        t.encode("utf-8")  # no lone surrogates, no undecodable leftovers
    replaced = [w for w in caught if issubclass(w.category, UnicodeWarning)]
    try:
        data.decode("utf-8")
        assert not replaced
    except UnicodeDecodeError:
        assert len(replaced) == 1 and str(path) in str(replaced[0].message)
    ids = [encoder("char").encode(t, max_length=50) for t in texts]
    assert all(0 <= i < len(encoder("char")) for row in ids for i in row)


@FAST
@given(data=st.binary(max_size=2000), kind=st.sampled_from([PairDataset, LabeledDataset]))
def test_any_bytes_load_as_tsv_or_name_the_line(tmp_path, data, kind):
    path = tmp_path / "data.tsv"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnicodeWarning)
        try:
            dataset = kind(path)
        except ValueError as e:
            assert re.search(re.escape(str(path)) + r", line \d+", str(e)), e
            return
    assert all("\t" not in t for column in dataset.columns for t in dataset.column(column))


def test_invalid_bytes_are_counted(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbad \xff here\n\xc3 and \xe2\x82 two more\nstill \xef\xbf\xbd real\n")
    with pytest.warns(UnicodeWarning, match=r"3 invalid UTF-8 byte sequence\(s\).*line 2"):
        texts = TextLineDataset(path).texts
    assert texts[1] == "bad \ufffd here" and texts[3] == "still \ufffd real"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_all_ignored_targets_give_loss_zero_not_nan(smoothing):
    logits = unet.randn(4, 7, 5, requires_grad=True)  # (N, C, T): a padded sequence batch
    targets = unet.tensor(np.full((4, 5), -100))
    loss = F.cross_entropy(logits, targets, label_smoothing=smoothing)
    assert loss.item() == 0.0
    loss.backward()
    assert not np.any(logits.grad.numpy())
    nll = F.nll_loss(F.log_softmax(logits, dim=1), targets, weight=unet.ones(7))
    assert nll.item() == 0.0


def test_normalizer_handles_every_special():
    norm = Normalizer()
    for special in SPECIALS + ["\ud800"]:
        out = norm(f"a{special}b")
        out.encode("utf-8")
