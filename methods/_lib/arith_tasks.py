"""Synthetic arithmetic tasks for length-generalization experiments.

Everything is vectorized in torch and driven by an explicit ``torch.Generator`` (CPU), so
data are identical across devices; move the resulting ``SeqBatch`` with ``.to(device)``.

Token layout (decoder-only, one sequence per example)::

    [BOS] a_{n-1} .. a_0 + b_{n-1} .. b_0 = s_0 s_1 .. s_n [EOS] [PAD]...

Operands are written most-significant digit first and zero-padded to the common length
``n = max(len(a), len(b))``; the sum is written reversed (least-significant digit first) and
zero-padded to ``n + 1`` digits (the "reversed output + zero padding" format of Lee et al.,
used by Position Coupling, Cho et al. 2024).

Each batch carries, besides tokens and next-token targets, *structural* position IDs
(``coupled_ids``): the task's notion of which tokens belong together. For addition, all digits
of the same significance share an ID (2 + significance), ``+`` and ``=`` share ID 1 and BOS,
EOS and PAD get 0; this is the coupling with starting offset 1. Position schemes in
``seq_transformer`` turn these into the IDs a model sees (possibly with a random offset).
New tasks (multi-operand addition, copy, ...) only need to produce a ``SeqBatch`` with their
own ``coupled_ids``. N x M multiplication (``multiplication_nx1``/``_nx2``, Position Coupling
Sec. 6) uses ``[BOS] a * b = product-reversed [EOS]`` with its own ``*`` token (vocabulary
``MUL_VOCAB_SIZE``); digits of equal significance in a, b and the product share an ID.
Addition of k summands (``multisummand_3``/``_4``, the official MultipleAdditionDataset format) uses
``[BOS] x1 + .. + xk = sum-reversed [EOS]`` with every summand and the sum zero-padded to the width of
the largest possible sum; digits of equal significance in all summands and the sum share an ID.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PAD, EOS, BOS = 0, 1, 1  # BOS doubles as EOS (as in the official code)
DIGIT0 = 2  # digits 0..9 -> token ids 2..11
PLUS, EQ = 12, 13
VOCAB_SIZE = 14  # addition's vocabulary (kept as is so addition models are unchanged)
TIMES = 14  # multiplication sign; only multiplication tasks use it
MUL_VOCAB_SIZE = 15
IGNORE = -100


@dataclass
class SeqBatch:
    tokens: torch.Tensor  # [B, L] long
    targets: torch.Tensor  # [B, L] long, next-token target or IGNORE
    coupled_ids: torch.Tensor  # [B, L] long, task-structural position IDs (offset 1), 0 for BOS/EOS/PAD

    def to(self, device: str | torch.device) -> "SeqBatch":
        return SeqBatch(*(t.to(device, non_blocking=True) for t in (self.tokens, self.targets, self.coupled_ids)))

    @property
    def answer_mask(self) -> torch.Tensor:
        return self.targets != IGNORE


@dataclass
class Operands:
    """Two operands per example, digits least-significant first, zero beyond each operand's length."""

    a: torch.Tensor  # [M, N] uint8
    b: torch.Tensor  # [M, N] uint8
    n: torch.Tensor  # [M] long, common (padded) operand length max(len a, len b)

    def __len__(self) -> int:
        return self.n.shape[0]

    def select(self, idx: torch.Tensor) -> "Operands":
        n = self.n[idx]
        w = int(n.max())
        return Operands(self.a[idx, :w], self.b[idx, :w], n)


def _random_numbers(gen: torch.Generator, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Uniform random integers with the given digit counts (leading digit non-zero unless 1 digit)."""
    m = lengths.shape[0]
    digits = torch.randint(0, 10, (m, width), generator=gen)
    lead = torch.randint(1, 10, (m,), generator=gen)
    k = torch.arange(width).unsqueeze(0)
    top = (lengths - 1).unsqueeze(1)
    digits = torch.where((k == top) & (lengths.unsqueeze(1) > 1), lead.unsqueeze(1), digits)
    digits = torch.where(k > top, torch.zeros_like(digits), digits)
    return digits.to(torch.uint8)


def sample_addition_operands(
    gen: torch.Generator, m: int, min_digits: int, max_digits: int
) -> Operands:
    """``m`` problems; each operand's digit count is drawn independently and uniformly
    from [min_digits, max_digits] (so a test set with min == max has both operands of that length)."""
    la = torch.randint(min_digits, max_digits + 1, (m,), generator=gen)
    lb = torch.randint(min_digits, max_digits + 1, (m,), generator=gen)
    a = _random_numbers(gen, la, max_digits)
    b = _random_numbers(gen, lb, max_digits)
    return Operands(a, b, torch.maximum(la, lb))


def encode_addition(ops: Operands) -> SeqBatch:
    """Tokens, next-token targets (answer digits + EOS only) and coupled position IDs."""
    n = ops.n.long()
    bsz = n.shape[0]
    w = int(n.max())
    a = ops.a[:, :w].long()
    b = ops.b[:, :w].long()
    # sum digits, least significant first, n+1 of them (carry loop over columns)
    s = torch.zeros(bsz, w + 1, dtype=torch.long)
    carry = torch.zeros(bsz, dtype=torch.long)
    for k in range(w):
        t = a[:, k] + b[:, k] + carry
        s[:, k] = t % 10
        carry = t // 10
    s[:, w] = carry
    # a column beyond an example's own n holds zeros, and its carry is 0 there, so s[:, n] is correct

    L = 3 * w + 5
    j = torch.arange(L).unsqueeze(0)  # [1, L]
    nn_ = n.unsqueeze(1)  # [B, 1]
    in_a = (j >= 1) & (j <= nn_)
    is_plus = j == nn_ + 1
    in_b = (j >= nn_ + 2) & (j <= 2 * nn_ + 1)
    is_eq = j == 2 * nn_ + 2
    in_s = (j >= 2 * nn_ + 3) & (j <= 3 * nn_ + 3)
    is_eos = j == 3 * nn_ + 4

    ka = (nn_ - j).clamp(0, w - 1)
    kb = (2 * nn_ + 1 - j).clamp(0, w - 1)
    ks = (j - (2 * nn_ + 3)).clamp(0, w)
    da = torch.gather(a, 1, ka)
    db = torch.gather(b, 1, kb)
    ds = torch.gather(s, 1, ks)

    return _assemble(bsz, L, digits=[(in_a, da, ka), (in_b, db, kb), (in_s, ds, ks)],
                     symbols=[(is_plus, PLUS), (is_eq, EQ), (is_eos, EOS)], answer=in_s | is_eos)


def _assemble(bsz: int, L: int, *, digits, symbols, answer: torch.Tensor) -> SeqBatch:
    """Tokens, next-token targets and coupled ids of a two-operand arithmetic layout.

    ``digits``: (mask, digit values, significance) per digit segment; a digit of significance k gets the
    coupled id 2 + k. ``symbols``: (mask, token id); operators get the coupled id 1, EOS (and BOS, PAD) 0.
    Position j predicts token j+1 when that is part of the ``answer`` (answer digits and the final EOS).
    """
    tokens = torch.full((bsz, L), PAD, dtype=torch.long)
    tokens[:, 0] = BOS
    coupled = torch.zeros_like(tokens)
    for mask, vals, sig in digits:
        tokens = torch.where(mask, DIGIT0 + vals, tokens)
        coupled = torch.where(mask, 2 + sig, coupled)
    for mask, tok in symbols:
        tokens = torch.where(mask, torch.full_like(tokens, tok), tokens)
        if tok != EOS:
            coupled = torch.where(mask, torch.ones_like(coupled), coupled)
    targets = torch.full_like(tokens, IGNORE)
    targets[:, :-1] = torch.where(answer[:, 1:], tokens[:, 1:], torch.full_like(tokens[:, 1:], IGNORE))
    return SeqBatch(tokens, targets, coupled)


def decode_tokens(tokens: torch.Tensor) -> str:
    """Human-readable rendering of one token row (for debugging and sample dumps)."""
    out = []
    for t in tokens.tolist():
        if t == PAD:
            continue
        out.append({EOS: "$", PLUS: "+", EQ: "=", TIMES: "*"}.get(t, str(t - DIGIT0)))
    return "".join(out)


class AdditionTask:
    """Two-operand integer addition, reversed output, zero padding."""

    name = "addition"
    vocab_size = VOCAB_SIZE

    @staticmethod
    def max_coupled_id(n_digits: int) -> int:
        return n_digits + 2  # start (1) + len(answer) (n + 1)

    @staticmethod
    def seq_len(n_digits: int) -> int:
        return 3 * n_digits + 5

    @staticmethod
    def sample(gen: torch.Generator, m: int, min_digits: int, max_digits: int) -> Operands:
        return sample_addition_operands(gen, m, min_digits, max_digits)

    @staticmethod
    def encode(ops: Operands) -> SeqBatch:
        return encode_addition(ops)


# ---------------------------------------------------------------------------- N x M multiplication


@dataclass
class MulOperands:
    """N x M multiplication problems: ``a`` has ``n`` digits (leading digit non-zero unless n == 1),
    ``b`` has exactly ``M`` digits written with leading zeros (uniform in [0, 10**M)). Digits are stored
    least-significant first; ``a`` is zero beyond its own length."""

    a: torch.Tensor  # [K, W] uint8
    b: torch.Tensor  # [K, M] uint8
    n: torch.Tensor  # [K] long, digit count of a

    def __len__(self) -> int:
        return self.n.shape[0]

    def select(self, idx: torch.Tensor) -> "MulOperands":
        n = self.n[idx]
        return MulOperands(self.a[idx, : int(n.max())], self.b[idx], n)


def sample_multiplication_operands(
    gen: torch.Generator, k: int, min_digits: int, max_digits: int, m_digits: int
) -> MulOperands:
    """``k`` problems; the first operand's digit count is uniform in [min_digits, max_digits] (as in the
    official NxMMultiplicationDataset), the second operand is ``m_digits`` uniform digits."""
    n = torch.randint(min_digits, max_digits + 1, (k,), generator=gen)
    a = _random_numbers(gen, n, max_digits)
    b = torch.randint(0, 10, (k, m_digits), generator=gen).to(torch.uint8)
    return MulOperands(a, b, n)


def encode_multiplication(ops: MulOperands) -> SeqBatch:
    """Layout ``[BOS] a_{n-1}..a_0 * b_{M-1}..b_0 = p_0 .. p_{n+M-1} [EOS]``: the product zero-padded
    to n + M digits and written least-significant digit first. Coupled IDs: 2 + significance for
    every digit of a, b and the product; ``*`` and ``=`` get 1 (significance -1); BOS/EOS/PAD 0."""
    n = ops.n.long()
    bsz = n.shape[0]
    w = int(n.max())
    mdig = ops.b.shape[1]
    a = ops.a[:, :w].long()
    b = ops.b.long()
    P = w + mdig  # product digits of the widest example
    # schoolbook column sums, then carries
    col = torch.zeros(bsz, P, dtype=torch.long)
    for j in range(mdig):
        col[:, j : j + w] += a * b[:, j : j + 1]
    p = torch.zeros(bsz, P, dtype=torch.long)
    carry = torch.zeros(bsz, dtype=torch.long)
    for k in range(P):
        t = col[:, k] + carry
        p[:, k] = t % 10
        carry = t // 10
    # the product of an n-digit by an M-digit number has at most n + M digits, so columns beyond an
    # example's own n + M are zero

    L = 2 * w + 2 * mdig + 4
    j = torch.arange(L).unsqueeze(0)
    nn_ = n.unsqueeze(1)
    in_a = (j >= 1) & (j <= nn_)
    is_times = j == nn_ + 1
    in_b = (j >= nn_ + 2) & (j <= nn_ + mdig + 1)
    is_eq = j == nn_ + mdig + 2
    in_p = (j >= nn_ + mdig + 3) & (j <= 2 * nn_ + 2 * mdig + 2)
    is_eos = j == 2 * nn_ + 2 * mdig + 3

    ka = (nn_ - j).clamp(0, w - 1)
    kb = (nn_ + mdig + 1 - j).clamp(0, mdig - 1)
    kp = (j - (nn_ + mdig + 3)).clamp(0, P - 1)
    da = torch.gather(a, 1, ka)
    db = torch.gather(b, 1, kb)
    dp = torch.gather(p, 1, kp)

    return _assemble(bsz, L, digits=[(in_a, da, ka), (in_b, db, kb), (in_p, dp, kp)],
                     symbols=[(is_times, TIMES), (is_eq, EQ), (is_eos, EOS)], answer=in_p | is_eos)


class MultiplicationTask:
    """N x M integer multiplication (second operand of fixed length M), reversed zero-padded product."""

    vocab_size = MUL_VOCAB_SIZE

    def __init__(self, m_digits: int):
        self.m = m_digits
        self.name = f"multiplication_nx{m_digits}"
        self.metric_tag = f"nx{m_digits}_"  # keeps metric names apart from addition's

    def max_coupled_id(self, n_digits: int) -> int:
        return n_digits + self.m + 1  # start (1) + len(answer) (n + M)

    def seq_len(self, n_digits: int) -> int:
        return 2 * n_digits + 2 * self.m + 4

    def sample(self, gen: torch.Generator, k: int, min_digits: int, max_digits: int) -> MulOperands:
        return sample_multiplication_operands(gen, k, min_digits, max_digits, self.m)

    @staticmethod
    def encode(ops: MulOperands) -> SeqBatch:
        return encode_multiplication(ops)


# ---------------------------------------------------------------------------- multi-summand addition


@dataclass
class MultiOperands:
    """``k`` summands per example, digits least-significant first, zero beyond each summand's length."""

    x: torch.Tensor  # [M, k, W] uint8
    n: torch.Tensor  # [M] long, longest summand's digit count

    def __len__(self) -> int:
        return self.n.shape[0]

    def select(self, idx: torch.Tensor) -> "MultiOperands":
        n = self.n[idx]
        return MultiOperands(self.x[idx, :, : int(n.max())], n)


def sum_width(n_digits: int, k: int) -> int:
    """Digits of the largest possible sum of ``k`` numbers of at most ``n_digits`` digits: the common width of
    every summand and of the answer in the official MultipleAdditionDataset (n + 1 for 2 <= k <= 10)."""
    return len(str(k * (10**n_digits - 1)))


def padded_sum_width(n: torch.Tensor, k: int) -> torch.Tensor:
    """``sum_width`` per example (``n``: each example's longest summand's digit count)."""
    table = torch.tensor([sum_width(d, k) for d in range(int(n.max()) + 1)], dtype=torch.long)
    return table[n.long()]


def sample_multi_summand_operands(
    gen: torch.Generator, m: int, k: int, min_digits: int, max_digits: int, same_length_prob: float
) -> MultiOperands:
    """``m`` problems of ``k`` summands. With probability ``same_length_prob`` all summands of a problem get
    one digit count uniform in [min_digits, max_digits], otherwise each summand's count is drawn
    independently (the official ``partially_uniform`` sampling; min == max gives every summand that length)."""
    own = torch.randint(min_digits, max_digits + 1, (m, k), generator=gen)
    shared = torch.randint(min_digits, max_digits + 1, (m, 1), generator=gen)
    same = torch.rand(m, 1, generator=gen) < same_length_prob
    lengths = torch.where(same, shared.expand(m, k), own)
    x = _random_numbers(gen, lengths.flatten(), max_digits).view(m, k, max_digits)
    return MultiOperands(x, lengths.max(dim=1).values)


def encode_multi_summand(ops: MultiOperands) -> SeqBatch:
    """Layout ``[BOS] x1 + x2 + .. + xk = s_0 .. s_{w-1} [EOS]``: every summand written most-significant digit
    first and zero-padded to ``w = padded_sum_width(n, k)`` digits, the sum zero-padded to ``w`` digits and
    written least-significant digit first (official MultipleAdditionDataset: reverse_output, padding to the
    largest possible sum's width). Coupled IDs: 2 + significance for the digits of every summand and of the
    sum, 1 for every ``+`` and the ``=``, 0 for BOS/EOS/PAD."""
    bsz, k, _ = ops.x.shape
    w_ex = padded_sum_width(ops.n, k)  # [B] per-example width
    W = int(w_ex.max())
    x = torch.zeros(bsz, k, W, dtype=torch.long)
    width = min(W, ops.x.shape[2])
    x[:, :, :width] = ops.x[:, :, :width].long()
    # column sums with carries, least significant first; a column beyond an example's own width is 0
    s = torch.zeros(bsz, W, dtype=torch.long)
    carry = torch.zeros(bsz, dtype=torch.long)
    for c in range(W):
        t = x[:, :, c].sum(1) + carry
        s[:, c] = t % 10
        carry = t // 10

    L = k * (W + 1) + W + 2
    j = torch.arange(L).unsqueeze(0)
    w = w_ex.unsqueeze(1)
    digits = []
    for i in range(k):
        first = 1 + i * (w + 1)  # position of summand i's most significant digit
        mask = (j >= first) & (j < first + w)
        sig = (first + w - 1 - j).clamp(0, W - 1)
        digits.append((mask, torch.gather(x[:, i], 1, sig), sig))
    is_plus = torch.zeros(bsz, L, dtype=torch.bool)
    for i in range(1, k):
        is_plus |= j == i * (w + 1)
    is_eq = j == k * (w + 1)
    in_s = (j > k * (w + 1)) & (j <= k * (w + 1) + w)
    ks = (j - (k * (w + 1) + 1)).clamp(0, W - 1)
    digits.append((in_s, torch.gather(s, 1, ks), ks))
    is_eos = j == k * (w + 1) + w + 1
    return _assemble(bsz, L, digits=digits, symbols=[(is_plus, PLUS), (is_eq, EQ), (is_eos, EOS)],
                     answer=in_s | is_eos)


class MultiSummandTask:
    """Addition of ``k`` summands (Position Coupling, official scripts/triple_addition for k = 3), all summands
    and the reversed sum zero-padded to the largest possible sum's width; addition's 14-token vocabulary."""

    vocab_size = VOCAB_SIZE
    same_length_prob = 0.5  # official multiple_addition_coupled.yaml: threshold_partially_uniform 0.5

    def __init__(self, k: int):
        if k < 2:
            raise ValueError("need at least two summands")
        self.k = k
        self.name = f"multisummand_{k}"
        self.metric_tag = f"sum{k}_"  # keeps metric names apart from two-operand addition's

    def width(self, n_digits: int) -> int:
        return sum_width(n_digits, self.k)

    def max_coupled_id(self, n_digits: int) -> int:
        return self.width(n_digits) + 1  # start (1) + len(answer)

    def seq_len(self, n_digits: int) -> int:
        w = self.width(n_digits)
        return self.k * (w + 1) + w + 2

    def sample(self, gen: torch.Generator, m: int, min_digits: int, max_digits: int) -> MultiOperands:
        return sample_multi_summand_operands(gen, m, self.k, min_digits, max_digits, self.same_length_prob)

    @staticmethod
    def encode(ops: MultiOperands) -> SeqBatch:
        return encode_multi_summand(ops)


TASKS = {
    "addition": AdditionTask,
    "multiplication_nx1": MultiplicationTask(1),
    "multiplication_nx2": MultiplicationTask(2),
    "multisummand_3": MultiSummandTask(3),
    "multisummand_4": MultiSummandTask(4),
}
