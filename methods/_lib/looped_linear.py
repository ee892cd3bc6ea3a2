"""Looped (weight-shared) vs multilayer linear attention on in-context linear regression.

Shared by the Gatmiry et al. papers (arXiv:2410.08292 and arXiv:2410.21698). Builds on
``methods._lib.icl_linear`` (its ``LSAStack`` layout and sign convention, GD baseline).

Pieces:

* Covariance families: ``spectrum_covariance`` (a fixed anisotropic Sigma with a chosen
  condition number and a seeded random rotation) and ``diverse_covariances`` (one Sigma per
  task, condition number drawn in [1, kappa], random rotation: "task diversity"),
  ``atom_covariances`` (every eigenvalue drawn from a few fixed values: a discrete spectrum) and
  ``loguniform_covariances`` (i.i.d. log-uniform eigenvalues in a range).
* ``sample_cov_tasks``: x ~ N(0, Sigma_task), w ~ N(0, Sigma_w), y = <w, x> (scalar output),
  with per-task or shared covariance square roots.
* ``RestrictedLinearAttention``: the "restricted" linear self-attention of Gatmiry et al.,
  Z <- Z - (1/n) P Z M (Z^T Q Z) with only the top-left d x d block ``A`` of Q and the last
  row ``u`` of P (x-part) trainable, the y-coefficient of P fixed to 1. Each layer updates the
  y-slot of every token: r_i <- r_i - (1/n) sum_{j in context} (u.x_j + r_j) x_j^T A x_i.
  With u = 0 one layer is one step of preconditioned GD from the current iterate (A is the
  preconditioner times the learning rate); L layers (``tied``: one (A, u) looped L times) run L
  steps. The prediction after layer l is minus the query's y-slot, as in ``LSAStack``;
  ``to_lsa_stack`` converts it to an equivalent ``icl_linear.LSAStack``.
* ``scale_free_rel_err``: min_c ||c A - B||_F / ||B||_F (how far A is from a multiple of B).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from methods._lib.icl_linear import LSAStack


# --------------------------------------------------------------------------- covariances
def random_rotation(d: int, generator: torch.Generator, n: Optional[int] = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """Haar-random orthogonal matrix (d, d), or a batch (n, d, d) if ``n`` is given."""
    shape = (d, d) if n is None else (n, d, d)
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return q.to(dtype)


def spectrum(d: int, kappa: float, spacing: str = "log") -> Tensor:
    """Eigenvalues from 1 down to 1/kappa (log- or linearly spaced), largest first."""
    if d == 1:
        return torch.ones(1, dtype=torch.float64)
    if spacing == "log":
        return torch.logspace(0.0, -math.log10(kappa), d, dtype=torch.float64)
    return torch.linspace(1.0, 1.0 / kappa, d, dtype=torch.float64)


def spectrum_covariance(d: int, kappa: float, generator: torch.Generator, spacing: str = "log",
                        rotate: bool = True) -> Tensor:
    """Sigma = U diag(lambda) U^T with condition number ``kappa`` (float64, (d, d))."""
    lam = spectrum(d, kappa, spacing)
    if not rotate:
        return torch.diag(lam)
    U = random_rotation(d, generator, dtype=torch.float64)
    return (U * lam) @ U.T


def rotated_sqrt(lam: Tensor, generator: torch.Generator) -> Tensor:
    """Square roots L = U diag(sqrt(lam)) (n, d, d, float64; Sigma = L L^T) of task covariances with
    eigenvalues ``lam`` (n, d) and one Haar rotation U per task, drawn from ``generator``."""
    n, d = lam.shape
    U = random_rotation(d, generator, n=n, dtype=torch.float64)
    return U * lam.sqrt()[:, None, :]


def diverse_covariances(n: int, d: int, kappa_min: float, kappa_max: float, generator: torch.Generator,
                        lam_max: float = 1.0) -> tuple[Tensor, Tensor]:
    """``n`` task covariances with condition number k ~ U[kappa_min, kappa_max] each:
    eigenvalues lam_max * {1, 1/k, and d-2 values log-uniform in between}, Haar rotation.
    Returns the square roots L (n, d, d, float64; Sigma = L L^T) and the condition numbers."""
    k = kappa_min + (kappa_max - kappa_min) * torch.rand(n, generator=generator, dtype=torch.float64)
    t = torch.rand(n, d, generator=generator, dtype=torch.float64)
    t[:, 0], t[:, -1] = 0.0, 1.0
    lam = lam_max * torch.exp(-t * torch.log(k)[:, None])  # in [lam_max / k, lam_max]
    return rotated_sqrt(lam, generator), k


def atom_covariances(n: int, d: int, atoms: list[float], generator: torch.Generator,
                     lam_scale: float = 1.0) -> Tensor:
    """``n`` task covariances with a discrete spectrum: each of the d eigenvalues is drawn
    independently and uniformly from ``atoms`` (times ``lam_scale``), Haar rotation per task.
    Every eigenvalue of every task lies on one of a few fixed values, so an untied stack can
    place the roots of its GD polynomial prod_l (1 - eta_l lambda) exactly there.
    Returns the square roots L (n, d, d, float64; Sigma = L L^T)."""
    a = torch.as_tensor(atoms, dtype=torch.float64)
    idx = torch.randint(len(atoms), (n, d), generator=generator)
    lam = lam_scale * a[idx]
    return rotated_sqrt(lam, generator)


def loguniform_covariances(n: int, d: int, lam_min: float, lam_max: float,
                           generator: torch.Generator) -> Tensor:
    """``n`` task covariances whose d eigenvalues are i.i.d. log-uniform in [lam_min, lam_max],
    Haar rotation per task (a spectrum that covers a range without favouring any value).
    Returns the square roots L (n, d, d, float64; Sigma = L L^T)."""
    t = torch.rand(n, d, generator=generator, dtype=torch.float64)
    lam = torch.exp(math.log(lam_min) + t * (math.log(lam_max) - math.log(lam_min)))
    return rotated_sqrt(lam, generator)


def sqrtm_psd(S: Tensor) -> Tensor:
    """Symmetric square root of a PSD matrix (or batch)."""
    ev, V = torch.linalg.eigh(S)
    return (V * ev.clamp_min(0).sqrt().unsqueeze(-2)) @ V.transpose(-1, -2)


# --------------------------------------------------------------------------- data
def sample_cov_tasks(n_tasks: int, d: int, n_context: int, *, generator: torch.Generator,
                     x_sqrt: Optional[Tensor] = None, w_sqrt: Optional[Tensor] = None,
                     noise_std: float = 0.0, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Regression tasks with x ~ N(0, Lx Lx^T), w ~ N(0, Lw Lw^T), y = <w, x> (+ noise).

    ``x_sqrt``/``w_sqrt``: None (identity), a shared (d, d) factor or per-task (n_tasks, d, d).
    Returns X (B,N,d), Y (B,N,1), xq (B,d), yq (B,1), W (B,1,d), like ``icl_linear.sample_tasks``.
    """
    kw = dict(generator=generator, dtype=dtype)
    xs = torch.randn(n_tasks, n_context + 1, d, **kw)
    if x_sqrt is not None:
        xs = xs @ x_sqrt.to(dtype).transpose(-1, -2)
    w = torch.randn(n_tasks, d, **kw)
    if w_sqrt is not None:
        w = (w_sqrt.to(dtype) @ w.unsqueeze(-1)).squeeze(-1) if w_sqrt.dim() == 3 else w @ w_sqrt.to(dtype).T
    ys = xs @ w.unsqueeze(-1)
    if noise_std > 0:
        ys = ys + noise_std * torch.randn(ys.shape, **kw)
    return {"X": xs[:, :-1], "Y": ys[:, :-1], "xq": xs[:, -1], "yq": ys[:, -1], "W": w[:, None, :]}


# --------------------------------------------------------------------------- model
class RestrictedLinearAttention(nn.Module):
    """L layers of restricted linear attention, tied (looped) or untied (multilayer).

    Parameters: ``A`` (n_mod, d, d) and ``u`` (n_mod, d), n_mod = 1 when ``tied``.
    ``forward(X, Y, xq, depth)`` returns predictions after every layer 1..depth, shape
    (depth, B); a tied model can run any depth, an untied one at most ``n_layers``.
    """

    def __init__(self, d: int, n_layers: int, tied: bool, train_u: bool = True):
        super().__init__()
        self.d, self.n_layers, self.tied = d, n_layers, tied
        n_mod = 1 if tied else n_layers
        self.A = nn.Parameter(torch.zeros(n_mod, d, d))
        self.u = nn.Parameter(torch.zeros(n_mod, d), requires_grad=train_u)

    def reset_parameters(self, init_scale: float, init_noise: float, generator: torch.Generator) -> None:
        """A_l = init_scale * I + N(0, (init_noise/d)^2) entries (noise breaks the layer symmetry
        of untied models); u = 0."""
        with torch.no_grad():
            n_mod, d = self.A.shape[0], self.d
            noise = torch.randn(n_mod, d, d, generator=generator) * (init_noise / d)
            self.A.copy_(init_scale * torch.eye(d).expand(n_mod, d, d) + noise)
            self.u.zero_()

    def layer_params(self, l: int) -> tuple[Tensor, Tensor]:
        i = 0 if self.tied else l
        return self.A[i], self.u[i]

    def forward(self, X: Tensor, Y: Tensor, xq: Tensor, depth: Optional[int] = None) -> Tensor:
        depth = self.n_layers if depth is None else depth
        if not self.tied and depth > self.n_layers:
            raise ValueError(f"untied model has {self.n_layers} layers, asked for depth {depth}")
        n = X.shape[1]
        # Every layer lowers each token's y-slot by <v, x_i> for one vector v per task, so after any
        # number of layers the slots are r_j = y_j - <w, x_j> (context) and r_q = -<w, x_q> (query)
        # for an iterate w that starts at 0. The layer's (1/n) sum_j (u.x_j + r_j) x_j is then
        # ((u - w) G + h) / n with the context's G = X^T X and h = X^T y, computed once: a layer
        # costs O(d^2) per task instead of O(n d), with the same predictions (see the tests).
        G = X.transpose(1, 2) @ X  # (B, d, d)
        h = (X.transpose(1, 2) @ Y)[..., 0]  # (B, d)
        w = torch.zeros_like(xq)
        preds = []
        for l in range(depth):
            A, u = self.layer_params(l)
            s = (((u - w).unsqueeze(1) @ G).squeeze(1) + h) / n  # (1/n) sum_j (u.x_j + r_j) x_j
            w = w + s @ A  # r_i -= s^T A x_i for every token
            preds.append((w * xq).sum(-1))  # minus the query's y-slot
        return torch.stack(preds)


def to_lsa_stack(model: RestrictedLinearAttention, n_context: int) -> LSAStack:
    """An ``icl_linear.LSAStack`` computing the same predictions as ``model`` (at its own depth)
    for context length ``n_context``: W_q = blockdiag(A^T, 0), W_k = blockdiag(I, 0), W_v = I,
    P[:, y] = -(u, 1) / n."""
    d, e = model.d, model.d + 1
    stack = LSAStack(d, 1, model.n_layers, key_size=e, share_weights=model.tied)
    with torch.no_grad():
        for i, layer in enumerate(stack.layers):
            A, u = model.A[i].detach().cpu(), model.u[i].detach().cpu()
            Wq = torch.zeros(e, e)
            Wq[:d, :d] = A.T
            Wk = torch.zeros(e, e)
            Wk[:d, :d] = torch.eye(d)
            P = torch.zeros(e, e)
            P[:d, d] = -u / n_context
            P[d, d] = -1.0 / n_context
            layer.set_weights(Wq, Wk, torch.eye(e), P)
    return stack


# --------------------------------------------------------------------------- analysis
def scale_free_rel_err(A: Tensor, B: Tensor) -> tuple[float, float]:
    """(min_c ||c A - B||_F / ||B||_F, argmin c). Equals sqrt(1 - cos^2) of the Frobenius angle."""
    A, B = A.double(), B.double()
    aa = float((A * A).sum())
    if aa == 0.0:
        return 1.0, 0.0
    c = float((A * B).sum()) / aa
    return float((c * A - B).norm() / B.norm()), c


def max_rel_increase(losses: list[float]) -> float:
    """max_t (loss_{t+1} - loss_t) / loss_t over consecutive depths (<= 0: non-increasing)."""
    return max((b - a) / a for a, b in zip(losses[:-1], losses[1:]))


# --------------------------------------------------------------------------- training / evaluation
def train_restricted(model: RestrictedLinearAttention, sample, tc, ctx, tag: str) -> None:
    """Adam/SGD on the query MSE at the model's depth, fresh tasks every step from ``sample(n)``.
    ``tc`` needs steps, batch_size, optimizer, lr, lr_decay, grad_clip, log_every. Logs
    ``<tag>_train_loss`` (normalised by the batch's mean y_q^2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if tc.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=tc.lr)
    else:
        opt = torch.optim.SGD(params, lr=tc.lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc.steps) if tc.lr_decay == "cosine" else None)
    run_loss, run_n = 0.0, 0
    with ctx.progress(total=tc.steps, desc=f"train {tag}") as bar:
        for step in range(1, tc.steps + 1):
            b = sample(tc.batch_size)
            pred = model(b["X"], b["Y"], b["xq"])[-1]
            loss = ((pred - b["yq"][:, 0]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            lv = float(loss.detach()) / float((b["yq"] ** 2).mean())
            run_loss, run_n = run_loss + lv, run_n + 1
            if step % tc.log_every == 0 or step == tc.steps:
                ctx.log(step, **{f"{tag}_train_loss": run_loss / run_n})
                run_loss, run_n = 0.0, 0
            bar.update(1, loss=lv)


@torch.no_grad()
def depth_losses(model: RestrictedLinearAttention, batch: dict[str, Tensor], depth: int,
                 chunk: int = 4096) -> list[float]:
    """Normalised MSE (MSE / mean y_q^2) of the predictions after layers 1..depth."""
    n = batch["X"].shape[0]
    sq = torch.zeros(depth, dtype=torch.float64)
    for s in range(0, n, chunk):
        p = model(batch["X"][s:s + chunk], batch["Y"][s:s + chunk], batch["xq"][s:s + chunk], depth)
        sq += ((p.double() - batch["yq"][s:s + chunk, 0].double()) ** 2).sum(1)
    ref = float((batch["yq"].double() ** 2).sum())
    return (sq / ref).tolist()
