"""Closed-form kernel ridge self-distillation (arXiv:2102.13088); numpy, float64."""
from __future__ import annotations

import numpy as np


def rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    return np.exp(-gamma * (a[:, None] - b[None, :]) ** 2)


def target_fn(x: np.ndarray, frequency: float) -> np.ndarray:
    return np.sin(2 * np.pi * frequency * x)


class KernelSD:
    """Kernel ridge smoother on fixed training inputs X, applied to target vectors (columns)."""

    def __init__(self, X: np.ndarray, gamma: float, lam: float):
        self.X, self.gamma, self.lam = X, gamma, lam
        K = rbf(X, X, gamma)
        d, V = np.linalg.eigh(K)
        self.d = np.clip(d, 0.0, None)
        self.V = V
        self.s = self.d / (self.d + lam)  # ridge filter per eigendirection (used by the closed forms)
        # The literal iteration uses (K + lam I)^-1 from a linear solve, not from the eigendecomposition,
        # so that the closed-form check compares two independent computations.
        self.inv = np.linalg.solve(K + lam * np.eye(len(X)), np.eye(len(X)))  # (K + lam I)^-1
        self.S = K @ self.inv  # training-point smoother K (K + lam I)^-1

    def predictor(self, x: np.ndarray) -> np.ndarray:
        """A with f(x) = A @ targets for a fit on `targets` at the training inputs."""
        return rbf(x, self.X, self.gamma) @ self.inv

    def ridge_predictor(self, x: np.ndarray, lam: float) -> np.ndarray:
        inv = self.V @ np.diag(1.0 / (self.d + lam)) @ self.V.T
        return rbf(x, self.X, self.gamma) @ inv


def distill(sd: KernelSD, Y: np.ndarray, alphas, A_eval: np.ndarray | None = None, keep_all: bool = True):
    """Iterate the distillation steps literally: refit on alpha_t y + (1 - alpha_t) f_{t-1}(X).

    `alphas` has one entry (scalar or per-column array) per distillation step. Returns the
    training-point fits [f_0(X), ..., f_T(X)] and, if A_eval is given, the fits at the
    evaluation inputs. keep_all=False keeps only the first and the last fit (long runs).
    """
    F = sd.S @ Y
    fits, evals = [F], [A_eval @ Y] if A_eval is not None else None
    targets = None
    for a in alphas:
        targets = a * Y + (1.0 - a) * F
        F = sd.S @ targets
        if keep_all:
            fits.append(F)
            if A_eval is not None:
                evals.append(A_eval @ targets)
    if not keep_all and targets is not None:
        fits.append(F)
        if A_eval is not None:
            evals.append(A_eval @ targets)
    return fits, evals


def filter_coeffs(s: np.ndarray, alphas) -> list[np.ndarray]:
    """Spectral coefficients c_t of the distilled fits, f_t(X) = V diag(c_t) V^T y.

    For a constant alpha this is the explicit formula
    c_t = alpha s (1 - r^t) / (1 - r) + r^t s with r = (1 - alpha) s;
    per-step (or per-column) alphas use c_t = s (alpha_t + (1 - alpha_t) c_{t-1}).
    """
    cs = [s]
    for a in alphas:
        cs.append(s[:, None] * (a + (1.0 - a) * _col(cs[-1])) if np.ndim(a) else s * (a + (1.0 - a) * cs[-1]))
    return cs


def _col(c: np.ndarray) -> np.ndarray:
    return c[:, None] if c.ndim == 1 else c


def explicit_coeffs(s: np.ndarray, alpha: float, t: int) -> np.ndarray:
    r = (1.0 - alpha) * s
    if alpha == 0.0:
        return s ** (t + 1)
    return alpha * s * (1.0 - r**t) / (1.0 - r) + r**t * s


def closed_form_eval(sd: KernelSD, Y: np.ndarray, c_prev: np.ndarray, alpha, A_eval: np.ndarray) -> np.ndarray:
    """f_t at evaluation inputs from the initial data only: targets_t = V diag(alpha + (1-alpha) c_{t-1}) V^T y."""
    proj = sd.V.T @ Y
    return A_eval @ (sd.V @ ((alpha + (1.0 - alpha) * _col(c_prev)) * proj))


def optimal_alpha(base: np.ndarray, direction: np.ndarray, reference: np.ndarray, clip: bool) -> np.ndarray:
    """argmin_a ||base + a * direction - reference||^2 per column (f_t is affine in alpha)."""
    num = np.sum((reference - base) * direction, axis=0)
    den = np.sum(direction * direction, axis=0)
    a = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return np.clip(a, 0.0, 1.0) if clip else a


def distill_optimal(sd: KernelSD, Y: np.ndarray, steps: int, clip: bool, *, ref_train=None,
                    A_val=None, y_val=None):
    """Distillation with a per-step optimal alpha: against a reference at the training inputs
    (ref_train, e.g. the noise-free function) or against noisy held-out points (A_val, y_val)."""
    F = sd.S @ Y
    alphas = []
    for _ in range(steps):
        resid = Y - F  # f_t(.) = A F_{t-1} + alpha A (y - F_{t-1})
        if ref_train is not None:
            a = optimal_alpha(sd.S @ F, sd.S @ resid, ref_train, clip)
        else:
            a = optimal_alpha(A_val @ F, A_val @ resid, y_val, clip)
        alphas.append(a)
        F = sd.S @ (a * Y + (1.0 - a) * F)
    return alphas


def effective_lambda(d: np.ndarray, dof: float, lo: float = 1e-12, hi: float = 1e12) -> float:
    """Ridge penalty whose degrees of freedom sum d / (d + lam) equal `dof` (bisection in log)."""
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        if np.sum(d / (d + mid)) > dof:
            lo = mid
        else:
            hi = mid
    return float(np.sqrt(lo * hi))


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean((pred - truth[:, None]) ** 2))


def run_all(cfg, ctx) -> dict[str, float]:
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    k, a_fix = tc.steps, tc.alpha_fixed
    x_tr = np.linspace(dc.x_low, dc.x_high, dc.n_train)
    x_te = np.linspace(dc.x_low, dc.x_high, dc.n_test)
    f_tr, f_te = target_fn(x_tr, dc.frequency), target_fn(x_te, dc.frequency)
    sd = KernelSD(x_tr, mc.gamma, mc.lam)
    A_te = sd.predictor(x_te)

    rng = np.random.default_rng(ctx.seed_for("train-data"))
    T = dc.n_trials
    Y = f_tr[:, None] + dc.noise_std * rng.standard_normal((dc.n_train, T))
    x_val = rng.uniform(dc.x_low, dc.x_high, size=dc.n_val)
    A_val = sd.predictor(x_val)
    y_val = target_fn(x_val, dc.frequency)[:, None] + dc.noise_std * rng.standard_normal((dc.n_val, T))

    # ---- the four strategies, iterated literally
    _, ev_sd = distill(sd, Y, [0.0] * k, A_te)
    _, ev_fix = distill(sd, Y, [a_fix] * k, A_te)
    a_or = distill_optimal(sd, Y, k, tc.clip_alpha, ref_train=f_tr[:, None])
    _, ev_or = distill(sd, Y, a_or, A_te)
    a_va = distill_optimal(sd, Y, k, tc.clip_alpha, A_val=A_val, y_val=y_val)
    _, ev_va = distill(sd, Y, a_va, A_te)

    for t in range(k + 1):
        ctx.log(t, mse_sd=mse(ev_sd[t], f_te), mse_fixed=mse(ev_fix[t], f_te),
                mse_opt_alpha=mse(ev_or[t], f_te), mse_val_alpha=mse(ev_va[t], f_te))

    # ---- closed form from the initial data vs the literal iteration (all strategies)
    err = 0.0
    for alphas, ev in ((np.zeros(k), ev_sd), (np.full(k, a_fix), ev_fix), (a_or, ev_or), (a_va, ev_va)):
        cs = filter_coeffs(sd.s, list(alphas))
        for t in range(1, k + 1):
            cf = closed_form_eval(sd, Y, cs[t - 1], alphas[t - 1], A_te)
            err = max(err, float(np.linalg.norm(cf - ev[t]) / np.linalg.norm(ev[t])))
    # explicit (non-recursive) coefficients for constant alpha
    cs_fix, cs_sd = filter_coeffs(sd.s, [a_fix] * k), filter_coeffs(sd.s, [0.0] * k)
    coef_err = max(float(np.max(np.abs(explicit_coeffs(sd.s, a, t) - cs[t])))
                   for a, cs in ((a_fix, cs_fix), (0.0, cs_sd)) for t in range(k + 1))

    # ---- infinitely many steps: ridge with lam / alpha, or zero for alpha = 0
    _, ev_lim = distill(sd, Y, [a_fix] * tc.limit_steps, A_te, keep_all=False)
    ridge_amp = sd.ridge_predictor(x_te, mc.lam / a_fix) @ Y
    limit_rel_err = float(np.linalg.norm(ev_lim[-1] - ridge_amp) / np.linalg.norm(ridge_amp))
    _, ev_lim0 = distill(sd, Y, [0.0] * tc.limit_steps, A_te, keep_all=False)
    alpha0_limit_ratio = float(np.linalg.norm(ev_lim0[-1]) / np.linalg.norm(ev_sd[0]))

    # ---- shrinkage only grows (constant alpha): spectral coefficients never increase
    inc = max(float(np.max(cs[t] - cs[t - 1])) for cs in (cs_fix, cs_sd) for t in range(1, k + 1))
    dof_ridge = float(np.sum(sd.s))
    dof_sd = float(np.sum(cs_sd[k]))
    lam_eff_sd = effective_lambda(sd.d, dof_sd)

    # ---- ridge with a tuned penalty (oracle, for context)
    lams = np.logspace(-4, 2, 61)
    mse_ridge_tuned = min(mse(sd.ridge_predictor(x_te, l) @ Y, f_te) for l in lams)

    out = {
        "mse_ridge": mse(ev_sd[0], f_te),
        "mse_sd_1": mse(ev_sd[1], f_te),
        "mse_sd_k": mse(ev_sd[k], f_te),
        "mse_sd_best_step": min(mse(e, f_te) for e in ev_sd),
        "mse_fixed_k": mse(ev_fix[k], f_te),
        "mse_opt_alpha_k": mse(ev_or[k], f_te),
        "mse_val_alpha_k": mse(ev_va[k], f_te),
        "mse_ridge_amplified": mse(ridge_amp, f_te),
        "mse_ridge_tuned": mse_ridge_tuned,
        "alpha_opt_mean_step1": float(np.mean(a_or[0])),
        "alpha_opt_mean_stepk": float(np.mean(a_or[-1])),
        "alpha_val_mean_stepk": float(np.mean(a_va[-1])),
        "closed_form_rel_err": err,
        "explicit_coeff_err": coef_err,
        "limit_rel_err": limit_rel_err,
        "alpha0_limit_ratio": alpha0_limit_ratio,
        "max_filter_increase": inc,
        "dof_ridge": dof_ridge,
        "dof_sd_k": dof_sd,
        "lam_eff_ratio_sd_k": lam_eff_sd / mc.lam,
    }
    return out
