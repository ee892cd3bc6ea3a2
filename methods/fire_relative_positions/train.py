"""Training/evaluation loop for the FIRE proxy (imported lazily by ``run``)."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from methods._lib.seq_transformer import DecoderOnlyTransformer, adamw_cosine
from methods._lib.training import optimize

from .task import CopyMarkovSource, LMBatch


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()  # CPU generator: identical data on every device
    g.manual_seed(seed)
    return g


def make_source(d) -> CopyMarkovSource:
    return CopyMarkovSource(vocab_size=d.vocab_size, branching=d.branching, copy_prob=d.copy_prob,
                            span_min=d.span_min, span_max=d.span_max, language_seed=d.language_seed,
                            topic_vocab=d.topic_vocab, topic_size=d.topic_size, topic_prob=d.topic_prob)


def build_model(encoding: str, mc, vocab_size: int) -> DecoderOnlyTransformer:
    """The shared decoder with only the relative encoding as position information: pre-norm blocks,
    1/sqrt(d_kv) scores, normal(0, 0.02) init, tied output without rescaling."""
    return DecoderOnlyTransformer(
        vocab_size=vocab_size, n_positions=0, d_model=mc.d_model, n_layers=mc.n_layers, n_heads=mc.n_heads,
        d_kv=mc.d_kv, d_ff=mc.d_ff, act=mc.act, norm_position="pre", rel_encoding=encoding,
        rel_kw=dict(fire_mlp_width=mc.fire_mlp_width, fire_mlp_layers=mc.fire_mlp_layers,
                    fire_init_c=mc.fire_init_c, fire_init_L=mc.fire_init_L,
                    t5_num_buckets=mc.t5_num_buckets, t5_max_distance=mc.t5_max_distance, rope_base=mc.rope_base),
        attn_scale="sqrt", init="normal", output_scale=False,
    )


def token_nll(model, batch: LMBatch) -> torch.Tensor:
    """Per-token next-token NLL, shape (B, n-1) (target = tokens[:, 1:])."""
    logits = model(batch.tokens[:, :-1])
    return F.cross_entropy(logits.float().transpose(1, 2), batch.tokens[:, 1:], reduction="none")


@torch.no_grad()
def evaluate(model, sets: dict[int, LMBatch], bs: int, device) -> dict[str, float]:
    model.eval()
    out = {}
    for n, data in sets.items():
        tot, cnt, ctot, ccnt = 0.0, 0, 0.0, 0
        for i in range(0, data.tokens.shape[0], bs):
            b = data.select(slice(i, i + bs)).to(device)
            nll = token_nll(model, b)
            cm = (b.copy | b.topic)[:, 1:]  # tokens predictable only from the longer context
            tot, cnt = tot + nll.sum().item(), cnt + nll.numel()
            ctot, ccnt = ctot + nll[cm].sum().item(), ccnt + int(cm.sum())
        out[f"loss_len{n}"] = tot / cnt
        out[f"longloss_len{n}"] = ctot / max(1, ccnt)
    model.train()
    return out


def ideal_longloss(source: CopyMarkovSource, sets: dict[int, LMBatch]) -> dict[int, float]:
    """The Bayes-optimal mean topic-token loss of every evaluation set (the reference for ``context_gain``);
    empty when it is not defined (copying on, or no topic tokens)."""
    if source.copy_prob > 0 or source.topic_prob <= 0:
        return {}
    out = {}
    for n, data in sets.items():
        nll = source.ideal_topic_nll(data)
        nll = nll[~nll.isnan()]
        if nll.numel():
            out[n] = float(nll.mean())
    return out


def context_gain(longloss: dict[int, float], ideal: dict[int, float], train_len: int) -> dict[int, float]:
    """For every evaluation length n beyond the training length: the fall of a model's topic-token loss from
    the training length to n as a fraction of the ideal predictor's fall on the same sequences. 1 = the
    model gains from the extra context as much as the ideal predictor; 0 = it gains nothing (a model that
    ignores the context beyond some window, or that attends only locally); negative = it gets worse."""
    if train_len not in longloss or train_len not in ideal:
        return {}
    out = {}
    for n in sorted(longloss):
        if n > train_len and n in ideal and ideal[train_len] - ideal[n] > 1e-9:
            out[n] = (longloss[train_len] - longloss[n]) / (ideal[train_len] - ideal[n])
    return out


def _train_one(encoding: str, cfg, ctx, source, eval_sets, ideal) -> dict[str, float]:
    d, mc, tc = cfg.data, cfg.model, cfg.train
    device = torch.device(ctx.device)
    model = build_model(encoding, mc, source.n_tokens)
    model.init_weights(_gen(ctx.seed_for("init")))
    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and ".bias." not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and ".bias." not in n)]
    opt, sched = adamw_cosine([{"params": decay, "weight_decay": tc.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], tc)
    data_gen = _gen(ctx.seed_for("train-data"))  # identical training data for every encoding
    t0 = time.perf_counter()
    lv, _ = optimize(model, opt, lambda: token_nll(model, source.sample(data_gen, tc.batch_size, d.train_len)
                                                   .to(device)).mean(),
                     sched=sched, steps=tc.steps, ctx=ctx, prefix=f"{encoding}_", desc=encoding, log_every=tc.log_every,
                     grad_clip=tc.grad_clip)
    train_s = time.perf_counter() - t0
    final = evaluate(model, eval_sets, tc.eval_batch_size, device)
    ctx.log(tc.steps, **{f"{encoding}_{k}": v for k, v in final.items()})
    longloss = {n: final[f"longloss_len{n}"] for n in eval_sets}
    for n, g in context_gain(longloss, ideal, d.train_len).items():
        final[f"context_gain_len{n}"] = g
    final["final_train_loss"] = lv
    final["train_seconds"] = train_s
    if encoding == "fire":
        blk = model.blocks[0].attn.bias
        final["fire_c_layer0"] = float(blk.c.detach().abs())
        final["fire_L_layer0"] = float(blk.threshold().detach())
    return {f"{encoding}_{k}" if not k.startswith("fire_") else k: v for k, v in final.items()}


def run_all(cfg, ctx) -> dict[str, float]:
    d = cfg.data
    source = make_source(d)
    eg = _gen(ctx.seed_for("eval"))
    eval_sets = {n: source.sample(eg, d.eval_sequences, n) for n in sorted(set(d.eval_lengths))}
    ideal = ideal_longloss(source, eval_sets)
    metrics: dict[str, float] = {}
    # the encodings are independent parts of a seed (see __init__._parts); the source's own numbers and
    # the sample file come with the first one
    first = ctx.runs(cfg.model.encodings[0])
    if first:
        metrics["markov_entropy"] = source.markov_entropy()
        for n, s in eval_sets.items():
            metrics[f"longrange_fraction_len{n}"] = float((s.copy | s.topic)[:, 1:].float().mean())
        metrics.update({f"ideal_longloss_len{n}": v for n, v in ideal.items()})
    for enc in cfg.model.encodings:
        if ctx.runs(enc):
            metrics.update(_train_one(enc, cfg, ctx, source, eval_sets, ideal))
    if first:
        ctx.write_json("samples.json", {"example_tokens": eval_sets[min(eval_sets)].tokens[0].tolist()})
    return metrics
