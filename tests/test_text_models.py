"""The ready NLP models (unet.models: Seq2Seq, TextClassifier, LanguageModel, SequenceTagger).

Each learns a tiny synthetic task; padding invariance checks lengths and masks end to end;
decoding, sampling, attention, config round trips and argument checks have their own tests.
"""
import json

import numpy as np
import pytest

import unet
from unet import optim
from unet.data import (BOS_ID, EOS_ID, PAD_ID, DataLoader, LabeledDataset, PairDataset, TextEncoder,
                       TextLineDataset, pad_batch)
from unet.models import (TASK_MODELS, LanguageModel, Seq2Seq, SequenceTagger, TaskModel, TextClassifier)
from unet.models.base import add_bos_eos

VOCAB = 14  # ids 4..13 are "letters"
SPECIALS = {PAD_ID, BOS_ID, EOS_ID}


def _pairs(seed, n, min_len=1, max_len=6, fn=lambda x: x[::-1]):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(4, VOCAB, rng.integers(min_len, max_len + 1)) for _ in range(n)]
    source, source_lengths = pad_batch(seqs)
    target, target_lengths = pad_batch([fn(s) for s in seqs])
    return {"source": source, "source_lengths": source_lengths, "target": target,
            "target_lengths": target_lengths, "index": np.arange(n)}


def _train(model, batches, steps, lr=0.01):
    opt = optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = model.loss(batches[step % len(batches)])
        assert loss.requires_grad and loss.shape == ()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _rows(batch, b, keys):
    """Example b of a padded batch, alone and without padding."""
    out = {}
    for key in keys:
        n = int(batch[f"{key}_lengths"][b])
        out[key], out[f"{key}_lengths"] = batch[key][b:b + 1, :n], batch[f"{key}_lengths"][b:b + 1]
    return out


# ---------------------------------------------------------------- Seq2Seq

@pytest.fixture(scope="module")
def reverser():
    """A Seq2Seq trained to reverse short sequences (Luong 'general', BiLSTM)."""
    unet.manual_seed(0)
    model = Seq2Seq(VOCAB, embedding_dim=32, hidden_size=64, attention="general", dropout=0.0)
    batches = [_pairs(seed, 64) for seed in range(4)]
    losses = _train(model, batches, 160)
    return model, batches, losses


def test_seq2seq_learns_to_reverse(reverser):
    model, batches, losses = reverser
    assert np.mean(losses[-8:]) < 0.1 * np.mean(losses[:4])
    sums = [model.evaluate_batch(b) for b in batches]
    assert set(sums[0]) == {"loss_sum", "tokens", "correct", "examples", "exact"}
    exact = sum(s["exact"] for s in sums) / sum(s["examples"] for s in sums)
    assert exact > 0.9
    assert sum(s["correct"] for s in sums) / sum(s["tokens"] for s in sums) > 0.95
    assert model.training  # evaluate_batch restores the mode


def test_seq2seq_beam_search_on_trained_model(reverser):
    model, batches, _ = reverser
    batch = batches[0]
    wanted = [list(t[:n]) for t, n in zip(batch["target"], batch["target_lengths"])]
    beams = model.generate(batch["source"], batch["source_lengths"], beam_size=4)
    assert np.mean([b == w for b, w in zip(beams, wanted)]) > 0.9
    # a list of id sequences works too, and beam 1 is greedy
    sources = [list(s[:n]) for s, n in zip(batch["source"][:5], batch["source_lengths"][:5])]
    assert model.generate(sources) == model.beam_search(sources, beam_size=1)


@pytest.mark.parametrize("attention,cell", [("dot", "lstm"), ("additive", "lstm"), ("none", "gru"),
                                            ("general", "gru"), ("additive", "gru")])
def test_seq2seq_variants_learn(attention, cell):
    unet.manual_seed(1)
    model = Seq2Seq(VOCAB, embedding_dim=16, hidden_size=32, attention=attention, cell=cell,
                    bidirectional=attention != "none", dropout=0.1, num_layers=2 if cell == "gru" else 1)
    losses = _train(model, [_pairs(seed, 32, max_len=4, fn=lambda x: x) for seed in range(2)], 40, lr=0.02)
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:2])


@pytest.mark.parametrize("attention", ["general", "dot", "additive", "none"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_seq2seq_padding_invariance_and_fused_equals_stepping(attention, cell):
    unet.manual_seed(2)
    model = Seq2Seq(VOCAB, embedding_dim=8, hidden_size=16, attention=attention, cell=cell, num_layers=2,
                    dropout=0.3, dtype="float64").eval()
    batch = _pairs(3, 5, min_len=1, max_len=7)
    with unet.no_grad():
        logits, weights = model(batch["source"], batch["source_lengths"], batch["target"], batch["target_lengths"])
        for b in range(5):
            alone = _rows(batch, b, ("source", "target"))
            one, _ = model(alone["source"], alone["source_lengths"], alone["target"], alone["target_lengths"])
            n = int(batch["target_lengths"][b]) + 1  # + <eos>
            np.testing.assert_allclose(logits.numpy()[b, :n], one.numpy()[0], rtol=0, atol=1e-10)
        # the decoder stepped one token at a time (inference) gives the teacher-forced logits
        inputs, _, _ = add_bos_eos(batch["target"], batch["target_lengths"])
        memory, state = model.encode(batch["source"], batch["source_lengths"])
        embedded = model.target_embedding(unet.tensor(inputs))
        steps = []
        for t in range(inputs.shape[1]):
            step, state, _ = model._step(embedded[:, t:t + 1], state, memory)
            steps.append(step.numpy())
        np.testing.assert_allclose(np.stack(steps, 1), logits.numpy(), rtol=0, atol=1e-10)
    total = model.evaluate_batch(batch)
    parts = [model.evaluate_batch(_rows(batch, b, ("source", "target"))) for b in range(5)]
    for key in ("tokens", "correct", "examples", "exact"):
        assert total[key] == sum(p[key] for p in parts)
    assert total["loss_sum"] == pytest.approx(sum(p["loss_sum"] for p in parts), rel=1e-10)


@pytest.mark.parametrize("attention", ["general", "dot", "additive"])
def test_attention_weights_sum_to_one_on_valid_positions(attention):
    unet.manual_seed(3)
    model = Seq2Seq(VOCAB, embedding_dim=8, hidden_size=16, attention=attention).eval()
    batch = _pairs(4, 6, max_len=8)
    with unet.no_grad():
        _, weights = model(batch["source"], batch["source_lengths"], batch["target"], batch["target_lengths"])
    w = weights.numpy()
    assert w.shape == (6, batch["target"].shape[1] + 1, batch["source"].shape[1])
    valid = np.arange(w.shape[2]) < batch["source_lengths"][:, None]
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert (w.transpose(0, 2, 1)[~valid] == 0).all()
    assert (w.transpose(0, 2, 1)[valid] > 0).all()


@pytest.mark.parametrize("attention,cell", [("general", "lstm"), ("dot", "gru"), ("additive", "lstm"),
                                            ("none", "lstm")])
def test_beam_width_one_equals_greedy(attention, cell):
    unet.manual_seed(4)
    model = Seq2Seq(VOCAB, embedding_dim=8, hidden_size=16, attention=attention, cell=cell)
    batch = _pairs(5, 12, max_len=8)
    greedy = model.greedy_decode(batch["source"], batch["source_lengths"], max_length=10)
    beam = model.beam_search(batch["source"], batch["source_lengths"], max_length=10, beam_size=1)
    assert greedy == beam
    assert model.generate(batch["source"], batch["source_lengths"], max_length=10) == greedy


@pytest.mark.parametrize("beam_size,vocab", [(3, VOCAB), (4, 5)])  # vocab 5: fewer tokens than 2 * beams
def test_beam_search_returns_proper_sequences(reverser, beam_size, vocab):
    unet.manual_seed(5)
    model = reverser[0] if vocab == VOCAB else Seq2Seq(vocab, embedding_dim=8, hidden_size=16)
    batch = _pairs(6, 10, max_len=6) if vocab == VOCAB else {
        "source": np.array([[4, 4], [4, 0]]), "source_lengths": np.array([2, 1])}
    for max_length in (1, 3, 12):
        out = model.beam_search(batch["source"], batch["source_lengths"], max_length=max_length,
                                beam_size=beam_size, length_penalty=0.7)
        assert len(out) == len(batch["source"])
        for ids in out:
            assert len(ids) <= max_length
            assert not SPECIALS & set(ids) and all(isinstance(i, int) and 0 <= i < vocab for i in ids)


def test_seq2seq_options_share_and_tie():
    unet.manual_seed(6)
    model = Seq2Seq(VOCAB, embedding_dim=16, hidden_size=32, tie_embeddings=True, share_embeddings=True)
    assert model.output.weight is model.target_embedding.weight is model.source_embedding.weight
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(id(p) for p in model.parameters()))  # the tied matrix once
    losses = _train(model, [_pairs(7, 32, max_len=4, fn=lambda x: x)], 30, lr=0.02)
    assert losses[-1] < 0.5 * losses[0]
    separate = Seq2Seq(VOCAB, target_vocab_size=7, embedding_dim=8, hidden_size=16, bidirectional=False)
    batch = _pairs(8, 4, max_len=3, fn=lambda x: x % 3 + 4)
    assert separate(batch["source"], batch["source_lengths"], batch["target"])[0].shape[-1] == 7
    with pytest.raises(ValueError, match="target"):
        separate.loss(_pairs(8, 4))  # target ids beyond the target vocabulary


def test_add_bos_eos_keeps_existing_markers_once():
    ids, lengths = pad_batch([[BOS_ID, 5, 6, EOS_ID], [5], [], [BOS_ID], [7, EOS_ID]])
    inputs, targets, n = add_bos_eos(ids, lengths)
    assert n.tolist() == [3, 2, 1, 1, 2]
    assert inputs.tolist() == [[BOS_ID, 5, 6], [BOS_ID, 5, PAD_ID], [BOS_ID, PAD_ID, PAD_ID],
                               [BOS_ID, PAD_ID, PAD_ID], [BOS_ID, 7, PAD_ID]]
    assert targets.tolist() == [[5, 6, EOS_ID], [5, EOS_ID, PAD_ID], [EOS_ID, PAD_ID, PAD_ID],
                                [EOS_ID, PAD_ID, PAD_ID], [7, EOS_ID, PAD_ID]]


def test_seq2seq_empty_source_and_target():
    unet.manual_seed(9)
    model = Seq2Seq(VOCAB, embedding_dim=8, hidden_size=16)
    source, source_lengths = pad_batch([[], [5, 6]])
    target, target_lengths = pad_batch([[7], []])
    batch = {"source": source, "source_lengths": source_lengths, "target": target, "target_lengths": target_lengths}
    assert np.isfinite(model.loss(batch).item())
    assert model.evaluate_batch(batch)["tokens"] == 3
    assert len(model.generate(source, source_lengths, max_length=4, beam_size=2)) == 2


# ---------------------------------------------------------------- TextClassifier

def _sentiment(seed, n=64):
    """Filler words 6..13 and one keyword: 4 ("good") -> label 1, 5 ("bad") -> label 0."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        words = list(rng.integers(6, VOCAB, rng.integers(0, 7)))
        label = int(rng.integers(2))
        words.insert(int(rng.integers(len(words) + 1)), 4 if label else 5)
        texts.append(words)
        labels.append(label)
    text, lengths = pad_batch(texts)
    return {"text": text, "text_lengths": lengths, "label": np.array(labels), "index": np.arange(n)}


@pytest.mark.parametrize("pooling,cell", [("max", "lstm"), ("last", "gru"), ("mean", "lstm")])
def test_classifier_learns_keyword_sentiment(pooling, cell):
    unet.manual_seed(10)
    model = TextClassifier(VOCAB, 2, embedding_dim=16, hidden_size=32, pooling=pooling, cell=cell)
    batches = [_sentiment(seed) for seed in range(3)]
    losses = _train(model, batches, 50, lr=0.02)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    test = _sentiment(99, 128)
    sums = model.evaluate_batch(test)
    assert set(sums) == {"loss_sum", "examples", "correct"} and sums["examples"] == 128
    assert sums["correct"] / 128 > 0.9
    predicted = model.predict(test["text"], test["text_lengths"])
    assert predicted.dtype == np.int64 and (predicted == test["label"]).mean() == sums["correct"] / 128
    proba = model.predict_proba(test["text"], test["text_lengths"])
    assert proba.shape == (128, 2)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), predicted)


@pytest.mark.parametrize("pooling", ["max", "last", "mean"])
def test_classifier_padding_invariance(pooling):
    unet.manual_seed(11)
    model = TextClassifier(VOCAB, 3, embedding_dim=8, hidden_size=8, num_layers=2, pooling=pooling,
                           dtype="float64", dropout=0.5)
    batch = _sentiment(12, 6)
    batch["text"][0, batch["text_lengths"][0]:] = 0  # (already padding)
    batch["text_lengths"][0] = 0  # an empty text too
    batch["text"][0] = 0
    full = model.predict_proba(batch["text"], batch["text_lengths"])
    for b in range(6):
        n = int(batch["text_lengths"][b])
        alone = model.predict_proba(batch["text"][b:b + 1, :n], batch["text_lengths"][b:b + 1])
        np.testing.assert_allclose(full[b], alone[0], rtol=0, atol=1e-12)
    # the padding's content does not matter either
    noisy = batch["text"].copy()
    noisy[np.arange(noisy.shape[1]) >= batch["text_lengths"][:, None]] = 9
    np.testing.assert_allclose(model.predict_proba(noisy, batch["text_lengths"]), full, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- LanguageModel

def _lines(seed, n=32):
    """Repetitive text: cyclic runs 4 5 6 7 8 4 5 ... starting anywhere, of random lengths."""
    rng = np.random.default_rng(seed)
    texts = [[4 + (start + i) % 5 for i in range(length)]
             for start, length in zip(rng.integers(0, 5, n), rng.integers(1, 10, n))]
    text, lengths = pad_batch(texts)
    return {"text": text, "text_lengths": lengths, "index": np.arange(n)}


@pytest.fixture(scope="module")
def lm():
    unet.manual_seed(12)
    model = LanguageModel(10, embedding_dim=8, hidden_size=32, tie_embeddings=True, dropout=0.0)
    losses = _train(model, [_lines(seed) for seed in range(3)], 80, lr=0.02)
    return model, losses


def test_language_model_learns_repetitive_text(lm):
    model, losses = lm
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    sums = model.evaluate_batch(_lines(50))
    assert set(sums) == {"loss_sum", "tokens", "correct", "examples"}
    assert sums["correct"] / sums["tokens"] > 0.7  # the first token and the ends are guesses
    enc = TextEncoder("char").fit(["abcde"])  # ids 4..8, like the training data
    loader = DataLoader(TextLineDataset.from_lines(["abcdeab", "cde"]).encode(enc), batch_size=2, seed=0)
    assert 1.0 < model.perplexity(loader) < 3.0


def test_language_model_sampling(lm):
    model, _ = lm
    a = model.sample([4, 5], max_length=30, temperature=1.5, seed=7)
    assert a == model.sample([4, 5], max_length=30, temperature=1.5, seed=7)
    assert len(a) <= 30 and not SPECIALS & set(a)
    assert model.sample([6], max_length=5, top_k=3, seed=1) == model.sample([6], max_length=5, top_k=3, seed=1)
    unet.manual_seed(3)
    first = model.sample([], max_length=10)
    unet.manual_seed(3)
    assert model.sample([], max_length=10) == first
    # top_k=1 is the argmax, checked against re-reading the whole text at every step (no carried state)
    greedy = model.sample([4, 5, 6], max_length=12, top_k=1, seed=0)
    ids = [BOS_ID, 4, 5, 6]
    with unet.no_grad():
        for _ in range(12):
            logits, _ = model.eval()(np.array([ids]))
            logp = logits.numpy()[0, -1].astype(np.float64)
            logp[[PAD_ID, BOS_ID]] = -np.inf
            token = int(logp.argmax())
            if token == EOS_ID:
                break
            ids.append(token)
    model.train()
    assert greedy == ids[4:]
    assert greedy[:5] == [7, 8, 4, 5, 6]  # it learned the cycle


def test_language_model_padding_invariance_gru():
    unet.manual_seed(13)
    model = LanguageModel(10, embedding_dim=6, hidden_size=8, num_layers=2, cell="gru", dtype="float64")
    batch = _lines(14, 5)
    total = model.evaluate_batch(batch)
    parts = [model.evaluate_batch(_rows(batch, b, ("text",))) for b in range(5)]
    assert total["tokens"] == sum(p["tokens"] for p in parts) == batch["text_lengths"].sum() + 5
    assert total["loss_sum"] == pytest.approx(sum(p["loss_sum"] for p in parts), rel=1e-12)


# ---------------------------------------------------------------- SequenceTagger

def _tagging(seed, n=48):
    """Tag 1 on a token equal to its left neighbour, 2 if equal to its right one, else 0 (needs both sides)."""
    rng = np.random.default_rng(seed)
    texts, tags = [], []
    for _ in range(n):
        words = rng.integers(4, 7, rng.integers(1, 9))
        left = np.r_[False, words[1:] == words[:-1]]
        right = np.r_[words[:-1] == words[1:], False]
        texts.append(words)
        tags.append(np.where(left, 1, np.where(right, 2, 0)))
    text, lengths = pad_batch(texts)
    tag_ids, tag_lengths = pad_batch(tags)
    return {"text": text, "text_lengths": lengths, "tags": tag_ids, "tags_lengths": tag_lengths,
            "index": np.arange(n)}


def test_tagger_learns_rule_and_ignores_padding():
    unet.manual_seed(14)
    model = SequenceTagger(VOCAB, 3, embedding_dim=8, hidden_size=32)
    losses = _train(model, [_tagging(seed) for seed in range(3)], 60, lr=0.02)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    test = _tagging(77, 64)
    sums = model.evaluate_batch(test)
    assert set(sums) == {"loss_sum", "tokens", "correct", "examples", "exact"}
    assert sums["tokens"] == test["text_lengths"].sum() and sums["correct"] / sums["tokens"] > 0.9
    predicted = model.predict(test["text"], test["text_lengths"])
    assert [len(p) for p in predicted] == test["text_lengths"].tolist()
    right = sum(int((p == t[:len(p)]).sum()) for p, t in zip(predicted, test["tags"]))
    assert right == sums["correct"]


def test_tagger_padding_invariance_and_pair_batches():
    unet.manual_seed(15)
    model = SequenceTagger(VOCAB, 3, embedding_dim=8, hidden_size=8, cell="gru", num_layers=2, dtype="float64")
    batch = _tagging(16, 6)
    noisy = dict(batch, tags=np.where(np.arange(batch["tags"].shape[1]) < batch["tags_lengths"][:, None],
                                      batch["tags"], 2))  # the tag padding's value does not matter
    total = model.evaluate_batch(batch)
    assert model.evaluate_batch(noisy) == total
    parts = [model.evaluate_batch(_rows(batch, b, ("text", "tags"))) for b in range(6)]
    assert total["loss_sum"] == pytest.approx(sum(p["loss_sum"] for p in parts), rel=1e-12)
    assert total["correct"] == sum(p["correct"] for p in parts)
    pairs = {"source": batch["text"], "source_lengths": batch["text_lengths"], "target": batch["tags"],
             "target_lengths": batch["tags_lengths"]}
    assert model.evaluate_batch(pairs) == total
    with pytest.raises(ValueError, match="tags_lengths"):
        model.loss(dict(batch, tags_lengths=batch["tags_lengths"] + 1))


# ---------------------------------------------------------------- protocol, configs, arguments

def _models():
    return [Seq2Seq(VOCAB, 9, embedding_dim=8, hidden_size=8, attention="additive", cell="gru", num_layers=2),
            Seq2Seq(VOCAB, embedding_dim=8, hidden_size=8, tie_embeddings=True, share_embeddings=True),
            TextClassifier(VOCAB, 4, embedding_dim=8, hidden_size=8, pooling="last", bidirectional=False),
            LanguageModel(VOCAB, embedding_dim=8, hidden_size=12, tie_embeddings=True, num_layers=2),
            SequenceTagger(VOCAB, 3, embedding_dim=8, hidden_size=8)]


def _batch_for(model):
    if model.task == "translate":
        return _pairs(20, 4, fn=lambda x: x % 5 + 4)
    if model.task == "classify":
        return dict(_sentiment(21, 4), label=np.array([0, 3, 1, 2]))
    if model.task == "lm":
        return _lines(22, 4)
    return _tagging(23, 4)


@pytest.mark.parametrize("index", range(5))
def test_config_round_trip(index):
    unet.manual_seed(24)
    model = _models()[index]
    assert isinstance(model, TaskModel) and TASK_MODELS[model.task] is type(model)
    cfg = json.loads(json.dumps(model.config()))
    assert cfg["dtype"] == "float32" and cfg["device"] == "cpu"
    clone = type(model).from_config(cfg)
    clone.load_state_dict(model.state_dict())
    batch = _batch_for(model)
    assert clone.evaluate_batch(batch) == model.evaluate_batch(batch)
    model.eval(), clone.eval()
    assert clone.loss(batch).item() == model.loss(batch).item()
    with pytest.raises(ValueError, match="cfg"):
        type(model).from_config(dict(cfg, bogus=1))


@pytest.mark.parametrize("index", range(5))
def test_models_in_bfloat16(index):
    unet.manual_seed(28)
    model = _models()[index]
    model = type(model).from_config(dict(model.config(), dtype="bfloat16"))
    batch = _batch_for(model)
    loss = model.loss(batch)
    assert loss.dtype == unet.bfloat16 and np.isfinite(float(loss.item()))
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == unet.bfloat16 for p in model.parameters())
    assert np.isfinite(model.evaluate_batch(batch)["loss_sum"])


def test_models_train_from_a_data_loader():
    """The batches unet.data makes go straight in."""
    enc = TextEncoder("char").fit(["abcdef xyz"])
    pairs = PairDataset.from_pairs([("abc", "cba"), ("xyz", "zyx"), ("fed", "def"), ("a", "a")]).encode(enc)
    labeled = LabeledDataset.from_pairs([("abc", "pos"), ("xyz", "neg"), ("", "pos")])
    labels = labeled.label_vocab()
    models = {"translate": (Seq2Seq(len(enc), embedding_dim=8, hidden_size=8), pairs),
              "classify": (TextClassifier(len(enc), len(labels), embedding_dim=8, hidden_size=8),
                           labeled.encode(enc, labels)),
              "lm": (LanguageModel(len(enc), embedding_dim=8, hidden_size=8),
                     TextLineDataset.from_lines(["abc", "fed"]).encode(enc))}
    for task, (model, dataset) in models.items():
        batch = next(iter(DataLoader(dataset, batch_size=4, seed=0)))
        assert set(model.batch_keys) <= set(batch)
        model.loss(batch).backward()
        sums = model.evaluate_batch(batch)
        assert sums["examples"] == len(dataset) and all(isinstance(v, (int, float)) for v in sums.values())


@pytest.mark.parametrize("make,name", [
    (lambda: Seq2Seq(0), "source_vocab_size"),
    (lambda: Seq2Seq(10, target_vocab_size=-1), "target_vocab_size"),
    (lambda: Seq2Seq(10, attention="luong"), "attention"),
    (lambda: Seq2Seq(10, cell="rnn"), "cell"),
    (lambda: Seq2Seq(10, dropout=1.0), "dropout"),
    (lambda: Seq2Seq(10, 12, share_embeddings=True), "share_embeddings"),
    (lambda: Seq2Seq(10, bidirectional="yes"), "bidirectional"),
    (lambda: Seq2Seq(10, hidden_size=2.5), "hidden_size"),
    (lambda: Seq2Seq(10, dtype="int64"), "dtype"),
    (lambda: TextClassifier(10, 0), "num_classes"),
    (lambda: TextClassifier(10, 2, pooling="attention"), "pooling"),
    (lambda: TextClassifier(10, 2, num_layers=0), "num_layers"),
    (lambda: LanguageModel(10, embedding_dim=None), "embedding_dim"),
    (lambda: LanguageModel(10, tie_embeddings=1), "tie_embeddings"),
    (lambda: SequenceTagger(10, 2, dropout=-0.1), "dropout"),
    (lambda: SequenceTagger(True, 2), "vocab_size"),
])
def test_bad_constructor_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_call_arguments():
    unet.manual_seed(25)
    s2s = Seq2Seq(VOCAB, embedding_dim=8, hidden_size=8)
    batch = _pairs(26, 3)
    for kwargs, name in [({"beam_size": 0}, "beam_size"), ({"max_length": 0}, "max_length"),
                         ({"beam_size": 2, "length_penalty": float("nan")}, "length_penalty")]:
        with pytest.raises(ValueError, match=name):
            s2s.generate(batch["source"], batch["source_lengths"], **kwargs)
    with pytest.raises(ValueError, match="source_lengths"):
        s2s.generate(batch["source"], batch["source_lengths"] + 10)
    with pytest.raises(ValueError, match="source"):
        s2s.generate(np.full((2, 3), VOCAB), np.array([3, 3]))
    with pytest.raises(ValueError, match="one target per source"):
        s2s.loss(dict(batch, target=batch["target"][:2], target_lengths=batch["target_lengths"][:2]))
    with pytest.raises(ValueError, match="target_lengths"):
        s2s.loss({k: v for k, v in batch.items() if k != "target_lengths"})
    lm = LanguageModel(VOCAB, embedding_dim=8, hidden_size=8)
    for kwargs, name in [({"temperature": 0.0}, "temperature"), ({"top_k": 0}, "top_k"),
                         ({"seed": -1}, "seed"), ({"max_length": -3}, "max_length")]:
        with pytest.raises(ValueError, match=name):
            lm.sample([4], **kwargs)
    with pytest.raises(ValueError, match="prefix_ids"):
        lm.sample([[4, 5]])
    clf = TextClassifier(VOCAB, 2, embedding_dim=8, hidden_size=8)
    with pytest.raises(ValueError, match="label"):
        clf.loss(dict(_sentiment(27, 3), label=np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="batch"):
        clf.loss([1, 2, 3])


@pytest.mark.gpu
def test_models_on_gpu_match_cpu():
    for model in _models():
        batch = _batch_for(model)
        gpu = type(model).from_config(dict(model.config(), device="cuda"))
        gpu.load_state_dict(model.state_dict())
        cpu_sums, gpu_sums = model.evaluate_batch(batch), gpu.evaluate_batch(batch)
        assert gpu_sums["loss_sum"] == pytest.approx(cpu_sums["loss_sum"], rel=1e-4)
        gpu.loss(batch).backward()
        assert all(p.grad is not None and p.device == gpu.device for p in gpu.parameters())
