"""Subset trainings, linear datamodels and noise-stability estimates (numpy only)."""
from __future__ import annotations

import numpy as np


def make_data(dc, seed: int) -> dict[str, np.ndarray]:
    """Two Gaussian classes (labels +-1) with means +-separation * 1/sqrt(dim), unit covariance,
    and training labels each flipped with probability label_noise."""
    rng = np.random.default_rng(seed)
    mu = np.full(dc.dim, dc.separation / np.sqrt(dc.dim))

    def draw(n):
        y = rng.choice([-1.0, 1.0], n)
        return y[:, None] * mu + rng.standard_normal((n, dc.dim)), y

    X, y = draw(dc.n_train)
    flip = rng.random(dc.n_train) < dc.label_noise
    y = np.where(flip, -y, y)
    Xt, yt = draw(dc.n_test)
    return {"X": X, "y": y, "Xt": Xt, "yt": yt}


def sample_subsets(rng, m: int, n: int, p: float) -> np.ndarray:
    return rng.random((m, n)) < p


def correlated(rng, S: np.ndarray, rho: float, p: float) -> np.ndarray:
    """rho-correlated copy: each coordinate kept with prob rho, else redrawn from Bernoulli(p)."""
    keep = rng.random(S.shape) < rho
    return np.where(keep, S, rng.random(S.shape) < p)


def ridge_outputs(d, masks: np.ndarray, lam: float, chunk: int = 4096) -> np.ndarray:
    """Margin y_t * <w_S, x_t> of ridge regression (with bias) trained on each subset; (m, n_test)."""
    X = np.hstack([d["X"], np.ones((len(d["X"]), 1))])
    Xt = np.hstack([d["Xt"], np.ones((len(d["Xt"]), 1))])
    out = []
    outer = X[:, :, None] * X[:, None, :]  # (n, D, D)
    xy = X * d["y"][:, None]
    eye = lam * np.eye(X.shape[1])
    for s in range(0, len(masks), chunk):
        M = masks[s:s + chunk].astype(float)
        A = np.einsum("mn,nij->mij", M, outer) + eye
        b = M @ xy
        w = np.linalg.solve(A, b[:, :, None])[:, :, 0]
        out.append((w @ Xt.T) * d["yt"])
    return np.concatenate(out)


def knn_outputs(d, masks: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Margin y_t * mean label of the k nearest training points present in the subset; (m, n_test)."""
    dist = ((d["Xt"][:, None, :] - d["X"][None, :, :]) ** 2).sum(-1)  # (T, n)
    order = np.argsort(dist, axis=1)
    out = np.empty((len(masks), len(d["Xt"])))
    for t in range(len(d["Xt"])):
        o = order[t]
        yo = d["y"][o]
        for s in range(0, len(masks), chunk):
            M = masks[s:s + chunk][:, o]
            sel = M & (np.cumsum(M, axis=1) <= k)
            cnt = np.maximum(sel.sum(1), 1)
            out[s:s + chunk, t] = d["yt"][t] * (sel * yo).sum(1) / cnt
    return out


def fit_datamodel(masks: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Least squares of f (m, T) on [1, 1[i in S]]; returns (n + 1, T) with the bias first."""
    A = np.hstack([np.ones((len(masks), 1)), masks.astype(float)])
    return np.linalg.lstsq(A, f, rcond=None)[0]


def characters(masks: np.ndarray, p: float) -> np.ndarray:
    """The orthonormal p-biased degree-1 characters phi_i(S) = (1[i in S] - p) / sqrt(p (1 - p))."""
    return (masks.astype(float) - p) / np.sqrt(p * (1 - p))


def fourier_degree1(masks: np.ndarray, f: np.ndarray, p: float) -> np.ndarray:
    """Empirical f_hat(i) = E[f(S) phi_i(S)], (n, T)."""
    return characters(masks, p).T @ (f - f.mean(0)) / len(masks)


class FourierAccumulator:
    """Streaming f_hat(i) = Cov(f(S), phi_i(S)) over chunks of subsets (the same estimate as
    fourier_degree1 on the concatenated chunks)."""

    def __init__(self, n: int, p: float):
        self.p = p
        self.m, self.sum_phi, self.sum_f, self.sum_phi_f = 0, np.zeros(n), 0.0, 0.0

    def add(self, masks: np.ndarray, f: np.ndarray) -> None:
        phi = characters(masks, self.p)
        self.m += len(masks)
        self.sum_phi = self.sum_phi + phi.sum(0)
        self.sum_f = self.sum_f + f.sum(0)
        self.sum_phi_f = self.sum_phi_f + phi.T @ f

    def coefficients(self) -> np.ndarray:
        return self.sum_phi_f / self.m - np.outer(self.sum_phi / self.m, self.sum_f / self.m)


def stability_estimates(var: np.ndarray, covs: dict[float, np.ndarray]):
    """From Cov_rho = Stab_rho - mu^2 = sum_{k>=1} rho^k W_k (per test point) and Var = sum_{k>=1} W_k:

    * lower = Var - Cov_rho / rho = sum_{k>=2} (1 - rho^(k-1)) W_k <= R (largest rho),
    * upper = lower / (1 - rho) >= R, exact when the mass above degree 1 sits at degree 2,
    * point = Var - W1_hat, W1_hat the linear extrapolation of Cov_rho / rho to rho = 0 from two rhos.
    """
    (r1, c1), (r2, c2) = sorted(covs.items())
    g1, g2 = c1 / r1, c2 / r2
    w1 = (r2 * g1 - r1 * g2) / (r2 - r1)
    lower = var - g2
    return var - w1, lower, lower / (1 - r2)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def run_all(cfg, ctx) -> dict[str, float]:
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    d = make_data(dc, ctx.seed_for("train-data"))
    rng = np.random.default_rng(ctx.seed_for("subsets"))
    n, p = dc.n_train, tc.p

    def f_of(learner, masks):
        if learner == "ridge":
            return ridge_outputs(d, masks, mc.ridge_lambda)
        return knn_outputs(d, masks, mc.knn_k)

    out: dict[str, float] = {}
    with ctx.progress(total=len(mc.learners), desc="learners") as bar:
        for li, learner in enumerate(mc.learners):
            # ---- datamodel fit and its held-out residual
            Sf = sample_subsets(rng, tc.n_fit, n, p)
            Sh = sample_subsets(rng, tc.n_holdout, n, p)
            ff, fh = f_of(learner, Sf), f_of(learner, Sh)
            theta = fit_datamodel(Sf, ff)
            pred = theta[0] + Sh.astype(float) @ theta[1:]
            resid = ((fh - pred) ** 2).mean(0)  # (T,)
            # ---- noise stability from correlated pairs (no datamodel); the first subset of every pair is a
            # fresh p-biased draw, independent of Sf, and also gives the degree-1 Fourier coefficients
            n_pairs = tc.n_pairs_ridge if (learner == "ridge" and tc.n_pairs_ridge) else tc.n_pairs
            tot2, cnt = 0.0, 0
            cross, sum_a, sum_b = {}, {}, {}
            four = FourierAccumulator(n, p)
            for rho in tc.rhos:
                cross[rho] = sum_a[rho] = sum_b[rho] = 0.0
                for s0 in range(0, n_pairs, 20000):
                    S = sample_subsets(rng, min(20000, n_pairs - s0), n, p)
                    a, b = f_of(learner, S), f_of(learner, correlated(rng, S, rho, p))
                    tot2, cnt = tot2 + (a * a).sum(0) + (b * b).sum(0), cnt + 2 * len(S)
                    cross[rho] = cross[rho] + (a * b).sum(0)
                    sum_a[rho], sum_b[rho] = sum_a[rho] + a.sum(0), sum_b[rho] + b.sum(0)
                    four.add(S, a)
            mu = sum(sum_a[r] + sum_b[r] for r in tc.rhos) / cnt
            var = tot2 / cnt - mu ** 2
            # each rho centred on its own pairs: centring on the mean pooled over both rhos adds
            # mu * (m_rho - m_pooled) per rho, and the extrapolation multiplies that zero-mean noise by ~10
            covs = {r: cross[r] / n_pairs - (sum_a[r] / n_pairs) * (sum_b[r] / n_pairs) for r in tc.rhos}
            ok = var > 1e-12  # test points whose output varies with the subset
            # ---- fitted weights vs degree-1 Fourier coefficients from those independent subsets
            want = four.coefficients() / np.sqrt(p * (1 - p))  # (n, T)
            coef_cos = np.mean([_cos(theta[1:, t], want[:, t]) for t in np.flatnonzero(ok)])
            coef_rel_err = np.mean(np.linalg.norm(theta[1:, ok] - want[:, ok], axis=0)
                                   / np.linalg.norm(want[:, ok], axis=0))
            est, lo, hi = stability_estimates(var, covs)
            rel_err = np.abs(est[ok] - resid[ok]) / np.maximum(resid[ok], 1e-12)
            # ---- group influences: remove a group G from S u G, compare with the linear prediction
            errs, effs = [], []
            for _ in range(tc.n_groups):
                G = rng.choice(n, tc.group_size, replace=False)
                B = sample_subsets(rng, tc.n_group_bases, n, p)
                with_g, without_g = B.copy(), B.copy()
                with_g[:, G], without_g[:, G] = True, False
                delta = f_of(learner, with_g) - f_of(learner, without_g)  # (B, T)
                lin = theta[1:][G].sum(0)  # (T,)
                errs.append(((delta - lin) ** 2).mean(0))
                effs.append((delta ** 2).mean(0))
            group_err = float(np.mean(errs) / np.mean(effs))

            m = {
                "resid": float(resid.mean()),
                "resid_frac": float((resid[ok] / var[ok]).mean()),
                "stab_est": float(est.mean()),
                "stab_upper": float(hi.mean()),
                "stab_upper_rel_err": float(np.median(np.abs(hi[ok] - resid[ok]) / np.maximum(resid[ok], 1e-12))),
                "stab_rel_err": float(np.median(rel_err)),
                "stab_agg_rel_err": float(abs(est[ok].mean() - resid[ok].mean()) / max(resid[ok].mean(), 1e-12)),
                "stab_est_corr": float(np.corrcoef(est[ok], resid[ok])[0, 1]) if ok.sum() > 2 else float("nan"),
                "bound_coverage": float(np.mean((lo[ok] <= resid[ok] * 1.1) & (resid[ok] <= hi[ok] * 1.1))),
                "coef_cosine": float(coef_cos),
                "coef_rel_err": float(coef_rel_err),
                "group_rel_err": group_err,
                "var": float(var.mean()),
            }
            out.update({f"{learner}_{k}": v for k, v in m.items()})
            ctx.log(li, **{f"{learner}_{k}": v for k, v in m.items()})
            bar.update(1)
    return out
