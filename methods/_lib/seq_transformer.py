"""The decoder-only Transformer of the length-generalization methods, with pluggable positions.

Default architecture: the T5-style decoder-only model used by Position Coupling (Cho et al.,
2024): token embedding plus an optional learned absolute position embedding looked up at
*scheme-dependent* position IDs, causal multi-head attention without 1/sqrt(d) scaling
(Mesh-TF initialization instead), gated-GELU feed-forward, RMSNorm applied before *and*
after each residual sub-block ("pre_post"), a final RMSNorm, no biases, and an output layer
tied to the token embedding (with the T5 d_model**-0.5 rescaling). Relative schemes (FIRE,
RoPE, T5 RPE, ALiBi, Kerple; ``relpos``) plug into the attention of the same model
(``DecoderOnlyTransformer(rel_encoding=...)``). The GPT-2 architecture of the formal framework
paper (``seq_train.GPT2Decoder``) takes the same position-ID schemes.

Position schemes map a ``SeqBatch`` to position IDs (or ``None`` for NoPE):

* ``absolute`` -- ordinary sequential IDs 0, 1, 2, ... (learned APE baseline).
* ``coupled``  -- the task's structural IDs (``SeqBatch.coupled_ids``), shifted during
  training by a random per-example offset so that every ID up to ``max_pos`` is trained.
* ``nope``     -- no position embedding at all (causal mask only).
* ``random_offset`` -- sequential IDs with a random per-example starting offset during
  training (IDs up to ``max_pos`` all get trained), plain 0, 1, 2, ... at test time: the
  "random-start APE" baseline of Position Coupling (after Ruoss et al., 2023).
* ``random_offset_example`` -- like ``random_offset``, but each example's shift is uniform in
  ``[0, max_pos - (own length - 1)]`` from its own unpadded length (PAD = token 0; PAD positions
  repeat the last id), as in the official code of Huang et al. (2025).

Add a scheme by adding a function to ``SCHEMES`` and, if it needs an embedding table, a case
in ``table_size``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from methods._lib import relpos

# ---------------------------------------------------------------------------- position schemes


def _absolute(batch, *, train: bool, max_pos: int, gen: Optional[torch.Generator]) -> torch.Tensor:
    bsz, L = batch.tokens.shape
    return torch.arange(L, device=batch.tokens.device).unsqueeze(0).expand(bsz, L)


def _coupled(batch, *, train: bool, max_pos: int, gen: Optional[torch.Generator]) -> torch.Tensor:
    ids = batch.coupled_ids
    top = int(ids.max())
    if top > max_pos:
        raise ValueError(f"coupled position id {top} exceeds max_pos={max_pos}; raise data.max_pos")
    if not train:
        return ids
    # random starting offset per example: shift in [0, max_pos - max id of that example]
    room = (max_pos - ids.max(dim=1).values).cpu()
    shift = (torch.rand(room.shape, generator=gen) * (room + 1).float()).floor().long().clamp_max(room)
    shift = shift.to(ids.device).unsqueeze(1)
    return torch.where(ids > 0, ids + shift, ids)


def _nope(batch, *, train: bool, max_pos: int, gen: Optional[torch.Generator]) -> None:
    return None


def _random_offset(batch, *, train: bool, max_pos: int, gen: Optional[torch.Generator]) -> torch.Tensor:
    bsz, L = batch.tokens.shape
    if L - 1 > max_pos:
        raise ValueError(f"sequence length {L} needs position ids up to {L - 1} > max_pos={max_pos}")
    ids = torch.arange(L).unsqueeze(0).expand(bsz, L)
    if train:
        # shift uniform in [0, max_pos - (L - 1)], one per example, so every ID up to max_pos is trained
        room = max_pos - (L - 1)
        shift = torch.randint(0, room + 1, (bsz, 1), generator=gen)
        ids = ids + shift
    return ids.to(batch.tokens.device)


def _random_offset_example(batch, *, train: bool, max_pos: int, gen: Optional[torch.Generator]) -> torch.Tensor:
    bsz, L = batch.tokens.shape
    own = (batch.tokens != 0).sum(1).cpu()  # BOS .. EOS (PAD = 0 only at the end); ids are built on CPU
    ids = torch.arange(L).unsqueeze(0).expand(bsz, L)
    if train:
        room = max_pos - (own - 1)
        if bool((room < 0).any()):
            raise ValueError(f"sequence needs position ids beyond max_pos={max_pos}")
        shift = (torch.rand(bsz, generator=gen) * (room + 1).float()).floor().long().clamp_max(room)
        ids = ids + shift.unsqueeze(1)
    last = ids.gather(1, (own - 1).clamp_min(0).unsqueeze(1))
    ids = torch.minimum(ids, last)  # PAD positions repeat the EOS id
    return ids.to(batch.tokens.device)


SCHEMES: dict[str, Callable[..., Optional[torch.Tensor]]] = {
    "absolute": _absolute,
    "coupled": _coupled,
    "nope": _nope,
    "random_offset": _random_offset,
    "random_offset_example": _random_offset_example,
}


def position_ids(scheme: str, batch, *, train: bool, max_pos: int, gen: Optional[torch.Generator] = None):
    return SCHEMES[scheme](batch, train=train, max_pos=max_pos, gen=gen)


def table_size(scheme: str, *, max_pos: int, max_seq_len: int) -> int:
    """Rows of the learned position table a scheme needs (0 = no table)."""
    if scheme == "nope":
        return 0
    if scheme == "absolute":
        return max_seq_len  # covers test lengths; rows beyond training lengths stay untrained
    if scheme == "coupled":
        return max_pos + 1
    if scheme in ("random_offset", "random_offset_example"):
        return max_seq_len  # ids 0 .. max_seq_len - 1: pass max_pos=max_seq_len - 1 to position_ids
    raise KeyError(scheme)


# ---------------------------------------------------------------------------- model


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.norm(2, dim=-1, keepdim=True) * x.shape[-1] ** -0.5
        return self.scale * (x / (rms + self.eps))


class Attention(nn.Module):
    """Causal multi-head attention, no biases. ``scale`` multiplies the scores (T5: 1.0, the
    1/sqrt(d_kv) being folded into the q initialization). ``rel_encoding`` (one of
    ``relpos.ENCODINGS``) adds a relative scheme: an additive bias module, or rotary queries and
    keys; the scores are then formed explicitly (softmax in float32) instead of by the fused kernel."""

    def __init__(self, d_model: int, n_heads: int, d_kv: int, *, scale: float = 1.0,
                 rel_encoding: Optional[str] = None, rel_kw: Optional[dict] = None):
        super().__init__()
        self.n_heads, self.d_kv, self.scale, self.rel_encoding = n_heads, d_kv, scale, rel_encoding
        inner = n_heads * d_kv
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)
        kw = dict(rel_kw or {})
        self.rope_base = float(kw.pop("rope_base", 10000.0))
        # named ``bias``: parameters under ``.bias.`` are position-encoding parameters (own init, no decay)
        self.bias = relpos.make_bias(rel_encoding, n_heads, **kw) if rel_encoding is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, L, _ = x.shape
        split = lambda t: t.view(bsz, L, self.n_heads, self.d_kv).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if self.rel_encoding is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            if self.rel_encoding == "rope":
                cos, sin = relpos.rope_tables(L, self.d_kv, self.rope_base, x.device)
                q, k = relpos.apply_rope(q, cos, sin), relpos.apply_rope(k, cos, sin)
            scores = (q @ k.transpose(-1, -2)) * self.scale
            if self.bias is not None:
                scores = scores + self.bias(L, x.device).to(scores.dtype).unsqueeze(0)
            scores = scores.masked_fill(~relpos.causal_mask(L, x.device), float("-inf"))
            y = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        return self.o(y.transpose(1, 2).reshape(bsz, L, -1))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, act: str):
        super().__init__()
        self.gated = act.startswith("gated-")
        base = act.removeprefix("gated-")
        self.act = {"gelu": lambda t: F.gelu(t, approximate="tanh"), "relu": F.relu}[base]
        self.wi_0 = nn.Linear(d_model, d_ff, bias=False)
        self.wi_1 = nn.Linear(d_model, d_ff, bias=False) if self.gated else None
        self.wo = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wi_0(x))
        if self.wi_1 is not None:
            h = h * self.wi_1(x)
        return self.wo(h)


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_kv: int, d_ff: int, act: str, norm_position: str, **attn_kw):
        super().__init__()
        if norm_position not in ("pre", "post", "pre_post"):
            raise ValueError(f"unknown norm_position {norm_position!r}")
        self.norm_position = norm_position
        self.attn, self.ff = Attention(d_model, n_heads, d_kv, **attn_kw), FeedForward(d_model, d_ff, act)
        pre, post = norm_position in ("pre", "pre_post"), norm_position in ("post", "pre_post")
        self.n1a = RMSNorm(d_model) if pre else None  # before / after the attention sub-block
        self.n1b = RMSNorm(d_model) if post else None
        self.n2a = RMSNorm(d_model) if pre else None  # before / after the feed-forward sub-block
        self.n2b = RMSNorm(d_model) if post else None

    @staticmethod
    def _sub(x, f, pre, post):
        x = x + f(pre(x) if pre is not None else x)
        return post(x) if post is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._sub(x, self.attn, self.n1a, self.n1b)
        return self._sub(x, self.ff, self.n2a, self.n2b)


class DecoderOnlyTransformer(nn.Module):
    """The decoder-only model shared by the length-generalization methods.

    Position information, pluggable: a learned table looked up at scheme-dependent IDs
    (``n_positions`` rows; see ``SCHEMES``; 0 = none) and/or a relative scheme inside attention
    (``rel_encoding``: FIRE, RoPE, T5 RPE, ALiBi, Kerple or NoPE from ``relpos``, hyperparameters in
    ``rel_kw``). Defaults are Position Coupling's T5-style model (RMSNorm before and after each
    sub-block, unscaled scores with Mesh-TF init, output rescaled by d_model**-0.5); the FIRE
    proxy uses ``norm_position="pre"``, ``attn_scale="sqrt"``, ``init="normal"`` (GPT-2-style
    normal(0, 0.02)) and ``output_scale=False``. The output layer is tied to the token embedding.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        n_positions: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_kv: int,
        d_ff: int,
        act: str = "gated-gelu",
        norm_position: str = "pre_post",
        rel_encoding: Optional[str] = None,
        rel_kw: Optional[dict] = None,
        attn_scale: str = "none",
        init: str = "t5",
        output_scale: bool = True,
    ):
        super().__init__()
        if attn_scale not in ("none", "sqrt"):
            raise ValueError(f"unknown attn_scale {attn_scale!r}")
        if init not in ("t5", "normal"):
            raise ValueError(f"unknown init {init!r}")
        self.d_model, self.init, self.output_scale = d_model, init, output_scale
        scale = 1.0 if attn_scale == "none" else d_kv**-0.5
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(n_positions, d_model) if n_positions > 0 else None
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_kv, d_ff, act, norm_position, scale=scale, rel_encoding=rel_encoding,
                  rel_kw=rel_kw)
            for _ in range(n_layers)
        )
        self.final_norm = RMSNorm(d_model)

    @torch.no_grad()
    def init_weights(self, gen: torch.Generator) -> None:
        """Drawn from ``gen`` on CPU, then copied (device-independent).

        ``t5``: Mesh-TF / T5 initialization. ``normal``: normal(0, 0.02) for every matrix outside
        the position-encoding modules; those keep their own init (zeros for T5 RPE), except FIRE's
        MLP, which gets PyTorch's default Linear init drawn from ``gen`` as well."""

        def normal_(p: torch.Tensor, std: float) -> None:
            p.copy_(torch.randn(p.shape, generator=gen) * std)

        if self.init == "normal":
            for name, p in self.named_parameters():
                if p.dim() == 2 and ".bias." not in name:
                    normal_(p, 0.02)
        else:
            d = self.d_model
            normal_(self.tok.weight, 1.0)
            if self.pos is not None:
                normal_(self.pos.weight, 1.0)
            for blk in self.blocks:
                a = blk.attn
                normal_(a.q.weight, (d * a.d_kv) ** -0.5)
                normal_(a.k.weight, d**-0.5)
                normal_(a.v.weight, d**-0.5)
                normal_(a.o.weight, (a.n_heads * a.d_kv) ** -0.5)
                f = blk.ff
                normal_(f.wi_0.weight, d**-0.5)
                if f.wi_1 is not None:
                    normal_(f.wi_1.weight, d**-0.5)
                normal_(f.wo.weight, f.wo.weight.shape[1] ** -0.5)
        for m in self.modules():
            if isinstance(m, relpos.FIREBias):
                m.init_mlp(gen)

    def embed(self, tokens: torch.Tensor, pos_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """Input of the first block: token embedding plus the position table at ``pos_ids``."""
        x = self.tok(tokens)
        if self.pos is not None:
            if pos_ids is None:
                raise ValueError("this model has a position table but got no position ids")
            x = x + self.pos(pos_ids)
        return x

    def forward(self, tokens: torch.Tensor, pos_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.embed(tokens, pos_ids)
        for blk in self.blocks:
            x = blk(x)
        x = self.final_norm(x)
        if self.output_scale:
            x = x * self.d_model**-0.5
        return x @ self.tok.weight.t()  # tied output layer


# ---------------------------------------------------------------------------- training helpers


def cosine_with_warmup(step: int, *, total: int, warmup_frac: float, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up, then cosine decay to ``min_lr_ratio`` (official 'custom_cosine')."""
    warm = int(round(warmup_frac * total))
    if step < warm:
        return step / max(1, warm)
    progress = (step - warm) / max(1, total - warm)
    f = 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(min_lr_ratio, min_lr_ratio + (1.0 - min_lr_ratio) * f)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose target is not ``ignore`` (float32)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore)


def adamw_cosine(params, tc) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (``tc.lr``, ``tc.betas``, ``tc.eps``, ``tc.weight_decay``; ``params`` may be parameter groups)
    with :func:`cosine_with_warmup` over ``tc.steps`` (``tc.warmup_frac``, ``tc.min_lr_ratio``)."""
    opt = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, total=tc.steps, warmup_frac=tc.warmup_frac, min_lr_ratio=tc.min_lr_ratio)
    )
    return opt, sched


@torch.no_grad()
def answer_accuracy(logits: torch.Tensor, targets: torch.Tensor, ignore: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example exact match and token accuracy over the target (answer) positions.

    With teacher forcing, "every answer token is the argmax" is equivalent to greedy decoding
    reproducing the whole answer, so this equals greedy exact-match accuracy.
    """
    mask = targets != ignore
    correct = (logits.argmax(-1) == targets) & mask
    exact = (correct | ~mask).all(dim=1)
    tok = correct.sum(1).float() / mask.sum(1).clamp_min(1).float()
    return exact, tok
