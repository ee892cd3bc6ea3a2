"""Relative position encodings for causal self-attention (used by ``seq_transformer.Attention``).

Additive attention biases ``b[h, i, j]`` (query ``i``, key ``j <= i``, distance ``d = i - j``):

* ``fire``   -- FIRE (Li et al., ICLR 2024, arXiv:2310.04418): a per-head MLP of the
  log-transformed distance with progressive interpolation,
  ``b = f_theta( psi(i - j) / psi(max(L, i)) )``, ``psi(x) = log(c x + 1)``, with ``c > 0`` and
  the threshold ``L`` learnable. ``f_theta``: 1 -> ``mlp_width`` -> n_heads, ReLU.
* ``t5``     -- T5 relative position buckets (exact for small distances, log-spaced up to
  ``max_distance``, one learned scalar per bucket and head).
* ``alibi``  -- ALiBi: ``b = -m_h d`` with fixed geometric head slopes ``m_h = 2^(-8 h / H)``.
* ``kerple`` -- Kerple (logarithmic variant): ``b = -r1_h log(1 + r2_h d)``, ``r1, r2 > 0`` learned.

Query/key transforms:

* ``rope``   -- rotary position embedding (base 10000) on queries and keys.
* ``nope``   -- no position information besides the causal mask.

A model picks one with ``seq_transformer.DecoderOnlyTransformer(rel_encoding=...)``. Every bias
is computed once per forward and layer as an ``(H, n, n)`` tensor shared by the batch.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ENCODINGS = ("fire", "rope", "t5", "alibi", "kerple", "nope")


def rel_distance(n: int, device=None) -> torch.Tensor:
    """``d[i, j] = i - j`` clamped at 0 (the causal mask removes ``j > i``)."""
    pos = torch.arange(n, device=device)
    return (pos[:, None] - pos[None, :]).clamp_min(0)


def causal_mask(n: int, device=None) -> torch.Tensor:
    """True where attention is allowed (``j <= i``)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


# ---------------------------------------------------------------------------- additive biases


class FIREBias(nn.Module):
    """FIRE: ``b(i, j) = f_theta(psi(i - j) / psi(max(L, i)))`` with ``psi(x) = log(c x + 1)``.

    ``c`` and ``L`` are learnable (``L = |L_mult| * init_L``; ``init_L`` sets its scale). ``f_theta`` is a
    ReLU MLP ``1 -> mlp_width (-> mlp_width ...) -> n_heads`` with ``mlp_layers`` hidden layers.
    """

    def __init__(self, n_heads: int, mlp_width: int = 32, init_c: float = 0.1, init_L: float = 512.0,
                 eps: float = 1e-6, mlp_layers: int = 1):
        super().__init__()
        if mlp_layers < 1:
            raise ValueError("FIRE needs at least one hidden layer")
        layers: list[nn.Module] = [nn.Linear(1, mlp_width), nn.ReLU()]
        for _ in range(mlp_layers - 1):
            layers += [nn.Linear(mlp_width, mlp_width), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(mlp_width, n_heads))
        self.c = nn.Parameter(torch.tensor(float(init_c)))
        self.init_L = float(init_L)
        self.L_mult = nn.Parameter(torch.tensor(1.0))
        self.eps = eps

    def threshold(self) -> torch.Tensor:
        return self.L_mult.abs() * self.init_L

    def normalized(self, n: int, device=None) -> torch.Tensor:
        """The MLP input ``psi(i - j) / psi(max(L, i))`` for ``i, j < n``, shape ``(n, n)``, in [0, 1]."""
        c = self.c.abs() + self.eps
        d = rel_distance(n, device).to(c.dtype)
        q = torch.arange(n, device=device, dtype=c.dtype)
        num = torch.log(c * d + 1.0)
        den = torch.log(c * torch.maximum(q, self.threshold()) + 1.0)
        return num / (den[:, None] + self.eps)

    # Without gradients (evaluation), the MLP runs on blocks of query rows once its hidden activations would
    # exceed this many floats: at 8192 tokens and width 32 they take 2 x 8.6 GB at once otherwise (ReLU input
    # and output), which ran a 24 GB machine out of memory. Each bias entry depends on its own input only.
    chunk_elems = 1 << 24

    def forward(self, n: int, device=None) -> torch.Tensor:
        x = self.normalized(n, device)
        width = self.mlp[0].out_features
        if torch.is_grad_enabled() or n * n * width <= self.chunk_elems:
            return self.mlp(x.unsqueeze(-1)).permute(2, 0, 1)  # (H, n, n)
        rows = max(1, self.chunk_elems // (n * width))
        out = x.new_empty(self.mlp[-1].out_features, n, n)
        for start in range(0, n, rows):
            out[:, start:start + rows] = self.mlp(x[start:start + rows].unsqueeze(-1)).permute(2, 0, 1)
        return out

    @torch.no_grad()
    def init_mlp(self, gen: torch.Generator) -> None:
        """PyTorch's default Linear init for the MLP, drawn from ``gen`` (device-independent runs)."""
        for lin in (m for m in self.mlp if isinstance(m, nn.Linear)):
            bound = lin.in_features**-0.5
            lin.weight.copy_((torch.rand(lin.weight.shape, generator=gen) * 2 - 1) * bound)
            lin.bias.copy_((torch.rand(lin.bias.shape, generator=gen) * 2 - 1) * bound)


def t5_bucket(d: torch.Tensor, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """Causal (one-directional) T5 bucket of a non-negative distance ``d``."""
    max_exact = num_buckets // 2
    small = d < max_exact
    dl = d.float().clamp_min(1.0)
    large = max_exact + (
        torch.log(dl / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp_max(num_buckets - 1)
    return torch.where(small, d, large)


class T5Bias(nn.Module):
    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.table = nn.Embedding(num_buckets, n_heads)
        nn.init.zeros_(self.table.weight)

    def forward(self, n: int, device=None) -> torch.Tensor:
        b = t5_bucket(rel_distance(n, device), self.num_buckets, self.max_distance)
        return self.table(b).permute(2, 0, 1)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's head slopes (Press et al., 2022). For a power-of-two head count H, the geometric sequence
    ``2^(-8 h / H)``, h = 1..H. Otherwise the sequence of the largest power of two P below H, followed by the
    odd-numbered terms of the 2P-head sequence (``2^(-8 h / 2P)``, h = 1, 3, 5, ...) until there are H
    slopes, which keeps every slope in the same range (for H = 12: 2^-1 .. 2^-8, then 2^-0.5 .. 2^-3.5)."""
    def geometric(h: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / h) for i in range(h)]

    p = 1 << (n_heads.bit_length() - 1)  # largest power of two <= n_heads
    slopes = geometric(p) + geometric(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes)


class ALiBiBias(nn.Module):
    def __init__(self, n_heads: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def forward(self, n: int, device=None) -> torch.Tensor:
        d = rel_distance(n, device).to(self.slopes.dtype)
        return -self.slopes[:, None, None] * d


class KerpleLogBias(nn.Module):
    """Kerple, logarithmic variant: ``-r1 log(1 + r2 d)`` with per-head ``r1, r2 > 0`` (softplus)."""

    def __init__(self, n_heads: int, init_r1: float = 1.0, init_r2: float = 1.0):
        super().__init__()
        inv = lambda v: math.log(math.expm1(v))  # noqa: E731  inverse softplus
        self.r1_raw = nn.Parameter(torch.full((n_heads,), inv(init_r1)))
        self.r2_raw = nn.Parameter(torch.full((n_heads,), inv(init_r2)))

    def forward(self, n: int, device=None) -> torch.Tensor:
        r1, r2 = F.softplus(self.r1_raw), F.softplus(self.r2_raw)
        d = rel_distance(n, device).to(r1.dtype)
        return -r1[:, None, None] * torch.log1p(r2[:, None, None] * d)


def make_bias(encoding: str, n_heads: int, **kw) -> Optional[nn.Module]:
    if encoding == "fire":
        return FIREBias(n_heads, mlp_width=kw.get("fire_mlp_width", 32), init_c=kw.get("fire_init_c", 0.1),
                        init_L=kw.get("fire_init_L", 512.0), mlp_layers=kw.get("fire_mlp_layers", 1))
    if encoding == "t5":
        return T5Bias(n_heads, kw.get("t5_num_buckets", 32), kw.get("t5_max_distance", 128))
    if encoding == "alibi":
        return ALiBiBias(n_heads)
    if encoding == "kerple":
        return KerpleLogBias(n_heads)
    if encoding in ("rope", "nope"):
        return None
    raise KeyError(f"unknown encoding {encoding!r}; known: {ENCODINGS}")


# ---------------------------------------------------------------------------- rotary


def rope_tables(n: int, d_kv: int, base: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv = base ** (-torch.arange(0, d_kv, 2, device=device, dtype=torch.float32) / d_kv)
    ang = torch.arange(n, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()  # (n, d_kv/2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of the last dim of ``x`` (..., n, d_kv) by position-dependent angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    y1 = x1 * cos - x2 * sin
    y2 = x1 * sin + x2 * cos
    return torch.stack((y1, y2), dim=-1).flatten(-2)
