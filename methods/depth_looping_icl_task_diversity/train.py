"""Training and evaluation for ``depth-looping-icl-task-diversity`` (torch; imported lazily)."""
from __future__ import annotations

import math

import torch

from methods._lib.looped_linear import (
    RestrictedLinearAttention,
    atom_covariances,
    depth_losses,
    diverse_covariances,
    loguniform_covariances,
    max_rel_increase,
    sample_cov_tasks,
    train_restricted,
)


def _sampler(dc, generator, scale: float = 1.0, kappa_min: float | None = None, family: str | None = None):
    """Task sampler. ``family``: None (the training family ``dc.spectrum``), "continuous"
    (condition number ~ U[kappa_min, kappa]), "discrete" (eigenvalues on ``dc.atoms``) or
    "loguniform" (eigenvalues i.i.d. log-uniform in [1/kappa, 1]); eigenvalues times ``scale``."""
    family = dc.spectrum if family is None else family
    kmin = dc.kappa_min if kappa_min is None else kappa_min

    def sample(n: int) -> dict[str, torch.Tensor]:
        if family == "discrete":
            L = atom_covariances(n, dc.d, dc.atoms, generator, lam_scale=scale)
        elif family == "loguniform":
            L = loguniform_covariances(n, dc.d, scale / dc.kappa, scale, generator)
        else:
            L, _ = diverse_covariances(n, dc.d, kmin, dc.kappa, generator, lam_max=scale)
        return sample_cov_tasks(n, dc.d, dc.n_context, generator=generator, x_sqrt=L, noise_std=dc.noise_std)

    return sample


def _spread_steps(m: RestrictedLinearAttention, lo: float, hi: float, generator: torch.Generator) -> None:
    """Add eta_l I to each untied layer's A_l, eta_l log-spaced in [lo, hi], in a random layer order."""
    n = m.A.shape[0]
    etas = torch.logspace(math.log10(lo), math.log10(hi), n)[torch.randperm(n, generator=generator)]
    with torch.no_grad():
        m.A.add_(etas[:, None, None] * torch.eye(m.d))


def _step_sizes(m: RestrictedLinearAttention) -> list[float]:
    """Per-layer step size eta_l = trace(A_l) / d (A_l is close to eta_l I: tasks are rotation-invariant)."""
    return [float(torch.diagonal(A).mean()) for A in m.A.detach()]


def run_all(cfg, ctx) -> dict[str, float]:
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    torch.manual_seed(ctx.seed_for("torch"))
    g_eval = torch.Generator().manual_seed(ctx.seed_for("eval"))
    ev = _sampler(dc, g_eval)(tc.eval_tasks)
    ev_ood = _sampler(dc, g_eval, dc.ood_scale)(tc.eval_tasks)  # out of the training support
    ev_hard = _sampler(dc, g_eval, kappa_min=dc.kappa, family="continuous")(tc.eval_tasks)  # all tasks at kappa
    ev_within = _sampler(dc, g_eval, family="loguniform")(tc.eval_tasks)  # inside [1/kappa, 1], off any atoms
    g_init = torch.Generator().manual_seed(ctx.seed_for("init"))

    out: dict[str, float] = {}
    models = {}
    for L in mc.depths:
        for kind in ("looped", "multi"):
            # the same training task stream for both kinds at every depth
            g_train = torch.Generator().manual_seed(ctx.seed_for("train-data"))
            m = RestrictedLinearAttention(dc.d, L, tied=kind == "looped", train_u=mc.train_u)
            m.reset_parameters(tc.init_scale, 0.0 if kind == "looped" else tc.init_noise, g_init)
            if kind == "multi" and tc.init_step_range is not None:
                _spread_steps(m, *tc.init_step_range, g_init)
            train_restricted(m, _sampler(dc, g_train), tc, ctx, f"{kind}_L{L}")
            models[kind, L] = m
            lid = depth_losses(m, ev, L)[-1]
            lood = depth_losses(m, ev_ood, L)[-1]
            out[f"loss_{kind}_L{L}"] = lid
            out[f"ood_{kind}_L{L}"] = lood
            lhard = depth_losses(m, ev_hard, L)[-1]
            out[f"hard_{kind}_L{L}"] = lhard
            out[f"degradation_{kind}_L{L}"] = math.log(lood / lid)
            out[f"hard_degradation_{kind}_L{L}"] = math.log(lhard / lid)
            lwithin = depth_losses(m, ev_within, L)[-1]
            out[f"within_{kind}_L{L}"] = lwithin
            out[f"within_degradation_{kind}_L{L}"] = math.log(lwithin / lid)
        out[f"robustness_gap_L{L}"] = out[f"degradation_multi_L{L}"] - out[f"degradation_looped_L{L}"]
        out[f"hard_robustness_gap_L{L}"] = out[f"hard_degradation_multi_L{L}"] - out[f"hard_degradation_looped_L{L}"]
        out[f"within_robustness_gap_L{L}"] = (out[f"within_degradation_multi_L{L}"]
                                              - out[f"within_degradation_looped_L{L}"])
        out[f"ood_looped_minus_multi_L{L}"] = out[f"ood_looped_L{L}"] - out[f"ood_multi_L{L}"]

    Lmax, Lmin = mc.depths[-1], mc.depths[0]
    T = tc.test_depth_factor * Lmax
    looped_curve = depth_losses(models["looped", Lmax], ev, T)
    multi_curve = depth_losses(models["multi", Lmax], ev, Lmax)
    looped_ood_curve = depth_losses(models["looped", Lmax], ev_ood, T)
    multi_ood_curve = depth_losses(models["multi", Lmax], ev_ood, Lmax)
    multi_within_curve = depth_losses(models["multi", Lmax], ev_within, Lmax)
    steps = _step_sizes(models["multi", Lmax])
    for t in range(T):
        m = {"looped_loss_vs_depth": looped_curve[t], "looped_ood_loss_vs_depth": looped_ood_curve[t]}
        if t < Lmax:
            m.update(multi_loss_vs_depth=multi_curve[t], multi_ood_loss_vs_depth=multi_ood_curve[t],
                     multi_within_loss_vs_depth=multi_within_curve[t], multi_step_size=steps[t])
        ctx.log(t + 1, **m)
    out["multi_max_step"] = max(steps)
    out["looped_step"] = _step_sizes(models["looped", Lmax])[0]
    out["looped_max_rel_increase"] = max_rel_increase(looped_curve) if T > 1 else 0.0
    out["looped_ood_max_rel_increase"] = max_rel_increase(looped_ood_curve) if T > 1 else 0.0
    out["multi_max_rel_increase"] = max_rel_increase(multi_curve) if Lmax > 1 else 0.0
    out["looped_loss_at_test_depth"] = looped_curve[-1]
    if len(mc.depths) > 1:
        out["looped_trained_depth_max_rel_increase"] = max_rel_increase([out[f"loss_looped_L{L}"] for L in mc.depths])
        for kind in ("looped", "multi"):
            out[f"{kind}_depth_gain"] = out[f"loss_{kind}_L{Lmax}"] / out[f"loss_{kind}_L{Lmin}"]
    return out
