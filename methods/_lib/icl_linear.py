"""In-context linear regression toolkit shared by the ICL-as-optimisation papers.

Pieces:

* ``sample_tasks``: per-task linear regression problems ``y = W x + noise`` with
  uniform or Gaussian inputs (optional input covariance via a square-root factor).
* ``build_tokens``: the "constructed token" layout ``e_j = (x_j, y_j)`` plus a query
  token ``(x_query, 0)``.
* ``LSA`` / ``LSAStack``: linear self-attention layers with a residual connection,
  queries from every token, keys/values from the context tokens only (no 1/N
  normalisation; it is absorbed in the projection).  The prediction is read from the
  y-entries of the query token with a minus sign (the sign convention of the GD
  construction, whose value matrix maps ``y -> -y``).
* Closed-form / explicit baselines: OLS, ridge, k-step GD from ``W0 = 0`` with a
  line-searched learning rate, and the LSA weights that implement GD exactly.
* ``alignment``: prediction and input-sensitivity (d y_hat / d x_query) agreement
  between two predictors.

Losses follow the official code: ``0.5 * ||y_hat - y||^2`` averaged over tasks.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn


# --------------------------------------------------------------------------- data
def sample_tasks(
    n_tasks: int,
    d: int,
    n_context: int,
    *,
    generator: torch.Generator,
    out_dim: int = 1,
    x_dist: str = "uniform",
    x_low: float = -1.0,
    x_high: float = 1.0,
    x_cov_sqrt: Optional[Tensor] = None,
    w_std: float = 1.0,
    noise_std: float = 0.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Sample ``n_tasks`` regression tasks, each with ``n_context`` pairs and one query.

    ``x_dist="uniform"``: x ~ U(x_low, x_high)^d; ``"gaussian"``: x ~ N(0, I_d).
    If ``x_cov_sqrt`` (d x d, L) is given, x <- L x, i.e. Cov(x) = L Cov0 L^T.
    W ~ N(0, w_std^2 I) of shape (out_dim, d). Label noise N(0, noise_std^2) is added to
    context labels and the query target alike.
    Returns X (B,N,d), Y (B,N,o), xq (B,d), yq (B,o), W (B,o,d).
    """
    kw = dict(generator=generator, device=device, dtype=dtype)
    W = torch.randn(n_tasks, out_dim, d, **kw) * w_std
    shape = (n_tasks, n_context + 1, d)
    if x_dist == "uniform":
        xs = torch.rand(shape, **kw) * (x_high - x_low) + x_low
    elif x_dist == "gaussian":
        xs = torch.randn(shape, **kw)
    else:
        raise ValueError(f"unknown x_dist {x_dist!r}")
    if x_cov_sqrt is not None:
        xs = xs @ x_cov_sqrt.to(device=device, dtype=dtype).T
    ys = torch.einsum("bod,bnd->bno", W, xs)
    if noise_std > 0:
        ys = ys + noise_std * torch.randn(ys.shape, **kw)
    return {"X": xs[:, :-1], "Y": ys[:, :-1], "xq": xs[:, -1], "yq": ys[:, -1], "W": W}


def build_tokens(X: Tensor, Y: Tensor, xq: Tensor) -> Tensor:
    """Tokens (B, N+1, d+o): context ``(x_j, y_j)`` then the query ``(x_query, 0)``."""
    ctx = torch.cat([X, Y], dim=-1)
    q = torch.cat([xq, torch.zeros(xq.shape[0], Y.shape[-1], device=xq.device, dtype=xq.dtype)], -1)
    return torch.cat([ctx, q[:, None]], dim=1)


def half_sq_loss(pred: Tensor, target: Tensor) -> Tensor:
    """0.5 * squared error summed over output dims, averaged over tasks (official loss)."""
    return 0.5 * ((pred - target) ** 2).sum(-1).mean()


# --------------------------------------------------------------------------- models
def _variance_scaling_(t: Tensor, scale: float, generator: Optional[torch.Generator]) -> Tensor:
    """Haiku ``VarianceScaling(scale)`` default: fan-in, truncated normal at 2 sigma."""
    fan_in = t.shape[0]
    std = math.sqrt(scale / fan_in) / 0.87962566103423978  # std correction of truncation
    return nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)


class LSA(nn.Module):
    """One linear self-attention layer (single head), residual update of all tokens.

    ``h <- h + ((h W_q)(h_c W_k)^T)(h_c W_v) P`` where ``h_c`` are the context tokens
    (the query token is excluded from keys/values, as in the official code).
    Matrices act on row vectors (x @ W), shapes (e, k) and P: (k, e).
    """

    def __init__(self, emb: int, key_size: Optional[int] = None, n_heads: int = 1):
        super().__init__()
        k = key_size or emb
        self.emb, self.key_size, self.n_heads = emb, k, n_heads
        self.W_q = nn.Parameter(torch.zeros(emb, n_heads * k))
        self.W_k = nn.Parameter(torch.zeros(emb, n_heads * k))
        self.W_v = nn.Parameter(torch.zeros(emb, n_heads * k))
        self.P = nn.Parameter(torch.zeros(n_heads * k, emb))

    def reset_parameters(self, init_scale: float, generator: Optional[torch.Generator] = None) -> None:
        with torch.no_grad():
            for p in (self.W_q, self.W_k, self.W_v, self.P):
                _variance_scaling_(p, init_scale, generator)

    def set_weights(self, W_q: Tensor, W_k: Tensor, W_v: Tensor, P: Tensor) -> "LSA":
        with torch.no_grad():
            for dst, src in ((self.W_q, W_q), (self.W_k, W_k), (self.W_v, W_v), (self.P, P)):
                dst.copy_(src)
        return self

    def forward(self, h: Tensor, n_context: int) -> Tensor:
        B, T, _ = h.shape
        H, k = self.n_heads, self.key_size
        hc = h[:, :n_context]
        q = (h @ self.W_q).view(B, T, H, k)
        kk = (hc @ self.W_k).view(B, n_context, H, k)
        v = (hc @ self.W_v).view(B, n_context, H, k)
        attn = torch.einsum("bthk,bshk->bhts", q, kk)
        out = torch.einsum("bhts,bshk->bthk", attn, v).reshape(B, T, H * k)
        return h + out @ self.P

    def qk_pv(self) -> tuple[Tensor, Tensor]:
        """Effective (single-head) matrices ``W_q W_k^T`` (e,e) and ``W_v P`` (e,e)."""
        assert self.n_heads == 1
        return self.W_q @ self.W_k.T, self.W_v @ self.P


class LSAStack(nn.Module):
    """K residual LSA layers (``share_weights``: one layer applied K times, i.e. recurrent)."""

    def __init__(self, d: int, out_dim: int, n_layers: int = 1, key_size: Optional[int] = None,
                 n_heads: int = 1, share_weights: bool = False):
        super().__init__()
        self.d, self.out_dim, self.n_layers, self.share_weights = d, out_dim, n_layers, share_weights
        n_mod = 1 if share_weights else n_layers
        self.layers = nn.ModuleList(LSA(d + out_dim, key_size, n_heads) for _ in range(n_mod))

    def reset_parameters(self, init_scale: float, generator: Optional[torch.Generator] = None) -> None:
        for layer in self.layers:
            layer.reset_parameters(init_scale, generator)

    def forward(self, tokens: Tensor) -> Tensor:
        """Prediction (B, o): minus the y-entries of the query token after the stack."""
        n_context = tokens.shape[1] - 1
        h = tokens
        for i in range(self.n_layers):
            h = self.layers[0 if self.share_weights else i](h, n_context)
        return -h[:, -1, self.d:]


def gd_lsa_weights(d: int, out_dim: int, n_context: int, lr: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """LSA weights (key_size = d+o) whose forward pass is one GD step on
    ``L(W) = 1/(2N) sum_j ||W x_j - y_j||^2`` from the (zero) current estimate in the
    y-slots, with learning rate ``lr``: W_q = W_k = [I_d; 0], W_v maps y -> -y,
    P = (lr/N) on the y block. Applied K times it runs K GD steps (the residual keeps
    the running -W x prediction in every token's y-slot)."""
    e = d + out_dim
    Wqk = torch.zeros(e, e)
    Wqk[:d, :d] = torch.eye(d)
    Wv = torch.zeros(e, e)
    Wv[d:, d:] = -torch.eye(out_dim)
    P = torch.zeros(e, e)
    P[d:, d:] = torch.eye(out_dim) * (lr / n_context)
    return Wqk, Wqk.clone(), Wv, P


# --------------------------------------------------------------------------- baselines
def gd_predict(X: Tensor, Y: Tensor, xq: Tensor, lr: float | Tensor, steps: int = 1) -> Tensor:
    """``steps`` GD steps from W0 = 0 on 1/(2N) sum ||W x_j - y_j||^2; returns W xq (B,o)."""
    return gd_predict_lrs(X, Y, xq, [lr] * steps)


def ridge_predict(X: Tensor, Y: Tensor, xq: Tensor, lam: float = 0.0) -> Tensor:
    """Ridge (lam > 0) or minimum-norm OLS (lam = 0) prediction at the query."""
    if lam > 0:
        A = X.transpose(1, 2) @ X + lam * torch.eye(X.shape[-1], device=X.device, dtype=X.dtype)
        W = torch.linalg.solve(A, X.transpose(1, 2) @ Y)  # (B,d,o)
    else:
        W = torch.linalg.pinv(X) @ Y
    return torch.einsum("bdo,bd->bo", W, xq)


def ols_predict(X: Tensor, Y: Tensor, xq: Tensor) -> Tensor:
    return ridge_predict(X, Y, xq, 0.0)


def line_search_gd_lr(X: Tensor, Y: Tensor, xq: Tensor, yq: Tensor, steps: int = 1,
                      lr_max: float = 100.0, iters: int = 60) -> float:
    """Learning rate minimising the query loss of ``steps``-step GD on the given tasks.

    One step: the prediction is lr * g, so lr* = E[g.y]/E[g.g] in closed form. More steps:
    log-grid scan, then golden-section refinement around the best grid point.
    """
    X, Y, xq, yq = (t.double() for t in (X, Y, xq, yq))
    if steps == 1:
        g = gd_predict(X, Y, xq, 1.0, 1)
        return float((g * yq).sum() / (g * g).sum())

    def loss(lr: float) -> float:
        return float(half_sq_loss(gd_predict(X, Y, xq, lr, steps), yq))

    grid = torch.logspace(-3, math.log10(lr_max), 121, dtype=torch.float64).tolist()
    vals = [loss(x) for x in grid]
    vals = [v if math.isfinite(v) else float("inf") for v in vals]
    i = min(range(len(grid)), key=vals.__getitem__)
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    phi = (math.sqrt(5) - 1) / 2
    a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
    fa, fb = loss(math.exp(a)), loss(math.exp(b))
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - phi * (hi - lo)
            fa = loss(math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + phi * (hi - lo)
            fb = loss(math.exp(b))
    return math.exp((lo + hi) / 2)


def gd_predict_lrs(X: Tensor, Y: Tensor, xq: Tensor, lrs) -> Tensor:
    """GD from W0 = 0 on 1/(2N) sum ||W x_j - y_j||^2 with step size ``lrs[k]`` at step k (one step per
    entry of a sequence or 1-d tensor); returns W xq (B,o). Differentiable in ``lrs``."""
    N = X.shape[1]
    W = torch.zeros(X.shape[0], Y.shape[-1], X.shape[-1], device=X.device, dtype=X.dtype)
    for lr in lrs:
        resid = torch.einsum("bod,bnd->bno", W, X) - Y
        W = W - lr * torch.einsum("bno,bnd->bod", resid, X) / N
    return torch.einsum("bod,bd->bo", W, xq)


def line_search_gd_lrs(X: Tensor, Y: Tensor, xq: Tensor, yq: Tensor, steps: int,
                       init_lr: float | None = None, iters: int = 100) -> list[float]:
    """One step size per GD step, minimising the query loss of ``steps``-step GD on the given tasks: a
    stronger baseline than one shared step size (``line_search_gd_lr``), which a K-layer model with its own
    weights per layer gets for free. L-BFGS on the step sizes, started from step sizes spread evenly from
    0.5 lr to 1.5 lr, lr the shared line-searched value; the shared value is kept if it does better on these
    tasks. The GD iterate is a polynomial in the context covariance whose roots are the 1 / lr_k, so the loss
    does not depend on the order of the step sizes, and equal step sizes are a stationary point in the
    directions that make them unequal: a start there would stay there."""
    X, Y, xq, yq = (t.double() for t in (X, Y, xq, yq))
    if init_lr is None:
        init_lr = line_search_gd_lr(X, Y, xq, yq, steps=steps)
    shared = torch.full((steps,), float(init_lr), dtype=torch.float64)
    if steps == 1:  # the shared line search is already exact
        return shared.tolist()

    def loss(lrs: Tensor) -> Tensor:
        return half_sq_loss(gd_predict_lrs(X, Y, xq, lrs), yq)

    lrs = (float(init_lr) * torch.linspace(0.5, 1.5, steps, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.LBFGS([lrs], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> Tensor:
        opt.zero_grad()
        value = loss(lrs)
        value.backward()
        return value

    opt.step(closure)
    found = lrs.detach()
    with torch.no_grad():
        value, base = float(loss(found)), float(loss(shared))
    if math.isfinite(value) and bool(torch.isfinite(found).all()) and value < base:
        return found.tolist()
    return shared.tolist()


# --------------------------------------------------------------------------- analysis
def alignment(f: Callable[[Tensor], Tensor], g: Callable[[Tensor], Tensor], tokens: Tensor,
              d: int, chunk: int = 4096) -> dict[str, float]:
    """Agreement of two token->prediction maps on ``tokens`` (official-code metrics).

    pred_cosine: cosine between the stacked predictions of all tasks;
    pred_l2: mean over tasks of ||f - g|| (prediction vectors);
    sensitivity_cosine / sensitivity_l2: mean cosine and mean L2 distance of the
    gradients d y_hat / d x_query (first output dim), per task;
    pred_rel_l2 / sensitivity_rel_l2: those mean distances divided by the mean norm of
    ``g``'s predictions / sensitivities.
    """
    cos_sum, sens_l2_sum, pred_l2_sum, sens_norm_g = 0.0, 0.0, 0.0, 0.0
    n = tokens.shape[0]
    preds_f, preds_g = [], []
    for s in range(0, n, chunk):
        t = tokens[s:s + chunk].detach().clone().requires_grad_(True)
        pf = f(t)
        (gf,) = torch.autograd.grad(pf[:, 0].sum(), t)
        t2 = tokens[s:s + chunk].detach().clone().requires_grad_(True)
        pg = g(t2)
        (gg,) = torch.autograd.grad(pg[:, 0].sum(), t2)
        sf, sg = gf[:, -1, :d], gg[:, -1, :d]
        cos = (sf / (sf.norm(dim=1, keepdim=True) + 1e-8) * (sg / (sg.norm(dim=1, keepdim=True) + 1e-8))).sum(1)
        cos_sum += float(cos.detach().sum())
        sens_l2_sum += float((sf - sg).detach().norm(dim=1).sum())
        sens_norm_g += float(sg.detach().norm(dim=1).sum())
        pred_l2_sum += float((pf - pg).detach().norm(dim=1).sum())
        preds_f.append(pf.detach())
        preds_g.append(pg.detach())
    pf_all, pg_all = torch.cat(preds_f).flatten(), torch.cat(preds_g).flatten()
    pred_cos = float(pf_all @ pg_all / (pf_all.norm() * pg_all.norm() + 1e-12))
    return {
        "pred_cosine": pred_cos,
        "pred_l2": pred_l2_sum / n,
        "sensitivity_cosine": cos_sum / n,
        "sensitivity_l2": sens_l2_sum / n,
        "pred_rel_l2": pred_l2_sum / float(pg_all.view(n, -1).norm(dim=1).sum()),
        "sensitivity_rel_l2": sens_l2_sum / sens_norm_g,
    }

