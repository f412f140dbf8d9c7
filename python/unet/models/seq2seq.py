"""Seq2Seq: the UNet encoder-decoder for token sequences, with attention (translation, summarising)."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..data.loader import pad_batch
from ..data.vocab import BOS_ID, EOS_ID, PAD_ID
from ..tensor import Tensor
from .attention import make_attention
from .base import (CELLS, TaskModel, _host, _mask, add_bos_eos, check_choice, check_dropout, check_flag,
                   check_positive, check_real, index_state, log_probs, nonempty, strip_bos_eos)
from .base import recurrent as _recurrent

ATTENTIONS = ("general", "dot", "additive", "none")


class _Memory:
    """What the decoder reads of an encoded source batch: memory (B, S, H), attention keys, valid (B, S)."""

    def __init__(self, memory, keys, valid):
        self.memory, self.keys, self.valid = memory, keys, valid

    def select(self, index):
        return _Memory(*(None if a is None else a[index] for a in (self.memory, self.keys)), self.valid[index])


class Seq2Seq(TaskModel):
    """Encoder-decoder with attention over token ids; the model adds <bos>/<eos> to targets itself.

    ::

        model = Seq2Seq(len(src_enc), len(tgt_enc), hidden_size=128, attention="general")
        loss = model.loss(batch)              # batch: source, source_lengths, target, target_lengths
        loss.backward(); optimizer.step()
        ids = model.generate(batch["source"], batch["source_lengths"], beam_size=4)  # list of id lists

    Source ids -> Embedding -> (Bi)LSTM/GRU encoder with ``lengths=`` -> its outputs (the memory,
    projected to ``hidden_size`` when bidirectional) and final states (the vector; bidirectional:
    both directions' states concatenated and bridged by Linear+tanh) -> the decoder starts from
    them. ``attention``:

    * ``"general"``/``"dot"`` (Luong): no input feeding, so in training the decoder runs over the whole
      shifted target (<bos> y_1 .. y_n) in one fused call, then attends from every step at once
      (batched matmuls, source padding masked), ``tanh(W_c [context; s_t])``, then the output Linear.
    * ``"additive"`` (Bahdanau): the context enters the recurrence (decoder input [embedding; context],
      the query is the previous state), so training steps the decoder once per target token —
      about T times slower per batch than the Luong kinds.
    * ``"none"``: the plain encoder-decoder; the final states are all the decoder knows of the source.

    Inference steps the decoder one token at a time (the layer on T = 1 with a carried state):
    ``greedy_decode``, ``beam_search`` (length-normalised scores, hypotheses end at <eos>), or
    ``generate`` which picks one of them by ``beam_size``. <pad> and <bos> are never emitted.
    An empty source is read as one <pad>. ``tie_embeddings`` shares the target embedding with the
    output layer; ``share_embeddings`` uses one embedding for source and target (same vocabulary).
    """

    task = "translate"
    batch_keys = ("source", "source_lengths", "target", "target_lengths")

    def __init__(self, source_vocab_size, target_vocab_size=None, embedding_dim=64, hidden_size=128,
                 num_layers=1, cell="lstm", bidirectional=True, attention="general", dropout=0.1,
                 tie_embeddings=False, share_embeddings=False, dtype="float32", device="cpu"):
        super().__init__(dtype, device)
        self.source_vocab_size = check_positive("source_vocab_size", source_vocab_size)
        self.target_vocab_size = (self.source_vocab_size if target_vocab_size is None
                                  else check_positive("target_vocab_size", target_vocab_size))
        self.embedding_dim = check_positive("embedding_dim", embedding_dim)
        self.hidden_size = check_positive("hidden_size", hidden_size)
        self.num_layers = check_positive("num_layers", num_layers)
        self.cell = check_choice("cell", cell, CELLS)
        self.bidirectional = check_flag("bidirectional", bidirectional)
        self.attention_kind = check_choice("attention", attention, ATTENTIONS)
        self.dropout = check_dropout(dropout)
        self.tie_embeddings = check_flag("tie_embeddings", tie_embeddings)
        self.share_embeddings = check_flag("share_embeddings", share_embeddings)
        if self.share_embeddings and self.source_vocab_size != self.target_vocab_size:
            raise ValueError(f"share_embeddings: needs source_vocab_size == target_vocab_size, got "
                             f"{self.source_vocab_size} and {self.target_vocab_size}")
        E, H, L, d = self.embedding_dim, self.hidden_size, self.num_layers, self.dtype.name
        self.source_embedding = nn.Embedding(self.source_vocab_size, E, padding_idx=PAD_ID, dtype=d)
        self.target_embedding = (self.source_embedding if self.share_embeddings else
                                 nn.Embedding(self.target_vocab_size, E, padding_idx=PAD_ID, dtype=d))
        self.encoder = _recurrent(self.cell, E, H, L, self.dropout, self.bidirectional, d)
        attend = self.attention_kind != "none"
        if self.bidirectional:
            self.bridge_h = nn.Linear(2 * H, H, activation="tanh", dtype=d)
            if self.cell == "lstm":
                self.bridge_c = nn.Linear(2 * H, H, activation="tanh", dtype=d)
            if attend:
                self.memory_projection = nn.Linear(2 * H, H, dtype=d)
        additive = self.attention_kind == "additive"
        self.decoder = _recurrent(self.cell, E + (H if additive else 0), H, L, self.dropout, False, d)
        readout = E if self.tie_embeddings else H  # the vector the output layer reads
        if attend:
            self.attention = make_attention(self.attention_kind, H, H, dtype=d)
            self.combine = nn.Linear(2 * H, readout, activation="tanh", dtype=d)
        elif readout != H:
            self.combine = nn.Linear(H, readout, activation="tanh", dtype=d)
        self.output = nn.Linear(readout, self.target_vocab_size, dtype=d)
        if self.tie_embeddings:
            self.output.weight = self.target_embedding.weight
        self._finish(source_vocab_size=self.source_vocab_size, target_vocab_size=self.target_vocab_size,
                     embedding_dim=E, hidden_size=H, num_layers=L, cell=self.cell,
                     bidirectional=self.bidirectional, attention=self.attention_kind, dropout=self.dropout,
                     tie_embeddings=self.tie_embeddings, share_embeddings=self.share_embeddings)

    # ------------------------------------------------------------ encoder
    def encode(self, source, source_lengths=None):
        """(memory, decoder initial state) for a padded source batch (host ids and lengths)."""
        ids, lengths = self._ids(source, source_lengths, "source", self.source_vocab_size)
        ids, lengths = nonempty(ids, lengths)
        x = F.dropout(self.source_embedding(self._tensor(ids)), self.dropout, self.training)
        outputs, state = self.encoder(x, lengths=lengths)
        if self.bidirectional:
            state = (self._bridge(state[0], self.bridge_h), self._bridge(state[1], self.bridge_c)) \
                if self.cell == "lstm" else self._bridge(state, self.bridge_h)
        valid = self._device_array(_mask(lengths, ids.shape[1]))
        if self.attention_kind == "none":
            return _Memory(None, None, valid), state
        memory = self.memory_projection(outputs) if self.bidirectional else outputs
        return _Memory(memory, self.attention.keys(memory), valid), state

    def _bridge(self, s, layer):
        """(layers * 2, B, H) final states -> both directions side by side (layers, B, 2H) -> Linear+tanh."""
        L, B, H = self.num_layers, s.shape[1], self.hidden_size
        return layer(s.reshape(L, 2, B, H).permute(0, 2, 1, 3).reshape(L, B, 2 * H))

    # ------------------------------------------------------------ decoder
    def _readout(self, s, memory):
        """Decoder outputs s (B, T, H) -> (vector for the output layer, attention weights or None)."""
        if self.attention_kind == "none":
            return (self.combine(s) if "combine" in self._modules else s), None
        context, weights = self.attention(s, memory.memory, memory.valid, memory.keys)
        return self.combine(F.cat([context, s], dim=-1)), weights

    def _step(self, embedded, state, memory):
        """One decoder step: embedded previous tokens (B, 1, E) -> (logits (B, V), state, weights (B, S))."""
        if self.attention_kind == "additive":
            top = (state[0] if self.cell == "lstm" else state)[-1]  # the previous state queries
            context, weights = self.attention(top.unsqueeze(1), memory.memory, memory.valid, memory.keys)
            s, state = self.decoder(F.cat([embedded, context], dim=-1), state)
            vector = self.combine(F.cat([context, s], dim=-1))
        else:
            s, state = self.decoder(embedded, state)
            vector, weights = self._readout(s, memory)
        logits = self.output(F.dropout(vector, self.dropout, self.training))
        return logits[:, 0], state, None if weights is None else weights[:, 0]

    def _teacher_forced(self, source, source_lengths, inputs):
        memory, state = self.encode(source, source_lengths)
        if memory.valid.shape[0] != inputs.shape[0]:
            raise ValueError(f"target: expected one target per source ({memory.valid.shape[0]}), got "
                             f"{inputs.shape[0]}")
        embedded = F.dropout(self.target_embedding(self._tensor(inputs)), self.dropout, self.training)
        if self.attention_kind != "additive":
            s, _ = self.decoder(embedded, state)  # the whole shifted target, one fused call
            vector, weights = self._readout(s, memory)
            return self.output(F.dropout(vector, self.dropout, self.training)), weights
        logits, weights = [], []
        for t in range(inputs.shape[1]):  # the context feeds the recurrence: one step at a time
            step_logits, state, step_weights = self._step(embedded[:, t:t + 1], state, memory)
            logits.append(step_logits)
            weights.append(step_weights)
        return F.stack(logits, dim=1), F.stack(weights, dim=1)

    def forward(self, source, source_lengths, target, target_lengths=None):
        """Teacher-forced logits (B, T+1, target_vocab) for <bos> y_1 .. y_n -> y_1 .. y_n <eos>, and the
        attention weights (B, T+1, S) (None without attention). Position t of a target of length n is
        meaningful for t <= n."""
        target, target_lengths = self._ids(target, target_lengths, "target", self.target_vocab_size)
        inputs, _, _ = add_bos_eos(target, target_lengths)
        return self._teacher_forced(source, source_lengths, inputs)

    # ------------------------------------------------------------ protocol
    def _targets(self, batch):
        source, source_lengths, target, target_lengths = self._columns(batch, *self.batch_keys)
        target, target_lengths = self._ids(target, target_lengths, "target", self.target_vocab_size)
        inputs, targets, _ = add_bos_eos(target, target_lengths)
        return source, source_lengths, inputs, targets, (target, target_lengths)

    def loss(self, batch) -> Tensor:
        """Mean cross-entropy per target token (<eos> included, padding ignored), with a graph."""
        source, source_lengths, inputs, targets, _ = self._targets(batch)
        logits, _ = self._teacher_forced(source, source_lengths, inputs)
        return F.cross_entropy(logits.reshape(-1, self.target_vocab_size), self._device_array(targets.reshape(-1)),
                               ignore_index=PAD_ID)

    def evaluate_batch(self, batch) -> dict:
        """Sums over the batch: ``loss_sum`` and ``correct`` (teacher-forced, per token) over ``tokens``;
        ``exact``: greedy decodes equal to the target, of ``examples``."""
        source, source_lengths, inputs, targets, (target, target_lengths) = self._targets(batch)
        with self._inference():
            logits, _ = self._teacher_forced(source, source_lengths, inputs)
            flat = logits.reshape(-1, self.target_vocab_size)
            loss_sum = F.cross_entropy(flat, self._device_array(targets.reshape(-1)), ignore_index=PAD_ID,
                                       reduction="sum")
            counted = targets != PAD_ID
            predicted = _host(flat.argmax(-1).data).reshape(targets.shape)
            wanted = strip_bos_eos(target, target_lengths)
            decoded = self.greedy_decode(source, source_lengths, max_length=max(map(len, wanted)) + 1)
        return {"loss_sum": float(loss_sum.item()), "tokens": int(counted.sum()),
                "correct": int(((predicted == targets) & counted).sum()), "examples": len(wanted),
                "exact": sum(a == b for a, b in zip(decoded, wanted))}

    # ------------------------------------------------------------ inference
    def _source(self, source, source_lengths):
        if source_lengths is None and isinstance(source, (list, tuple)):
            return pad_batch([np.asarray(s, dtype=np.int64) for s in source])
        return source, source_lengths

    def _max_length(self, max_length, source_lengths, source):
        if max_length is None:
            return 2 * int(np.max(source_lengths)) + 10 if source_lengths is not None \
                else 2 * _host(source).shape[1] + 10
        return check_positive("max_length", max_length)

    def greedy_decode(self, source, source_lengths=None, max_length=None) -> list:
        """The most likely next token at each step, until <eos> or ``max_length`` tokens."""
        source, source_lengths = self._source(source, source_lengths)
        max_length = self._max_length(max_length, source_lengths, source)
        with self._inference():
            memory, state = self.encode(source, source_lengths)
            batch = memory.valid.shape[0]
            tokens = np.full(batch, BOS_ID, np.int64)
            out, done = [[] for _ in range(batch)], np.zeros(batch, bool)
            for _ in range(max_length):
                logits, state, _ = self._step(self.target_embedding(self._tensor(tokens[:, None])), state, memory)
                tokens = log_probs(logits).argmax(-1)
                for b in np.flatnonzero(~done):
                    if tokens[b] == EOS_ID:
                        done[b] = True
                    else:
                        out[b].append(int(tokens[b]))
                if done.all():
                    break
        return out

    def beam_search(self, source, source_lengths=None, max_length=None, beam_size=4,
                    length_penalty=1.0) -> list:
        """The best of ``beam_size`` hypotheses per source by log-probability / length ** length_penalty.

        Each step extends the ``beam_size`` best live hypotheses; one that emits <eos> ends (its
        length counts the <eos>) and joins the ``beam_size`` best ended ones. A source is done when
        that set is full and no live hypothesis scores better than its worst as it stands, or after
        ``max_length`` tokens (live ones then compete with their ``max_length`` tokens). Ties go
        to the lower (beam, token) index, so ``beam_size=1`` gives exactly ``greedy_decode``."""
        source, source_lengths = self._source(source, source_lengths)
        max_length = self._max_length(max_length, source_lengths, source)
        K = check_positive("beam_size", beam_size)
        alpha = check_real("length_penalty", length_penalty, 0.0, low_open=False)
        with self._inference():
            memory, state = self.encode(source, source_lengths)
            B = memory.valid.shape[0]
            rows = self._device_array(np.repeat(np.arange(B), K))
            memory, state = memory.select(rows), index_state(state, rows)
            scores = np.full((B, K), -np.inf)
            scores[:, 0] = 0.0  # the K copies start identical: only one of them may expand
            history = np.zeros((B, K, 0), np.int64)
            tokens = np.full(B * K, BOS_ID, np.int64)
            finished = [[] for _ in range(B)]
            done = np.zeros(B, bool)
            for t in range(max_length):
                logits, state, _ = self._step(self.target_embedding(self._tensor(tokens[:, None])), state, memory)
                logp = log_probs(logits).reshape(B, K, -1)
                V = logp.shape[2]
                total = scores[:, :, None] + logp
                new_scores = np.full((B, K), -np.inf)
                new_history = np.zeros((B, K, t + 1), np.int64)
                parents = np.tile(np.arange(K), (B, 1))
                new_tokens = np.full((B, K), PAD_ID, np.int64)
                for b in np.flatnonzero(~done):
                    flat_total, flat_logp = total[b].ravel(), logp[b].ravel()
                    # at most K candidates end and K go on: only the 2K best (and ties) can matter
                    top = min(2 * K, flat_total.size)
                    bound = np.partition(flat_total, flat_total.size - top)[flat_total.size - top]
                    candidates = np.flatnonzero(flat_total >= bound)
                    order = candidates[np.lexsort((-flat_logp[candidates], -flat_total[candidates]))]
                    alive = 0
                    for c in order:  # at most K end here and K go on: within the 2K
                        if flat_total[c] == -np.inf:
                            break
                        k, v = divmod(int(c), V)
                        if v == EOS_ID:
                            finished[b].append((flat_total[c] / (t + 1) ** alpha, history[b, k].tolist()))
                        else:
                            new_scores[b, alive], parents[b, alive], new_tokens[b, alive] = flat_total[c], k, v
                            new_history[b, alive, :t] = history[b, k]
                            new_history[b, alive, t] = v
                            alive += 1
                            if alive == K:
                                break
                    finished[b] = sorted(finished[b], key=lambda h: -h[0])[:K]  # stable: earlier wins ties
                    done[b] = alive == 0 or (len(finished[b]) == K and
                                             new_scores[b, 0] / (t + 1) ** alpha <= finished[b][-1][0])
                scores, history, tokens = new_scores, new_history, new_tokens.reshape(-1)
                if done.all():
                    break
                flat_parents = (np.arange(B)[:, None] * K + parents).reshape(-1)
                state = index_state(state, self._device_array(flat_parents))
            results = []
            for b in range(B):
                pool = list(finished[b])
                if not done[b]:
                    pool += [(scores[b, k] / history.shape[2] ** alpha, history[b, k].tolist())
                             for k in range(K) if scores[b, k] > -np.inf]
                best = max(range(len(pool)), key=lambda i: (pool[i][0], -i)) if pool else None
                results.append([] if best is None else pool[best][1])
        return results

    def generate(self, source, source_lengths=None, max_length=None, beam_size=1, length_penalty=1.0) -> list:
        """Output ids (no <bos>/<eos>) per source: ``greedy_decode`` for ``beam_size=1``, else ``beam_search``.

        ``source``: padded ids (B, S) with ``source_lengths``, or a list of id sequences.
        ``max_length`` (tokens, <eos> aside) defaults to 2 * the longest source + 10."""
        if check_positive("beam_size", beam_size) == 1:
            return self.greedy_decode(source, source_lengths, max_length)
        return self.beam_search(source, source_lengths, max_length, beam_size, length_penalty)

    def extra_repr(self):
        return f"task={self.task!r}, attention={self.attention_kind!r}, cell={self.cell!r}"
