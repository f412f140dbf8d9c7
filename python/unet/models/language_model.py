"""LanguageModel: next-token prediction with an LSTM/GRU, and sampling from it."""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from .. import nn
from ..data.vocab import BOS_ID, EOS_ID, PAD_ID
from ..tensor import Tensor
from .base import (CELLS, TaskModel, _host, add_bos_eos, check_choice, check_dropout, check_flag, check_positive,
                   check_real, log_probs, recurrent)


class LanguageModel(TaskModel):
    """A recurrent language model: p(y_t | <bos> y_1 .. y_{t-1}), <eos> closing each text.

    ::

        model = LanguageModel(len(encoder), hidden_size=256, tie_embeddings=True)
        loss = model.loss(batch)                           # batch: text, text_lengths
        print(model.perplexity(loader))                    # exp(mean loss per token)
        ids = model.sample(encoder.encode("once upon"), max_length=50, temperature=0.8, top_k=20, seed=0)

    Embedding -> dropout -> LSTM/GRU (one fused call over the whole text, ``lengths=``) -> dropout ->
    Linear to the vocabulary. ``tie_embeddings`` reuses the embedding matrix as the output weights
    (through a Linear hidden_size -> embedding_dim when the sizes differ). The model adds <bos>
    in front of each text and predicts <eos> after it; the loss is the mean cross-entropy per
    predicted token, so ``exp(loss_sum / tokens)`` of ``evaluate_batch`` is the perplexity.
    """

    task = "lm"
    batch_keys = ("text", "text_lengths")

    def __init__(self, vocab_size, embedding_dim=64, hidden_size=128, num_layers=1, cell="lstm", dropout=0.1,
                 tie_embeddings=False, dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.vocab_size = check_positive("vocab_size", vocab_size)
        self.embedding_dim = check_positive("embedding_dim", embedding_dim)
        self.hidden_size = check_positive("hidden_size", hidden_size)
        self.num_layers = check_positive("num_layers", num_layers)
        self.cell = check_choice("cell", cell, CELLS)
        self.dropout = check_dropout(dropout)
        self.tie_embeddings = check_flag("tie_embeddings", tie_embeddings)
        E, H, d = self.embedding_dim, self.hidden_size, self.dtype.name
        self.embedding = nn.Embedding(self.vocab_size, E, padding_idx=PAD_ID, dtype=d)
        self.rnn = recurrent(self.cell, E, H, self.num_layers, self.dropout, False, d)
        readout = H
        if self.tie_embeddings and E != H:
            self.projection = nn.Linear(H, E, dtype=d)
            readout = E
        self.output = nn.Linear(readout, self.vocab_size, dtype=d)
        if self.tie_embeddings:
            self.output.weight = self.embedding.weight
        self._finish(vocab_size=self.vocab_size, embedding_dim=E, hidden_size=H, num_layers=self.num_layers,
                     cell=self.cell, dropout=self.dropout, tie_embeddings=self.tie_embeddings)

    def forward(self, ids, lengths=None, state=None):
        """Next-token logits (B, T, V) for input ids (B, T) (<bos> first: the model adds none here),
        and the recurrent state after each sequence's last step (pass it back to continue)."""
        ids, lengths = self._ids(ids, lengths, "ids", self.vocab_size)
        if ids.shape[1] == 0 or lengths.min() == 0:
            raise ValueError(f"lengths: every input needs at least one token, got {lengths.tolist()[:8]}")
        x = F.dropout(self.embedding(self._tensor(ids)), self.dropout, self.training)
        outputs, state = self.rnn(x, state, lengths=lengths)
        outputs = F.dropout(outputs, self.dropout, self.training)
        if "projection" in self._modules:
            outputs = self.projection(outputs)
        return self.output(outputs), state

    def _pairs(self, batch):
        text, lengths = self._columns(batch, *self.batch_keys)
        text, lengths = self._ids(text, lengths, "text", self.vocab_size)
        return add_bos_eos(text, lengths)

    def loss(self, batch) -> Tensor:
        """Mean cross-entropy per predicted token (each text's tokens and its <eos>)."""
        inputs, targets, lengths = self._pairs(batch)
        logits, _ = self(inputs, lengths)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), self._device_array(targets.reshape(-1)),
                               ignore_index=PAD_ID)

    def evaluate_batch(self, batch) -> dict:
        """``loss_sum`` and ``correct`` (argmax = next token) over ``tokens``; ``examples`` texts."""
        inputs, targets, lengths = self._pairs(batch)
        with self._inference():
            logits, _ = self(inputs, lengths)
            flat = logits.reshape(-1, self.vocab_size)
            loss_sum = F.cross_entropy(flat, self._device_array(targets.reshape(-1)), ignore_index=PAD_ID,
                                       reduction="sum")
            predicted = _host(flat.argmax(-1).data).reshape(targets.shape)
        counted = targets != PAD_ID
        return {"loss_sum": float(loss_sum.item()), "tokens": int(counted.sum()),
                "correct": int(((predicted == targets) & counted).sum()), "examples": int(targets.shape[0])}

    def perplexity(self, batches) -> float:
        """exp(mean cross-entropy per token) over an iterable of batches (e.g. a DataLoader epoch)."""
        loss_sum = tokens = 0
        for batch in batches:
            sums = self.evaluate_batch(batch)
            loss_sum, tokens = loss_sum + sums["loss_sum"], tokens + sums["tokens"]
        if not tokens:
            raise ValueError("batches: no tokens to measure")
        return math.exp(loss_sum / tokens)

    def sample(self, prefix_ids=(), max_length=100, temperature=1.0, top_k=None, seed=None) -> list:
        """Continue ``prefix_ids`` (ids of a text, no <bos> needed) by up to ``max_length`` sampled tokens.

        Returns the new ids only, without the <eos> that stopped them. Each token is drawn from
        softmax(logits / temperature) restricted to the ``top_k`` most likely (all when None;
        ``top_k=1`` is the argmax), never <pad> or <bos>. ``seed`` fixes the draws (None: unet's
        generator, see ``unet.manual_seed``)."""
        prefix = _host(list(prefix_ids) if not hasattr(prefix_ids, "shape") else prefix_ids)
        if prefix.ndim != 1 or (prefix.size and prefix.dtype.kind not in "iu"):
            raise ValueError(f"prefix_ids: expected a 1-D sequence of int ids, got shape {prefix.shape} "
                             f"dtype {prefix.dtype}")
        prefix = prefix.astype(np.int64).tolist()
        if prefix and prefix[0] == BOS_ID:
            prefix = prefix[1:]
        max_length = check_positive("max_length", max_length)
        temperature = check_real("temperature", temperature, 0.0)
        if top_k is not None:
            top_k = check_positive("top_k", top_k)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed: expected None or a non-negative int, got {seed!r}")
        rng = backend.random_state.generator(backend.Device("cpu")) if seed is None else np.random.default_rng(seed)
        out = []
        with self._inference():
            logits, state = self(np.asarray([[BOS_ID] + prefix], np.int64))  # the prefix: one fused call
            logits = logits[:, -1]
            for _ in range(max_length):
                token = _draw(log_probs(logits)[0], temperature, top_k, rng)
                if token == EOS_ID:
                    break
                out.append(token)
                logits, state = self(np.asarray([[token]], np.int64), state=state)
                logits = logits[:, -1]
        return out

    def extra_repr(self):
        return f"task={self.task!r}, cell={self.cell!r}, tie_embeddings={self.tie_embeddings}"


def _draw(logp: np.ndarray, temperature: float, top_k, rng) -> int:
    if top_k == 1:
        return int(logp.argmax())
    scaled = logp / temperature
    if top_k is not None and top_k < scaled.size:
        cut = np.partition(scaled, scaled.size - top_k)[scaled.size - top_k]
        scaled = np.where(scaled >= cut, scaled, -np.inf)
    p = np.exp(scaled - scaled.max())
    p /= p.sum()
    return int(rng.choice(p.size, p=p))
