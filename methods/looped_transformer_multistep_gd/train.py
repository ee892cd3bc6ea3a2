"""Training and evaluation for ``looped-transformer-multistep-gd`` (torch; imported lazily)."""
from __future__ import annotations

import math

import torch

from methods._lib.icl_linear import gd_predict, line_search_gd_lr
from methods._lib.looped_linear import (
    RestrictedLinearAttention,
    depth_losses,
    max_rel_increase,
    random_rotation,
    sample_cov_tasks,
    scale_free_rel_err,
    spectrum,
    spectrum_covariance,
    sqrtm_psd,
    train_restricted,
)


def _covariances(dc):
    """Sigma (train / in-distribution) and the shifted Sigma_ood, both float64 and fixed by cov_seed."""
    g = torch.Generator().manual_seed(dc.cov_seed)
    S = spectrum_covariance(dc.d, dc.kappa, g, dc.spacing)
    lam = spectrum(dc.d, dc.ood_kappa, "log") * math.sqrt(dc.ood_kappa)  # geometric mean 1
    U = random_rotation(dc.d, g, dtype=torch.float64)
    R = (U * lam) @ U.T
    Sh = sqrtm_psd(S)
    return S, Sh @ R @ Sh


def _sampler(dc, S, n_context, generator):
    x_sqrt = sqrtm_psd(S)
    w_sqrt = sqrtm_psd(torch.linalg.inv(S)) if dc.w_prior == "inverse" else None

    def sample(n: int) -> dict[str, torch.Tensor]:
        return sample_cov_tasks(n, dc.d, n_context, generator=generator, x_sqrt=x_sqrt, w_sqrt=w_sqrt,
                                noise_std=dc.noise_std)

    return sample


def _worst(ratios: list[float]) -> float:
    """The largest loop ratio over several evaluation sets; inf when one of them diverged (NaN or inf)."""
    return max(ratios) if all(map(math.isfinite, ratios)) else math.inf


def _gd_baselines(dc, S, ev, ls, steps: int, more_steps: int | None = None,
                  shifted: dict | None = None, extra_shifted: tuple = ()) -> dict[str, float]:
    """Line-searched ``steps``-step plain GD and Sigma^-1-preconditioned GD (= plain GD on whitened x).

    With ``more_steps``, Sigma^-1-preconditioned GD also runs ``more_steps`` steps at the step size
    line-searched for ``steps`` (what the paper's idealised solution A = c Sigma^-1 does when looped
    longer at test time): ``pgd_id_loop_ratio`` (on ``ev``) and, given ``shifted`` tasks,
    ``pgd_ood_cov_loop_ratio`` (loss after ``more_steps`` / after ``steps``); given ``extra_shifted`` (further
    shifted task sets) also the largest of those ratios over ``shifted`` and them,
    ``pgd_ood_cov_loop_ratio_worst_draw``."""
    ref = float((ev["yq"].double() ** 2).mean())
    out = {}
    Wh = torch.linalg.inv(sqrtm_psd(S))  # Sigma^-1/2
    for name, T in (("gd", None), ("pgd", Wh)):
        def tf(b):
            X, xq = b["X"].double(), b["xq"].double()
            if T is not None:
                X, xq = X @ T, xq @ T
            return X, b["Y"].double(), xq, b["yq"].double()
        lr = line_search_gd_lr(*tf(ls), steps=steps)

        def mse(b, k: int) -> float:
            X, Y, xq, yq = tf(b)
            return float(((gd_predict(X, Y, xq, lr, k) - yq) ** 2).mean())

        id_short = mse(ev, steps)
        out[f"loss_{name}"] = id_short / ref
        out[f"{name}_lr"] = lr
        if name == "pgd" and more_steps is not None:
            out["pgd_id_loop_ratio"] = mse(ev, more_steps) / id_short
            if shifted is not None:
                ratios = [mse(b, more_steps) / mse(b, steps) for b in (shifted, *extra_shifted)]
                out["pgd_ood_cov_loop_ratio"] = ratios[0]
                if extra_shifted:
                    out["pgd_ood_cov_loop_ratio_worst_draw"] = _worst(ratios)
    return out


@torch.no_grad()
def symmetrised(model: RestrictedLinearAttention) -> RestrictedLinearAttention:
    """A copy of a tied model whose A is replaced by its symmetric part (A + A^T) / 2 (u kept)."""
    if not model.tied:
        raise ValueError("symmetrised() expects a tied (looped) model")
    twin = RestrictedLinearAttention(model.d, model.n_layers, tied=True, train_u=model.u.requires_grad)
    twin.A.copy_((model.A + model.A.transpose(-1, -2)) / 2)
    twin.u.copy_(model.u)
    return twin


def run_all(cfg, ctx) -> dict[str, float]:
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    torch.manual_seed(ctx.seed_for("torch"))
    S, S_ood = _covariances(dc)
    S_inv = torch.linalg.inv(S)
    L, T = mc.n_loops, tc.max_test_loops

    # ---- fixed evaluation sets (shared by all seeds)
    g_eval = torch.Generator().manual_seed(ctx.seed_for("eval"))
    ev = _sampler(dc, S, dc.n_context, g_eval)(tc.eval_tasks)
    ls = _sampler(dc, S, dc.n_context, g_eval)(tc.eval_tasks)  # line search, separate tasks
    ev_cov = _sampler(dc, S_ood, dc.n_context, g_eval)(tc.eval_tasks)
    ev_len = _sampler(dc, S, dc.ood_n_context, g_eval)(tc.eval_tasks)
    # drawn after the sets above, which therefore do not depend on how many there are
    ev_cov_extra = tuple(_sampler(dc, S_ood, dc.n_context, g_eval)(tc.eval_tasks)
                         for _ in range(tc.ood_cov_extra_draws))

    out = _gd_baselines(dc, S, ev, ls, L, more_steps=T, shifted=ev_cov, extra_shifted=ev_cov_extra)

    # ---- models
    g_train = torch.Generator().manual_seed(ctx.seed_for("train-data"))
    sample = _sampler(dc, S, dc.n_context, g_train)
    g_init = torch.Generator().manual_seed(ctx.seed_for("init"))
    looped = RestrictedLinearAttention(dc.d, L, tied=True, train_u=mc.train_u)
    looped.reset_parameters(tc.init_scale, 0.0, g_init)  # no layer symmetry to break
    train_restricted(looped, sample, tc, ctx, "looped")

    curves = {name: depth_losses(looped, b, T) for name, b in (("id", ev), ("ood_cov", ev_cov), ("long_ctx", ev_len))}
    for t in range(T):
        ctx.log(t + 1, **{f"loss_vs_loops_{k}": v[t] for k, v in curves.items()})
    out["loss_looped"] = curves["id"][L - 1]
    out["looped_minus_pgd"] = out["loss_looped"] - out["loss_pgd"]
    out["looped_pgd_ratio"] = out["loss_looped"] / out["loss_pgd"]
    for k, v in curves.items():
        out[f"{k}_loss_at_train_loops"] = v[L - 1]
        out[f"{k}_loss_at_max_loops"] = v[T - 1]
        out[f"{k}_loop_ratio"] = v[T - 1] / v[L - 1]
        out[f"{k}_max_rel_increase"] = max_rel_increase(v) if T > 1 else 0.0
    if ev_cov_extra:  # the covariance-shift ratio on every shifted evaluation set: the profile's and the extra ones
        ratios = [out["ood_cov_loop_ratio"]]
        for b in ev_cov_extra:
            v = depth_losses(looped, b, T)
            ratios.append(v[T - 1] / v[L - 1])
        out["ood_cov_loop_ratio_worst_draw"] = _worst(ratios)
        out["ood_cov_draws_over_half"] = float(sum(not r <= 0.5 for r in ratios))  # a diverged (NaN) draw counts

    # ---- learned preconditioner and u
    A = looped.A[0].detach().double()
    out["precond_rel_err"], out["precond_scale"] = scale_free_rel_err(A, S_inv)
    out["precond_rel_err_identity"], _ = scale_free_rel_err(A, torch.eye(dc.d, dtype=torch.float64))
    A_sym = (A + A.T) / 2
    out["precond_sym_rel_err"], _ = scale_free_rel_err(A_sym, S_inv)
    out["precond_sym_rel_err_identity"], _ = scale_free_rel_err(A_sym, torch.eye(dc.d, dtype=torch.float64))
    out["precond_asymmetry"] = float((A - A.T).norm() / A.norm())
    # does the loss use the antisymmetric part? the same model with A replaced by its symmetric part
    twin = symmetrised(looped)
    sym = {name: depth_losses(twin, b, T) for name, b in (("id", ev), ("ood_cov", ev_cov))}
    out["loss_looped_sym"] = sym["id"][L - 1]
    out["looped_sym_loss_ratio"] = sym["id"][L - 1] / out["loss_looped"]
    out["looped_sym_id_loop_ratio"] = sym["id"][T - 1] / sym["id"][L - 1]
    out["looped_sym_ood_cov_loop_ratio"] = sym["ood_cov"][T - 1] / sym["ood_cov"][L - 1]
    out["u_rel"] = u_rel(looped, S, ev)

    if mc.compare_untied:
        multi = RestrictedLinearAttention(dc.d, L, tied=False, train_u=mc.train_u)
        multi.reset_parameters(tc.init_scale, tc.init_noise, g_init)
        train_restricted(multi, sample, tc, ctx, "multilayer")
        out["loss_multilayer"] = depth_losses(multi, ev, L)[-1]
        out["looped_vs_multilayer_rel"] = (out["loss_looped"] - out["loss_multilayer"]) / out["loss_multilayer"]
    if tc.u_probe_steps:  # last: its own generators, nothing above depends on it
        out.update(u_probe(looped, dc, tc, S, ev, ctx))
    return out


def u_rel(model: RestrictedLinearAttention, S: torch.Tensor, ev: dict) -> float:
    """Size of the (tied) u-term relative to the labels: sqrt(u^T Sigma u / E[y_q^2])."""
    u = model.u[0].detach().double()
    return math.sqrt(float(u @ S @ u) / float((ev["yq"].double() ** 2).mean()))


def u_probe(looped: RestrictedLinearAttention, dc, tc, S: torch.Tensor, ev: dict, ctx) -> dict[str, float]:
    """Is u = 0 attracting? A copy of the trained looped model with u moved to u_rel = tc.u_probe_rel (random
    direction) is trained again for tc.u_probe_steps steps (same optimiser and schedule, fresh tasks).
    Reports u_rel before and after, and the normalised loss before and after (at the trained loop count)."""
    probe = RestrictedLinearAttention(dc.d, looped.n_layers, tied=True, train_u=True)
    g = torch.Generator().manual_seed(ctx.seed_for("u-probe"))
    z = torch.randn(dc.d, generator=g, dtype=torch.float64)
    ref = float((ev["yq"].double() ** 2).mean())
    z = z * (tc.u_probe_rel * math.sqrt(ref / float(z @ S @ z)))
    with torch.no_grad():
        probe.A.copy_(looped.A)
        probe.u[0].copy_(z.to(probe.u.dtype))
    L = looped.n_layers
    out = {"u_probe_rel_start": u_rel(probe, S, ev), "u_probe_loss_start": depth_losses(probe, ev, L)[-1]}
    sample = _sampler(dc, S, dc.n_context, torch.Generator().manual_seed(ctx.seed_for("u-probe-data")))
    train_restricted(probe, sample, tc.model_copy(update={"steps": tc.u_probe_steps}), ctx, "u_probe")
    out["u_probe_rel_end"] = u_rel(probe, S, ev)
    out["u_probe_loss_end"] = depth_losses(probe, ev, L)[-1]
    return out
