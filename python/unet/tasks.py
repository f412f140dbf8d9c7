"""Per-task wiring for ``unet train`` and ``unet predict``: files -> examples -> encoders -> batches -> model.

    task       file format (UTF-8, one example a line)                model
    translate  source<TAB>target                                       Seq2Seq
    classify   text<TAB>label                                          TextClassifier (or TextCNN)
    lm         one text a line                                         LanguageModel
    tag        space-separated tokens<TAB>space-separated tags         SequenceTagger

Examples are plain Python values (``(source, target)``, ``(text, label)``, ``text``,
``(tokens, tags)``); the encoders turn them into the id columns the task's model reads
(``batch_keys``) and save as JSON configs inside the checkpoint, so ``unet predict``
reads text exactly as training did. Mistakes in the user's data raise ``DataError``,
whose message names the file (and the line).
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np

from .data import (BPETokenizer, Dataset, LabeledDataset, Normalizer, PairDataset, TextEncoder, TextLineDataset,
                   Vocab, dates_task, get_tokenizer, numbers_task, pad_batch, read_lines)
from .models import TASK_MODELS, TextCNN

TASKS = ("translate", "classify", "lm", "tag")
SYNTHETIC = {"dates": dates_task, "numbers": numbers_task}
FORMATS = {
    "translate": "source<TAB>target",
    "classify": "text<TAB>label",
    "lm": "one text a line",
    "tag": "space-separated tokens<TAB>space-separated tags, one tag per token",
}
DEFAULT_TOKENIZER = {"translate": "char", "classify": "word", "lm": "char", "tag": "word"}
# what each task prints per epoch: (metric key, label, format)
SHOWN = {
    "translate": (("accuracy", "token acc", "pct"), ("exact_match", "exact match", "pct"), ("bleu", "BLEU", "num")),
    "classify": (("accuracy", "accuracy", "pct"),),
    "lm": (("perplexity", "perplexity", "num"), ("accuracy", "next-token acc", "pct")),
    "tag": (("accuracy", "tag acc", "pct"), ("exact_match", "all tags right", "pct")),
}
HEADLINE = {"translate": "exact_match", "classify": "accuracy", "lm": "perplexity", "tag": "accuracy"}


class DataError(ValueError):
    """The user's data cannot be used; the message names the file."""


# ---------------------------------------------------------------- reading

def read_examples(task: str, path, limit: int | None = None) -> list:
    """The examples of ``path`` for ``task`` (the first ``limit`` only, when given)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a file")
    try:
        if task == "translate":
            data = PairDataset(path)
            examples = list(zip(data.sources, data.targets))
        elif task == "classify":
            data = LabeledDataset(path)
            examples = list(zip(data.texts, data.labels))
        elif task == "lm":
            examples = list(TextLineDataset(path).texts)
        else:
            examples = _read_tagged(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # the readers name the file and the line
        raise DataError(str(e)) from None
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty or holds only blank lines); "
                        f"expected {FORMATS[task]}")
    return examples[:limit] if limit else examples


def _read_tagged(path) -> list:
    examples = []
    for number, line in read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}, line {number}: expected 2 tab-separated fields ({FORMATS['tag']}), "
                            f"got {len(fields)}: {line[:80]!r}")
        tokens, tags = fields[0].split(), fields[1].split()
        if not tokens or len(tokens) != len(tags):
            raise DataError(f"{path}, line {number}: {len(tokens)} tokens but {len(tags)} tags; expected one "
                            f"tag per token: {line[:80]!r}")
        examples.append((tokens, tags))
    return examples


def synthetic_examples(name: str, n: int, seed: int) -> list:
    """``n`` pairs of a built-in translation task (``unet.data.dates_task`` / ``numbers_task``)."""
    return SYNTHETIC[name](n, seed=seed)


def split(examples: list, fraction: float, seed: int, what: str = "the data") -> tuple:
    """(train, held out): a seeded random ``fraction`` held out (at least one example)."""
    if len(examples) < 2:
        raise DataError(f"{what}: {len(examples)} example(s) cannot be split into training and held-out "
                        "sets; give more, or a separate --valid file")
    held = min(max(1, int(round(fraction * len(examples)))), len(examples) - 1)
    order = np.random.default_rng(seed).permutation(len(examples))
    return [examples[i] for i in order[held:]], [examples[i] for i in order[:held]]


def file_fingerprint(path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


# ---------------------------------------------------------------- encoders

def fit_encoders(task: str, train: list, tokenizer: str, vocab_size: int | None = None,
                 lowercase: bool = False) -> dict:
    """The task's encoders, fitted on the training examples."""
    normalizer = Normalizer(lowercase=lowercase)

    def text_encoder(texts):
        kind = BPETokenizer(vocab_size) if tokenizer == "bpe" and vocab_size else get_tokenizer(tokenizer)
        encoder = TextEncoder(kind, normalizer)
        return encoder.fit(texts, max_size=vocab_size) if tokenizer != "bpe" else encoder.fit(texts)

    if task == "translate":
        return {"source": text_encoder([s for s, _ in train]), "target": text_encoder([t for _, t in train])}
    if task == "classify":
        labels = LabeledDataset.from_pairs(train).label_vocab()
        return {"text": text_encoder([t for t, _ in train]), "labels": labels}
    if task == "lm":
        return {"text": text_encoder(train)}
    words = Vocab.build(([normalizer(w) for w in tokens] for tokens, _ in train), max_size=vocab_size)
    tags = Vocab(sorted({tag for _, tags in train for tag in tags}), specials=False)
    return {"words": words, "tags": tags, "normalizer": normalizer}


def encoders_to_config(encoders: dict) -> dict:
    out = {}
    for name, encoder in encoders.items():
        kind = {TextEncoder: "text", Vocab: "vocab", Normalizer: "normalizer"}[type(encoder)]
        out[name] = {"kind": kind, "config": encoder.to_config()}
    return out


def encoders_from_config(config: dict) -> dict:
    kinds = {"text": TextEncoder, "vocab": Vocab, "normalizer": Normalizer}
    return {name: kinds[entry["kind"]].from_config(entry["config"]) for name, entry in config.items()}


def vocab_sizes(task: str, encoders: dict) -> str:
    if task == "translate":
        return f"source {len(encoders['source'])}, target {len(encoders['target'])} tokens"
    if task == "classify":
        return f"{len(encoders['text'])} tokens, {len(encoders['labels'])} labels"
    if task == "lm":
        return f"{len(encoders['text'])} tokens"
    return f"{len(encoders['words'])} words, {len(encoders['tags'])} tags"


def _ids(encoder, text, max_length):
    return np.asarray(encoder.encode(text, max_length=max_length), dtype=np.int64)


def encode(task: str, examples: list, encoders: dict, max_length: int | None = None,
           source: str = "the data") -> Dataset:
    """The examples as id columns (a ``Dataset`` for the DataLoader); ``source`` names them in errors."""
    if task == "translate":
        columns = {"source": [_ids(encoders["source"], s, max_length) for s, _ in examples],
                   "target": [_ids(encoders["target"], t, max_length) for _, t in examples]}
        return Dataset(columns, ("source", "target"))
    if task == "classify":
        labels = encoders["labels"]
        unknown = sorted({label for _, label in examples if label not in labels})
        if unknown:
            raise DataError(f"{source}: labels {unknown[:10]} do not occur in the training data "
                            f"(known: {list(labels.tokens)[:10]})")
        return Dataset({"text": [_ids(encoders["text"], t, max_length) for t, _ in examples],
                        "label": [labels.index(label) for _, label in examples]}, ("text",))
    if task == "lm":
        return Dataset({"text": [_ids(encoders["text"], t, max_length) for t in examples]}, ("text",))
    tags = encoders["tags"]
    unknown = sorted({tag for _, ts in examples for tag in ts if tag not in tags})
    if unknown:
        raise DataError(f"{source}: tags {unknown[:10]} do not occur in the training data "
                        f"(known: {list(tags.tokens)[:10]})")
    words, normalizer = encoders["words"], encoders["normalizer"]
    keep = slice(None, max_length)
    return Dataset({"text": [np.asarray(words.encode(normalizer(w) for w in tokens[keep]), np.int64)
                             for tokens, _ in examples],
                    "tags": [np.asarray([tags.index(t) for t in ts[keep]], np.int64) for _, ts in examples]},
                   ("text",))


# ---------------------------------------------------------------- models

CLASSIFY_MODELS = {"rnn": TASK_MODELS["classify"], "textcnn": TextCNN}  # `unet train --model`


def model_class(task: str, model: str = "rnn"):
    """The class ``unet train`` builds for ``task``; classify offers a choice (``--model``)."""
    return CLASSIFY_MODELS[model] if task == "classify" else TASK_MODELS[task]


def build_model(task: str, encoders: dict, *, embedding_dim, hidden_size, num_layers, cell, dropout,
                attention=None, device="cpu", model="rnn"):
    cls = model_class(task, model)
    if cls is TextCNN:  # Kim's widths and map count; the recurrent sizes do not apply
        return cls(len(encoders["text"]), len(encoders["labels"]), embedding_dim=embedding_dim, dropout=dropout,
                   device=device)
    common = dict(embedding_dim=embedding_dim, hidden_size=hidden_size, num_layers=num_layers, cell=cell,
                  dropout=dropout, device=device)
    if task == "translate":
        return cls(len(encoders["source"]), len(encoders["target"]), attention=attention, **common)
    if task == "classify":
        return cls(len(encoders["text"]), len(encoders["labels"]), **common)
    if task == "lm":
        return cls(len(encoders["text"]), **common)
    return cls(len(encoders["words"]), len(encoders["tags"]), **common)


def parameter_count(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:  # tied weights count once
            seen.add(id(p))
            total += int(np.prod(p.shape))
    return total


# ---------------------------------------------------------------- metrics beyond evaluate_batch

def corpus_bleu(task: str, model, examples: list, encoders: dict, batch_size: int = 256) -> float | None:
    """sacrebleu's corpus BLEU of greedy translations of ``examples`` (translate only, else None).

    References and hypotheses are both normalised as the target encoder reads text;
    character-level targets are scored on characters (sacrebleu's "char" tokenizer).
    """
    if task != "translate" or not examples:
        return None
    import sacrebleu

    target = encoders["target"]
    hypotheses = translate(model, encoders, [s for s, _ in examples], batch_size=batch_size)
    references = [target.normalize(t) for _, t in examples]
    tokenize = "char" if target.tokenizer.kind == "char" else "13a"
    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score)


def format_metric(value, style: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}%" if style == "pct" else f"{value:.2f}"


# ---------------------------------------------------------------- prediction

def _batched(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def translate(model, encoders: dict, sources: list, *, batch_size: int = 64, beam_size: int = 1,
              max_length: int | None = None) -> list:
    source, target = encoders["source"], encoders["target"]
    out = []
    for chunk in _batched(sources, batch_size):
        ids, lengths = pad_batch([_ids(source, s, source.max_length) for s in chunk])
        out += [target.decode(seq) for seq in model.generate(ids, lengths, max_length=max_length,
                                                             beam_size=beam_size)]
    return out


def predict_lines(task: str, model, encoders: dict, lines: list, *, batch_size: int = 64, beam_size: int = 1,
                  max_length: int | None = None, temperature: float = 1.0, top_k: int | None = None,
                  seed: int = 0) -> list:
    """One output string per input line (no newlines inside)."""
    if task == "translate":
        out = translate(model, encoders, lines, batch_size=batch_size, beam_size=beam_size, max_length=max_length)
    elif task == "classify":
        text, labels = encoders["text"], encoders["labels"]
        out = []
        for chunk in _batched(lines, batch_size):
            ids, lengths = pad_batch([_ids(text, line, text.max_length) for line in chunk])
            out += [labels.tokens[i] for i in model.predict(ids, lengths)]
    elif task == "tag":
        words, tags, normalizer = encoders["words"], encoders["tags"], encoders["normalizer"]
        out = []
        for chunk in _batched(lines, batch_size):
            tokens = [line.split() for line in chunk]
            ids, lengths = pad_batch([np.asarray(words.encode(normalizer(w) for w in t), np.int64) for t in tokens])
            out += [" ".join(tags.tokens[i] for i in row) for row in model.predict(ids, lengths)]
    else:
        text = encoders["text"]
        out = [text.decode(model.sample(text.encode(line), max_length=max_length or 100, temperature=temperature,
                                        top_k=top_k, seed=seed + i))
               for i, line in enumerate(lines)]
    return [" ".join(line.splitlines()) for line in out]
