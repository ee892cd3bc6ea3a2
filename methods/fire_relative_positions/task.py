"""Synthetic long-context language-modelling proxy, generated in code.

A fixed random "language" (drawn once from ``language_seed``, shared by every training seed):
an order-1 Markov chain over ``vocab_size`` tokens in which every token has ``branching``
possible successors with Dirichlet(1) weights (local structure). Two long-range components:

* topic: ``topic_vocab`` extra tokens (ids ``vocab_size`` and up) that the Markov chain never
  emits. Every sequence draws its own random set of ``topic_size`` of them; at each position, with
  probability ``topic_prob``, the token is drawn uniformly from that set instead of from the chain,
  and the chain then continues from its last Markov token (so the local prediction needs to look
  past interjected topic tokens: position information matters locally). Only the sequence's earlier
  tokens reveal its topic set, and the further back a model can look, the more of the set it has
  seen: the ideal loss *decreases* with context length, like natural-language perplexity.
* copying: at every position not inside a copy, with probability ``copy_prob`` the source starts
repeating an earlier span of the same sequence (length uniform in [span_min, span_max], start
uniform over all earlier positions at least ``span_min`` back), LZ77-style. After the first
copied token, every copied token is predictable from the context (an induction pattern) at
distances up to the current position, so at 4x the training length the useful context lies up
to 4x further back than anything seen in training. The process is stationary: a model that
generalizes in length has the same per-token loss at every length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class LMBatch:
    tokens: torch.Tensor  # (B, n) int64
    copy: torch.Tensor  # (B, n) bool: token is inside a copy and not its first token (predictable)
    topic: torch.Tensor  # (B, n) bool: token was drawn from the sequence's topic set

    def to(self, device) -> "LMBatch":
        return LMBatch(self.tokens.to(device), self.copy.to(device), self.topic.to(device))

    def select(self, sl: slice) -> "LMBatch":
        return LMBatch(self.tokens[sl], self.copy[sl], self.topic[sl])


class CopyMarkovSource:
    def __init__(self, *, vocab_size: int, branching: int, copy_prob: float, span_min: int, span_max: int,
                 language_seed: int, topic_vocab: int = 0, topic_size: int = 0, topic_prob: float = 0.0):
        if not 1 <= branching <= vocab_size:
            raise ValueError("need 1 <= branching <= vocab_size")
        if not 1 <= span_min <= span_max:
            raise ValueError("need 1 <= span_min <= span_max")
        if topic_prob > 0 and not 1 <= topic_size <= topic_vocab:
            raise ValueError("topic_prob > 0 needs 1 <= topic_size <= topic_vocab")
        self.V, self.copy_prob, self.span_min, self.span_max = vocab_size, copy_prob, span_min, span_max
        self.topic_vocab, self.topic_size, self.topic_prob = topic_vocab, topic_size, topic_prob
        self.n_tokens = vocab_size + topic_vocab  # model vocabulary
        g = torch.Generator().manual_seed(language_seed)
        succ = torch.stack([torch.randperm(vocab_size, generator=g)[:branching] for _ in range(vocab_size)])
        w = -torch.log(torch.rand(vocab_size, branching, generator=g))  # Dirichlet(1) via normalized Exp(1)
        w = w / w.sum(1, keepdim=True)
        self.trans = torch.zeros(vocab_size, vocab_size).scatter_(1, succ, w)  # rows sum to 1
        self.succ, self.cumw = succ, w.cumsum(1)
        self.cumw[:, -1] = 1.0

    def markov_entropy(self) -> float:
        """Entropy rate (nats) of the Markov part under its stationary distribution."""
        p = torch.full((self.V,), 1.0 / self.V, dtype=torch.float64)
        T = self.trans.double()
        for _ in range(500):
            p = p @ T
        h_row = -(T * torch.log(T.clamp_min(1e-300))).sum(1)
        return float((p * h_row).sum())

    def sample(self, gen: torch.Generator, batch: int, n: int) -> LMBatch:
        V = self.V
        x = torch.zeros(batch, n, dtype=torch.long)
        is_copy = torch.zeros(batch, n, dtype=torch.bool)
        rem = torch.zeros(batch, dtype=torch.long)
        src = torch.zeros(batch, dtype=torch.long)
        rows = torch.arange(batch)
        state = torch.randint(0, V, (batch,), generator=gen)  # last Markov token
        x[:, 0] = state
        u_copy = torch.rand(batch, n, generator=gen)
        u_next = torch.rand(batch, n, generator=gen)
        u_start = torch.rand(batch, n, generator=gen)
        spans = torch.randint(self.span_min, self.span_max + 1, (batch, n), generator=gen)
        is_topic = torch.zeros(batch, n, dtype=torch.bool)
        if self.topic_prob > 0:
            topics = V + torch.rand(batch, self.topic_vocab, generator=gen).argsort(1)[:, : self.topic_size]
            pick = topics.gather(1, torch.randint(0, self.topic_size, (batch, n), generator=gen))  # (B, n)
            is_topic = torch.rand(batch, n, generator=gen) < self.topic_prob
            x[:, 0] = torch.where(is_topic[:, 0], pick[:, 0], x[:, 0])
        for t in range(1, n):
            k = (u_next[:, t, None] > self.cumw[state]).sum(1).clamp_max(self.succ.shape[1] - 1)
            nxt = self.succ[state, k]  # Markov successor of the last Markov token, by inverse CDF
            if self.topic_prob > 0:
                nxt = torch.where(is_topic[:, t], pick[:, t], nxt)
            u, span, start_u = u_copy[:, t], spans[:, t], u_start[:, t]
            copying = rem > 0
            start = (~copying) & (u < self.copy_prob) & (t >= self.span_min)
            # start uniform in [0, t - span_min]: the source lies at least span_min tokens back
            s0 = (start_u * (t - self.span_min + 1)).floor().long().clamp(0, max(0, t - self.span_min))
            src = torch.where(start, s0, src)
            rem = torch.where(start, span, rem)
            active = rem > 0
            tok = torch.where(active, x[rows, src.clamp_max(t - 1)], nxt)
            x[:, t] = tok
            state = torch.where(tok < V, tok, state)
            is_copy[:, t] = copying & active  # continuing copies only: the first copied token is a surprise
            is_topic[:, t] &= ~active
            src = torch.where(active, src + 1, src)
            rem = torch.where(active, rem - 1, rem)
        return LMBatch(x, is_copy, is_topic)

    def ideal_topic_nll(self, batch: LMBatch) -> torch.Tensor:
        """Bayes-optimal next-token NLL (nats) of every topic token given the tokens before it, shape
        (B, n-1) aligned with the targets ``tokens[:, 1:]``; NaN where the target is not a topic token.

        A position is a topic draw with probability ``topic_prob`` whatever came before, and the topic ids
        never occur otherwise, so -log topic_prob is unavoidable. If k distinct topic ids have appeared so far,
        the sequence's set holds them plus topic_size - k ids drawn uniformly from the topic_vocab - k
        others: a seen id has probability 1 / topic_size, an unseen one (topic_size - k) / topic_size /
        (topic_vocab - k). The further back a model can use the context, the closer it can get to this.
        Defined for copy_prob = 0 only (a copied span suspends the topic draws)."""
        if self.copy_prob > 0 or self.topic_prob <= 0:
            raise ValueError("the ideal topic-token loss is defined for copy_prob = 0 and topic_prob > 0")
        S, Vt = self.topic_size, self.topic_vocab
        B, n = batch.tokens.shape
        out = torch.full((B, n - 1), float("nan"), dtype=torch.float64)
        pos = torch.arange(n)
        for r in range(B):
            top = batch.topic[r]
            ids = batch.tokens[r][top] - self.V
            first = torch.full((Vt,), n, dtype=torch.long).scatter_reduce(0, ids, pos[top], "amin")
            seen_first = first[first < n].sort().values
            t = pos[1:][top[1:]]  # target positions holding a topic token
            a = batch.tokens[r, t] - self.V
            k = torch.searchsorted(seen_first, t).double()  # distinct ids strictly before t
            seen = first[a] < t
            p = torch.where(seen, torch.full_like(k, 1.0 / S), (S - k) / S / (Vt - k))
            out[r, t - 1] = -math.log(self.topic_prob) - torch.log(p)
        return out
