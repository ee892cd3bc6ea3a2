"""Training and evaluation for ``transformers-learn-icl-by-gd`` (torch; imported lazily)."""
from __future__ import annotations

import torch

from methods._lib.training import optimize
from methods._lib.icl_linear import (
    LSA,
    LSAStack,
    alignment,
    build_tokens,
    gd_lsa_weights,
    gd_predict,
    gd_predict_lrs,
    half_sq_loss,
    line_search_gd_lr,
    line_search_gd_lrs,
    ols_predict,
    sample_tasks,
)


def _sampler(cfg, generator, device):
    dc = cfg.data

    def sample(n: int) -> dict[str, torch.Tensor]:
        return sample_tasks(
            n, dc.d, dc.n_context, generator=generator, out_dim=dc.out_dim, x_dist=dc.x_dist,
            x_low=dc.x_low, x_high=dc.x_high, w_std=dc.w_std, noise_std=dc.noise_std, device=device,
        )

    return sample


def _on(device, sample):
    """``sample`` with its tensors moved to ``device``."""
    return lambda n: {k: v.to(device, non_blocking=True) for k, v in sample(n).items()}


def _optimizer(tc, params):
    if tc.optimizer == "adam":
        return torch.optim.Adam(params, lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay)
    return torch.optim.SGD(params, lr=tc.lr, weight_decay=tc.weight_decay)


def _gd_model(cfg, lr: float, device) -> LSAStack:
    dc = cfg.data
    gd = LSAStack(dc.d, dc.out_dim, cfg.model.n_layers, share_weights=True).to(device)
    gd.layers[0].set_weights(*(w.to(device) for w in gd_lsa_weights(dc.d, dc.out_dim, dc.n_context, lr)))
    return gd


@torch.no_grad()
def _eval_loss(model, tokens, yq, chunk: int = 8192) -> float:
    tot = 0.0
    for s in range(0, tokens.shape[0], chunk):
        tot += float(half_sq_loss(model(tokens[s:s + chunk]), yq[s:s + chunk])) * tokens[s:s + chunk].shape[0]
    return tot / tokens.shape[0]


def run_all(cfg, ctx) -> dict[str, float]:
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    device = torch.device(ctx.device)
    K = mc.n_layers

    # ---- fixed evaluation data (CPU stream, identical for every seed and device)
    g_eval = torch.Generator(device="cpu").manual_seed(ctx.seed_for("eval"))
    eval_sample = _sampler(cfg, g_eval, "cpu")
    ev = {k: v.to(device) for k, v in eval_sample(tc.eval_tasks).items()}
    ls = eval_sample(tc.linesearch_tasks)
    ev_tokens = build_tokens(ev["X"], ev["Y"], ev["xq"])

    # ---- GD baseline: K steps from W0 = 0, lr by line search on separate tasks
    gd_lr = line_search_gd_lr(ls["X"], ls["Y"], ls["xq"], ls["yq"], steps=K)
    loss_gd = float(half_sq_loss(gd_predict(ev["X"].double(), ev["Y"].double(), ev["xq"].double(), gd_lr, K),
                                 ev["yq"].double()))
    loss_ols = float(half_sq_loss(ols_predict(ev["X"].double(), ev["Y"].double(), ev["xq"].double()),
                                  ev["yq"].double()))
    loss_zero = float(half_sq_loss(torch.zeros_like(ev["yq"]), ev["yq"]))
    gd_model = _gd_model(cfg, gd_lr, device)

    # ---- model
    g_init = torch.Generator(device="cpu").manual_seed(ctx.seed_for("init"))
    model = LSAStack(dc.d, dc.out_dim, K, key_size=mc.key_size, n_heads=mc.n_heads,
                     share_weights=mc.share_weights)
    model.reset_parameters(tc.init_scale, g_init)
    model.to(device)
    opt = _optimizer(tc, model.parameters())

    # training data: a CPU stream moved to the device, so a GPU run trains on the same tasks as a CPU run
    g_train = torch.Generator(device="cpu").manual_seed(ctx.seed_for("train-data"))
    train_sample = _on(device, _sampler(cfg, g_train, "cpu"))

    ctx.log(0, test_loss=_eval_loss(model, ev_tokens, ev["yq"]), gd_loss=loss_gd)

    def batch_loss() -> torch.Tensor:
        b = train_sample(tc.batch_size)
        return half_sq_loss(model(build_tokens(b["X"], b["Y"], b["xq"])), b["yq"])

    def test_loss(step: int) -> dict:
        if tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps):
            return {"test_loss": _eval_loss(model, ev_tokens, ev["yq"])}
        return {}

    optimize(model, opt, batch_loss, steps=tc.steps, ctx=ctx, desc="train", log_every=tc.log_every,
        grad_clip=tc.grad_clip, on_log=test_loss)

    # ---- final evaluation
    model.eval()
    loss_lsa = _eval_loss(model, ev_tokens, ev["yq"])
    out = {
        "loss_lsa": loss_lsa,
        "loss_gd": loss_gd,
        "loss_gap": loss_lsa - loss_gd,
        "loss_rel_gap": (loss_lsa - loss_gd) / loss_gd,
        "loss_ols": loss_ols,
        "loss_zero": loss_zero,
        "gd_lr": gd_lr,
    }
    out.update(alignment(model, gd_model, ev_tokens, dc.d))

    if K == 1 and mc.n_heads == 1:
        out.update(_weight_match_and_interp(model.layers[0], cfg, gd_lr, ev_tokens, ev["yq"], device))
        out["interp_rel_gap"] = (out["loss_interp"] - loss_gd) / loss_gd
    for Km in mc.multilayer:
        out.update(_multilayer(cfg, ctx, Km, ev, ev_tokens, ls, device))
    return out


def _log_cond(X: torch.Tensor) -> float:
    """Mean over tasks of log10 cond(X^T X) (X: (B, N, d) context inputs)."""
    ev = torch.linalg.eigvalsh(X.double().transpose(1, 2) @ X.double()).clamp_min(1e-300)
    return float(torch.log10(ev[:, -1] / ev[:, 0]).mean())


def _multilayer(cfg, ctx, K: int, ev, ev_tokens, ls, device) -> dict[str, float]:
    """Train a K-layer LSA (separate weights per layer) and compare it with K GD steps (GD++, Sec. 4)."""
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    steps = tc.multilayer_steps or tc.steps
    bs = tc.multilayer_batch_size or tc.batch_size
    gd_lr = line_search_gd_lr(ls["X"], ls["Y"], ls["xq"], ls["yq"], steps=K)
    loss_gd = float(half_sq_loss(gd_predict(ev["X"].double(), ev["Y"].double(), ev["xq"].double(), gd_lr, K),
                                 ev["yq"].double()))
    # K GD steps with a step size of their own each (fitted on the line-search tasks)
    lrs = line_search_gd_lrs(ls["X"], ls["Y"], ls["xq"], ls["yq"], steps=K, init_lr=gd_lr)
    loss_gd_ps = float(half_sq_loss(gd_predict_lrs(ev["X"].double(), ev["Y"].double(), ev["xq"].double(), lrs),
                                    ev["yq"].double()))
    g_init = torch.Generator(device="cpu").manual_seed(ctx.seed_for(f"init-ml{K}"))
    model = LSAStack(dc.d, dc.out_dim, K, key_size=mc.key_size, n_heads=mc.n_heads, share_weights=False)
    model.reset_parameters(tc.init_scale / K, g_init)  # official code divides the init scale by K
    model.to(device)
    opt = _optimizer(tc, model.parameters())
    g_train = torch.Generator(device="cpu").manual_seed(ctx.seed_for(f"train-data-ml{K}"))
    train_sample = _on(device, _sampler(cfg, g_train, "cpu"))

    def batch_loss() -> torch.Tensor:
        b = train_sample(bs)
        return half_sq_loss(model(build_tokens(b["X"], b["Y"], b["xq"])), b["yq"])

    optimize(model, opt, batch_loss, steps=steps, ctx=ctx, desc=f"train-{K}-layer", log_every=tc.log_every,
        prefix=f"ml{K}_", grad_clip=tc.grad_clip)
    model.eval()
    loss_lsa = _eval_loss(model, ev_tokens, ev["yq"])
    gd_model = LSAStack(dc.d, dc.out_dim, K, share_weights=True).to(device)
    gd_model.layers[0].set_weights(*(w.to(device) for w in gd_lsa_weights(dc.d, dc.out_dim, dc.n_context, gd_lr)))
    al = alignment(model, gd_model, ev_tokens, dc.d)
    with torch.no_grad():
        h1 = model.layers[0](ev_tokens, dc.n_context)
    return {
        f"ml{K}_loss_lsa": loss_lsa,
        f"ml{K}_loss_gd": loss_gd,
        f"ml{K}_rel_gap_gd": (loss_lsa - loss_gd) / loss_gd,
        f"ml{K}_gd_lr": gd_lr,
        f"ml{K}_loss_gd_perstep": loss_gd_ps,
        f"ml{K}_rel_gap_gd_perstep": (loss_lsa - loss_gd_ps) / loss_gd_ps,
        **{f"ml{K}_gd_perstep_lr{k + 1}": lr for k, lr in enumerate(lrs)},
        f"ml{K}_pred_cosine": al["pred_cosine"],
        f"ml{K}_sensitivity_cosine": al["sensitivity_cosine"],
        f"ml{K}_logcond_in": _log_cond(ev["X"]),
        f"ml{K}_logcond_l1": _log_cond(h1[:, : dc.n_context, : dc.d]),
        f"ml{K}_logcond_drop": _log_cond(ev["X"]) - _log_cond(h1[:, : dc.n_context, : dc.d]),
    }


@torch.no_grad()
def _weight_match_and_interp(layer: LSA, cfg, gd_lr, tokens, yq, device) -> dict[str, float]:
    """Scale-correct the trained (W_q W_k^T, W_v P) as in the official notebook (divide QK by
    the mean of its x-block diagonal, multiply PV by it), compare with the GD construction,
    and evaluate the interpolated layer (theta + theta_GD)/2."""
    dc = cfg.data
    e = dc.d + dc.out_dim
    qk, pv = layer.qk_pv()
    scale = qk.diagonal()[: dc.d].mean()
    qk_s, pv_s = qk / scale, pv * scale
    Wq, Wk, Wv, P = (w.to(device) for w in gd_lsa_weights(dc.d, dc.out_dim, dc.n_context, gd_lr))
    qk_gd, pv_gd = Wq @ Wk.T, Wv @ P
    eye = torch.eye(e, device=device)
    interp = LSAStack(dc.d, dc.out_dim, 1, share_weights=True).to(device)
    interp.layers[0].set_weights((qk_s + qk_gd) / 2, eye, eye, (pv_s + pv_gd) / 2)
    return {
        "loss_interp": _eval_loss(interp, tokens, yq),
        "qk_rel_err": float((qk_s - qk_gd).norm() / qk_gd.norm()),
        "pv_rel_err": float((pv_s - pv_gd).norm() / pv_gd.norm()),
        "weight_scale": float(scale),
    }
