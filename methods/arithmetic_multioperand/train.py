"""Model and training loop for multi-operand addition (imported lazily by ``run``)."""
from __future__ import annotations

import random
import time
from typing import Optional

import torch
from torch import nn

from methods._lib import seq_transformer as st
from methods._lib.training import optimize

from . import task as T

# variant -> (scratchpad?, number of position levels: 2 = bi-level coupling, 1 = digit-level coupling, 0 = NoPE)
VARIANTS: dict[str, tuple[bool, int]] = {
    "scratchpad_coupled": (True, 2),
    "noscratchpad_coupled": (False, 1),
    "scratchpad_nope": (True, 0),
}


class MultiLevelPETransformer(st.DecoderOnlyTransformer):
    """The shared decoder-only model with one learned position table per coupling level; the
    embeddings of a token's IDs at every level are added to its token embedding (official
    ``d_positions=2, share_pe=False``). ``table_sizes=[]`` gives NoPE."""

    def __init__(self, *, table_sizes: list[int], **kw):
        super().__init__(n_positions=0, **kw)
        self.levels = nn.ModuleList(nn.Embedding(n, self.d_model) for n in table_sizes)

    @torch.no_grad()
    def init_weights(self, gen: torch.Generator) -> None:
        super().init_weights(gen)
        for emb in self.levels:
            emb.weight.copy_(torch.randn(emb.weight.shape, generator=gen))

    def embed(self, tokens: torch.Tensor, pos_ids: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.tok(tokens)
        for i, emb in enumerate(self.levels):
            x = x + emb(pos_ids[..., i])
        return x


def build_model(variant: str, cfg) -> MultiLevelPETransformer:
    _, levels = VARIANTS[variant]
    sizes = [cfg.data.max_pos_digits + 1, cfg.data.max_pos_operands + 1][:levels]
    mc = cfg.model
    return MultiLevelPETransformer(
        table_sizes=sizes, vocab_size=T.VOCAB_SIZE, d_model=mc.d_model, n_layers=mc.n_layers,
        n_heads=mc.n_heads, d_kv=mc.d_kv, d_ff=mc.d_ff, act=mc.act, norm_position=mc.norm_position,
    )


class _Stream:
    """Training problems: a fixed pool (train_size) drawn with replacement, or fresh samples every step."""

    def __init__(self, d, seed: int):
        self.d, self.rng = d, random.Random(seed)
        self.pool = None
        if d.train_size is not None:
            self.pool = [self._draw() for _ in range(d.train_size)]

    def _draw(self) -> list[int]:
        d = self.d
        return T.sample_problem(self.rng, d.train_min_digits, d.train_max_digits, d.train_min_operands,
                                d.train_max_operands, d.p_independent_lengths)

    def next(self, n: int) -> list[list[int]]:
        if self.pool is None:
            return [self._draw() for _ in range(n)]
        return [self.pool[self.rng.randrange(len(self.pool))] for _ in range(n)]


def eval_sets(cfg, seed: int) -> dict[tuple[int, int], list[list[int]]]:
    """Test problems per (digits, operands) cell, from the shared evaluation seed."""
    out = {}
    for n, m in cfg.data.test_cells:
        rng = random.Random(seed * 100_003 + 1000 * n + m)
        out[(n, m)] = [T.sample_fixed(rng, n, m) for _ in range(cfg.train.eval_samples)]
    return out


@torch.no_grad()
def evaluate(model, variant: str, sets, cfg, device) -> dict[str, float]:
    scratchpad, _ = VARIANTS[variant]
    model.eval()
    out = {}
    for (n, m), probs in sets.items():
        exact_sum = tok_sum = 0.0
        for i in range(0, len(probs), cfg.train.eval_batch_size):
            batch = T.encode(probs[i : i + cfg.train.eval_batch_size], scratchpad=scratchpad).to(device)
            logits = model(batch.tokens, batch.pos)
            exact, tok = st.answer_accuracy(logits, batch.targets)
            exact_sum += exact.float().sum().item()
            tok_sum += tok.sum().item()
        out[f"acc_d{n}_o{m}"] = exact_sum / len(probs)
        out[f"tokacc_d{n}_o{m}"] = tok_sum / len(probs)
    model.train()
    return out


def train_one(variant: str, cfg, ctx, sets) -> dict[str, float]:
    d, tc = cfg.data, cfg.train
    scratchpad, _ = VARIANTS[variant]
    device = torch.device(ctx.device)
    g = torch.Generator()
    g.manual_seed(ctx.seed_for("init"))
    model = build_model(variant, cfg)
    model.init_weights(g)
    model.to(device)
    opt, sched = st.adamw_cosine(model.parameters(), tc)
    stream = _Stream(d, ctx.seed_for("train-data"))  # identical problems for every variant
    pos_rng = random.Random(ctx.seed_for("train-positions"))

    def batch_loss() -> torch.Tensor:
        batch = T.encode(stream.next(tc.batch_size), scratchpad=scratchpad, rng=pos_rng,
                         max_pos_digits=d.max_pos_digits, max_pos_operands=d.max_pos_operands).to(device)
        return st.lm_loss(model(batch.tokens, batch.pos), batch.targets, ignore=T.IGNORE)

    def curve(step: int) -> bool:
        if tc.eval_every and step % tc.eval_every == 0:
            m = evaluate(model, variant, sets, cfg, device)
            ctx.log(step, **{f"{variant}_{k}": v for k, v in m.items() if k.startswith("acc_")})
        return False

    t0 = time.perf_counter()
    lv, _ = optimize(model, opt, batch_loss, sched=sched, steps=tc.steps, ctx=ctx, prefix=f"{variant}_", desc=variant,
                        log_every=tc.log_every, grad_clip=tc.grad_clip, after_step=curve)
    train_s = time.perf_counter() - t0
    final = evaluate(model, variant, sets, cfg, device)
    ctx.log(tc.steps, **{f"{variant}_{k}": v for k, v in final.items() if k.startswith("acc_")})
    final["final_train_loss"] = lv
    final["train_seconds"] = train_s
    return {f"{variant}_{k}": v for k, v in final.items()}


def run_all(cfg, ctx) -> dict[str, float]:
    sets = eval_sets(cfg, ctx.seed_for("eval"))
    metrics: dict[str, float] = {}
    for variant in cfg.model.variants:
        if ctx.runs(variant):  # the variants are independent parts of a seed (see __init__._parts)
            metrics.update(train_one(variant, cfg, ctx, sets))
    if ctx.runs(cfg.model.variants[0]):  # once per seed, also when the variants run as separate parts
        (n, m) = max(sets, key=lambda c: T.seq_len(c[0], c[1], True))
        ex = T.encode(sets[(n, m)][:2], scratchpad=True)
        ctx.write_json("samples.json", {"examples": [T.decode(r) for r in ex.tokens]})  # metrics: metrics.json
    return metrics
