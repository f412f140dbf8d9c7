"""unet.data: normalisation, tokenizers, vocabularies, data sets, batching, synthetic tasks."""
import datetime
import json
import random
import re

import numpy as np
import pytest

import unet
from unet.data import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, BPETokenizer, CharTokenizer, DataLoader,
                       LabeledDataset, Normalizer, PairDataset, TextEncoder, TextLineDataset, Tokenizer,
                       Vocab, WordTokenizer, batch_indices, dates_task, number_words, numbers_task,
                       pad_batch, preprocess, sequence_mask)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a well-known fact (really): 3.14 is close to pi; \"quotes\" work... 50% of $5 and/or €3?",
    "Ünïcödé text, 日本語のテキスト, नमस्ते दुनिया, and emoji 🙂 too!",
    "Don't panic: the answer is 42, not 41.",
] * 5


def random_text(rng, n=200):
    """Any code points at all: controls, combining marks, surrogates, unassigned, astral."""
    pools = [(0, 0x80), (0x80, 0x800), (0xD800, 0xE000), (0x300, 0x370), (0x10000, 0x110000),
             (0x2000, 0x2070)]
    out = []
    for _ in range(n):
        lo, hi = pools[rng.integers(len(pools))]
        out.append(chr(int(rng.integers(lo, hi))))
    return "".join(out)


# ---------------------------------------------------------------- normalisation

def test_nfkc_compatibility_characters():
    assert preprocess("ﬁne ﬂour") == "fine flour"
    assert preprocess("１２３ＡＢＣ") == "123ABC"
    assert preprocess("a\u00a0b\u3000c") == "a b c"  # no-break and ideographic spaces
    assert preprocess("e\u0301") == "\u00e9"  # composed
    assert preprocess("ﬁ", form=None) == "ﬁ"


def test_punctuation_removal_is_unicode_aware():
    text = "“Hello” — ‘world’… «ok» ¿qué? 1998–2000 don’t well-known 你好。世界！"
    assert preprocess(text, strip_punctuation=True) == "Hello world ok qué 1998 2000 dont well known 你好 世界"
    assert preprocess("$5 + 3 = 8 © 🙂", strip_punctuation=True) == "$5 + 3 = 8 © 🙂"  # symbols stay
    assert preprocess(text) == preprocess(text, strip_punctuation=False)
    assert "—" in preprocess(text)


def test_lowercase_and_whitespace():
    assert preprocess("ÀB  Ç", lowercase=True) == "àb ç"
    assert preprocess("ÀB  Ç") == "ÀB Ç"
    assert preprocess("  a \t\n b\r\nc  ") == "a b c"
    assert preprocess(" a  b ", collapse_whitespace=False) == " a  b "
    assert Normalizer(lowercase=True, strip_punctuation=True)("Ｈｅｌｌｏ, World!") == "hello world"


def test_normalizer_config_and_bad_input():
    norm = Normalizer(form="NFC", lowercase=True)
    assert Normalizer.from_config(json.loads(json.dumps(norm.to_config()))) == norm
    with pytest.raises(ValueError, match="form"):
        Normalizer(form="NFX")
    with pytest.raises(TypeError, match="text"):
        preprocess(b"bytes")
    assert preprocess("a\ud800b") == "a\ufffdb"  # a lone surrogate is not text


# ---------------------------------------------------------------- tokenizers

def test_char_tokenizer_round_trips_any_string():
    tok, rng = CharTokenizer(), np.random.default_rng(0)
    for _ in range(20):
        text = random_text(rng)
        assert tok.detokenize(tok.tokenize(text)) == text
    assert tok.tokenize("abc", max_tokens=2) == ["a", "b"]


def test_word_tokenizer_tokens():
    tok = WordTokenizer()
    assert tok.tokenize("Don't stop, it's well-known: 3.14 and 1,000 on 03/03/98!") == [
        "Don't", "stop", ",", "it's", "well-known", ":", "3.14", "and", "1,000", "on", "03/03/98", "!"]
    assert tok.tokenize("नमस्ते e\u0301") == ["नमस्ते", "e\u0301"]  # combining marks stay in the word
    assert tok.tokenize("a—b 🙂🙂") == ["a", "—", "b", "🙂", "🙂"]
    assert tok.tokenize("one two three", max_tokens=2) == ["one", "two"]


@pytest.mark.parametrize("text", [
    "Hello, world! It's (really) fine.",
    "He said \"yes\" and left; 50% of $5 is 2.5... right?",
    "Prices: €3 or ¿qué? [see p. 4] and/or {x}.",
    "the 3rd of march 1998",
])
def test_word_tokenizer_round_trip(text):
    tok = WordTokenizer()
    assert tok.detokenize(tok.tokenize(text)) == text


def test_word_tokenizer_round_trips_punctuation_free_text():
    tok, rng = WordTokenizer(), np.random.default_rng(1)
    for _ in range(20):
        text = preprocess(random_text(rng), strip_punctuation=True)
        text = " ".join(t for t in text.split() if not re.search(r"[^\w\s]", t))  # words only, no symbols
        assert tok.detokenize(tok.tokenize(text)) == text


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer(vocab_size=300).train(CORPUS)


def test_bpe_round_trip_and_merges(bpe):
    for line in CORPUS[:4] + ["unseen wörds 🚀 \t\n  spacing", ""]:
        assert bpe.detokenize(bpe.tokenize(line)) == line
    assert len(bpe.tokenize(CORPUS[0])) < len(CORPUS[0].encode())  # it learned merges
    assert len(bpe.vocabulary()) == 300
    assert bpe.tokenize("a\ud800b")  # a lone surrogate does not reach the Rust side


def test_bpe_config_round_trip_and_determinism(bpe):
    config = json.loads(json.dumps(bpe.to_config()))
    again = Tokenizer.from_config(config)
    assert isinstance(again, BPETokenizer)
    for line in CORPUS[:4]:
        assert again.tokenize(line) == bpe.tokenize(line)
    assert BPETokenizer(vocab_size=300).train(CORPUS).to_config() == bpe.to_config()


def test_bpe_max_tokens_is_a_prefix(bpe):
    rng = random.Random(0)
    words = ["the", "fox", "  ", "42", "!!", "日本語", "\n", "über", "a" * 50]
    text = "".join(rng.choice(words) + rng.choice(["", " "]) for _ in range(400))
    full = bpe.tokenize(text)
    for k in (0, 1, 7, 50, 333, len(full), len(full) + 5):
        assert bpe.tokenize(text, max_tokens=k) == full[:k]


def test_bpe_bad_use():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer(vocab_size=100)
    with pytest.raises(RuntimeError, match="not trained"):
        BPETokenizer().tokenize("x")
    with pytest.raises(ValueError, match="type"):
        Tokenizer.from_config({"type": "sentencepiece"})
    with pytest.raises(ValueError, match="not a CharTokenizer"):
        CharTokenizer.from_config({"type": "word"})


# ---------------------------------------------------------------- vocab

def test_vocab_specials_and_order():
    vocab = Vocab.build([["b", "a", "c", "a"], ["c", "d", "a"]])
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert vocab.tokens == ("<pad>", "<unk>", "<bos>", "<eos>", "a", "c", "b", "d")  # count, then code point
    assert len(vocab) == 8
    shuffled = Vocab.build([["d", "a", "c"], ["a", "c", "b", "a"]])
    assert shuffled.tokens == vocab.tokens  # corpus order does not matter


def test_vocab_min_freq_and_max_size():
    lists = [["x"] * 5 + ["y"] * 3 + ["z"]]
    assert Vocab.build(lists, min_freq=2).tokens[4:] == ("x", "y")
    assert Vocab.build(lists, max_size=5).tokens[4:] == ("x",)
    assert len(Vocab.build(lists, max_size=4)) == 4
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build(lists, max_size=3)
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build(lists, min_freq=0)


def test_vocab_encode_decode():
    vocab = Vocab(["a", "b", "<unk>"])
    assert vocab.encode(["a", "zzz", "b"], add_bos=True, add_eos=True) == [BOS_ID, 4, UNK_ID, 5, EOS_ID]
    assert vocab.encode(["<unk>"]) == [6]  # a special's spelling in text is an ordinary token
    assert vocab.decode([BOS_ID, 4, UNK_ID, 5, EOS_ID, 4, PAD_ID]) == ["a", "<unk>", "b"]
    assert vocab.decode(np.array([0, 4, 3, 5]), strip_special=False) == ["<pad>", "a", "<eos>", "b"]
    with pytest.raises(ValueError, match=r"ids\[1\]"):
        vocab.decode([4, 99])
    assert Vocab.from_config(json.loads(json.dumps(vocab.to_config()))).tokens == vocab.tokens
    with pytest.raises(ValueError, match="repeated"):
        Vocab(["a", "a"])


def test_label_vocab_without_specials():
    labels = Vocab(["neg", "pos"], specials=False)
    assert labels.encode(["pos", "neg"]) == [1, 0]
    assert labels.decode([1, 0]) == ["pos", "neg"]
    with pytest.raises(KeyError, match="neu"):
        labels.index("neu")


# ---------------------------------------------------------------- TextEncoder

def test_char_encoder_round_trip_on_normalised_text():
    enc = TextEncoder("char", Normalizer(lowercase=True)).fit(CORPUS)
    for line in CORPUS:
        assert enc.decode(enc.encode(line)) == enc.normalize(line)
    ids = enc.encode("fox ☃")
    assert ids[-1] == UNK_ID and enc.decode(ids) == "fox <unk>"


def test_word_encoder_round_trip_and_unknown_words():
    enc = TextEncoder("word").fit(CORPUS)
    for line in CORPUS:
        assert enc.decode(enc.encode(line)) == enc.normalize(line)
    assert enc.encode("the zebra")[1] == UNK_ID


def test_encoder_bos_eos_and_truncation():
    enc = TextEncoder("char", add_bos=True, add_eos=True).fit(["abcdef"])
    ids = enc.encode("abcdef")
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and len(ids) == 8
    short = enc.encode("abcdef", max_length=4)
    assert short == [BOS_ID] + ids[1:3] + [EOS_ID]
    assert enc.encode("abcdef", add_bos=False, add_eos=False, max_length=2) == ids[1:3]
    with pytest.raises(ValueError, match="max_length"):
        enc.encode("abc", max_length=1)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_encoder_save_load(tmp_path, kind):
    tokenizer = BPETokenizer(vocab_size=280) if kind == "bpe" else kind
    enc = TextEncoder(tokenizer, Normalizer(lowercase=True), add_eos=True).fit(CORPUS)
    enc.save(tmp_path / "enc.json")
    unet.save({"encoder": enc.to_config(), "w": np.zeros(2)}, tmp_path / "model.safetensors")
    for loaded in (TextEncoder.load(tmp_path / "enc.json"),
                   TextEncoder.from_config(unet.load(tmp_path / "model.safetensors")["encoder"])):
        assert len(loaded) == len(enc)
        for line in CORPUS[:4] + ["never seen ☃"]:
            assert loaded.encode(line) == enc.encode(line)
    if kind == "bpe":  # byte-level: no unknown tokens, exact round trip
        line = "never seen ☃ \U0001F680"
        assert enc.decode(enc.encode(line)) == enc.normalize(line)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_encoder_never_crashes_on_a_str(kind):
    tokenizer = BPETokenizer(vocab_size=260) if kind == "bpe" else kind
    enc = TextEncoder(tokenizer).fit(CORPUS[:4])
    rng = np.random.default_rng(2)
    for _ in range(10):
        ids = enc.encode(random_text(rng), max_length=64)
        assert len(ids) <= 64 and all(0 <= i < len(enc) for i in ids)
        enc.decode(ids)
    assert enc.encode("") == []
    with pytest.raises(TypeError, match="text"):
        enc.encode(None)
    with pytest.raises(RuntimeError, match="fit"):
        TextEncoder().encode("x")


# ---------------------------------------------------------------- files and data sets

def test_invalid_utf8_bom_crlf_and_empty_lines(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\r\n\r\nbad \xff\xfe byte\n   \nlast")
    with pytest.warns(UnicodeWarning, match="2 invalid UTF-8"):
        assert TextLineDataset(path).texts == ["first", "bad \ufffd\ufffd byte", "last"]
    with pytest.warns(UnicodeWarning):
        kept = TextLineDataset(path, skip_empty=False).texts
    assert kept == ["first", "", "bad \ufffd\ufffd byte", "   ", "last"]
    assert TextLineDataset.from_lines(["a", "", "b"]).texts == ["a", "b"]


def test_one_megabyte_line(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("short line\n" + "word, " * 175_000 + "\n", encoding="utf-8")
    data = TextLineDataset(path)
    assert len(data.texts[1]) > 1_000_000
    for tokenizer in ("char", "word", BPETokenizer(vocab_size=260)):
        enc = TextEncoder(tokenizer, add_eos=True).fit(data.texts[:1] + ["word, word"])
        encoded = data.encode(enc, max_length=128)
        assert encoded.lengths.tolist() == [len(enc.encode("short line")), 128]
        assert encoded[1]["text"][-1] == EOS_ID


def test_pair_dataset_from_tsv_and_errors(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("3 march 1998\t1998-03-03\n\nMarch 4, 1998\t1998-03-04\n", encoding="utf-8")
    data = PairDataset(path)
    assert data.sources == ["3 march 1998", "March 4, 1998"] and data.targets[1] == "1998-03-04"
    assert data[1] == {"index": 1, "source": "March 4, 1998", "target": "1998-03-04"}
    path.write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"pairs\.tsv, line 2: expected 2 tab-separated fields"):
        PairDataset(path)
    path.write_text("a\tb\nx\ty\tz\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2.*got 3"):
        PairDataset(path)
    with pytest.raises(ValueError, match=r"pairs\[1\]"):
        PairDataset.from_pairs([("a", "b"), ("c",)])


def test_labeled_dataset(tmp_path):
    path = tmp_path / "labels.tsv"
    path.write_text("good film\tpos\nbad film\tneg\nmeh\t neu \n", encoding="utf-8")
    data = LabeledDataset(path)
    assert data.labels == ["pos", "neg", "neu"]
    assert data.label_vocab().tokens == ("neg", "neu", "pos")
    enc = TextEncoder("word").fit(data.texts)
    encoded = data.encode(enc)
    assert encoded.column("label") == [2, 0, 1]
    path.write_text("fine\tpos\nno label\t  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: empty label"):
        LabeledDataset(path)
    numeric = LabeledDataset.from_pairs([("a", 10), ("b", 2), ("c", "0"), ("d", 1)])
    assert numeric.label_vocab().tokens == ("0", "1", "2", "10")
    test_set = LabeledDataset.from_pairs([("x", "other")])
    with pytest.raises(KeyError, match="other"):
        test_set.encode(enc, labels=data.label_vocab())


# ---------------------------------------------------------------- batching

def test_pad_batch_and_mask():
    ids, lengths = pad_batch([[5, 6, 7], [], np.array([8])], pad_id=0)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    assert ids.tolist() == [[5, 6, 7], [0, 0, 0], [8, 0, 0]] and lengths.tolist() == [3, 0, 1]
    assert sequence_mask(lengths).tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    assert sequence_mask(lengths, max_length=4).shape == (3, 4)
    assert pad_batch([[], []])[0].shape == (2, 0)
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pad_batch([[1], [1.5]])
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([])


def padding(batches, lengths):
    return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)


def test_bucketing_cuts_padding_and_covers_each_example_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=5000)
    bucketed = batch_indices(lengths, 32, np.random.default_rng(1), bucket=True, chunk=20)
    plain = batch_indices(lengths, 32, np.random.default_rng(1), bucket=False)
    assert padding(bucketed, lengths) < 0.1 * padding(plain, lengths)
    for batches in (bucketed, plain):
        assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(5000))
    assert sorted(map(len, bucketed))[1] == 32  # only one short batch
    dropped = batch_indices(lengths, 32, np.random.default_rng(1), drop_last=True)
    assert len(dropped) == 5000 // 32 and all(len(b) == 32 for b in dropped)


@pytest.fixture(scope="module")
def encoded_pairs():
    pairs = PairDataset.from_pairs(dates_task(500, seed=3))
    source = TextEncoder("char").fit(pairs.sources)
    target = TextEncoder("char", add_bos=True, add_eos=True).fit(pairs.targets)
    return pairs.encode(source, target)


def order(loader, n=None):
    out = []
    for batch in loader:
        out.append(batch["index"].tolist())
        if len(out) == n:  # stop without drawing the next batch
            break
    return out


def test_dataloader_batches(encoded_pairs):
    loader = DataLoader(encoded_pairs, batch_size=64, seed=0)
    assert len(loader) == 8
    batches = list(loader)
    assert sorted(len(b["index"]) for b in batches) == [52] + [64] * 7
    for batch in batches:
        size = len(batch["index"])
        assert set(batch) == {"index", "source", "source_lengths", "target", "target_lengths"}
        assert batch["source"].dtype == np.int64 and batch["source_lengths"].dtype == np.int64
        assert batch["source"].shape == (size, batch["source_lengths"].max())
        assert (batch["target"][:, 0] == BOS_ID).all()
        assert batch["target"][np.arange(size), batch["target_lengths"] - 1].tolist() == [EOS_ID] * size


def test_dataloader_seeding(encoded_pairs):
    first, same = DataLoader(encoded_pairs, 50, seed=7), DataLoader(encoded_pairs, 50, seed=7)
    epoch0, epoch1 = order(first), order(first)
    assert epoch0 == order(same) and epoch1 == order(same)
    assert epoch0 != epoch1 and sorted(sum(epoch0, [])) == sorted(sum(epoch1, [])) == list(range(500))
    assert order(DataLoader(encoded_pairs, 50, seed=8)) != epoch0
    unet.manual_seed(3)
    a = DataLoader(encoded_pairs, 50).seed
    unet.manual_seed(3)
    assert DataLoader(encoded_pairs, 50).seed == a
    assert order(DataLoader(encoded_pairs, 50, shuffle=False, bucket=False))[0] == list(range(50))


def test_dataloader_resumes_mid_epoch(encoded_pairs, tmp_path):
    loader = DataLoader(encoded_pairs, 40, seed=11)
    order(loader)  # a whole epoch first: the resume lands in epoch 1
    done = order(loader, n=5)
    unet.save({"loader": loader.state_dict()}, tmp_path / "ckpt.safetensors")
    rest = order(loader)
    resumed = DataLoader(encoded_pairs, 40, seed=99)
    resumed.load_state_dict(unet.load(tmp_path / "ckpt.safetensors")["loader"])
    assert order(resumed) == rest
    assert sorted(sum(done + rest, [])) == list(range(500))
    assert order(resumed) == order(loader)  # and the epoch after matches too
    with pytest.raises(ValueError, match="num_examples"):
        DataLoader(encoded_pairs, 40).load_state_dict({**loader.state_dict(), "num_examples": 3})


def test_dataloader_bad_arguments(encoded_pairs):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(encoded_pairs, 0)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(encoded_pairs, 4, seed=-1)
    with pytest.raises(ValueError, match="bucket"):
        DataLoader(list(range(10)), 4)


# ---------------------------------------------------------------- synthetic tasks

def shape(text):
    return re.sub(r"[a-z]+", "a", re.sub(r"\d+", "0", text.lower()))


def test_dates_task():
    pairs = dates_task(2000, seed=0)
    assert pairs == dates_task(2000, seed=0) and pairs != dates_task(2000, seed=1)
    assert len({s for s, _ in pairs}) == 2000  # distinct sources: any split holds out unseen inputs
    assert len({shape(s) for s, _ in pairs}) >= 15  # many surface forms
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)
        if source.isdigit():
            assert source == target.replace("-", "")
            continue
        assert re.search(rf"(?<!\d)0?{date.day}(?!\d)|{date.day}(st|nd|rd|th)", source, re.I), source
        assert f"{date.year % 100:02d}" in source


def words_to_number(text):
    units = {w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split())}
    tens = "twenty thirty forty fifty sixty seventy eighty ninety".split()
    units.update({w: 10 * i for i, w in enumerate(tens, 2)})
    total = group = 0
    for word in text.lower().replace("-", " ").split():
        if word in units:
            group += units[word]
        elif word == "hundred":
            group *= 100
        elif word in ("thousand", "million"):
            total += group * (1000 if word == "thousand" else 1_000_000)
            group = 0
    return total + group


def test_numbers_task():
    assert number_words(412) == "four hundred and twelve"
    assert number_words(412, conjunction=False) == "four hundred twelve"
    assert number_words(1012) == "one thousand and twelve"
    assert number_words(42, hyphen=False) == "forty two" and number_words(0) == "zero"
    assert number_words(100_000) == "one hundred thousand"
    pairs = numbers_task(1000, seed=0)
    assert pairs == numbers_task(1000, seed=0) and len({s for s, _ in pairs}) == 1000
    assert all(words_to_number(s) == int(t) for s, t in pairs)
    assert len({len(t) for _, t in pairs}) == 6  # one to six digits
    assert any(" and " in s for s, _ in pairs) and any(s.isupper() for s, _ in pairs)
    with pytest.raises(ValueError, match="could not draw"):
        numbers_task(50, max_value=9)
