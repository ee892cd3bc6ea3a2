"""Self-distillation of small MLPs on sklearn digits (arXiv:2301.12923), torch on CPU."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from methods._lib.distill import kd_loss, one_hot_ce, soft_targets, true_class_prob
from methods._lib.stats import spearman


def load_split(n_train: int, n_test: int, label_noise: float, eval_seed: int, train_seed: int):
    """Digits: a fixed test set (eval seed, shared by every seed) and a per-seed training subset.

    Each training label is flipped with probability label_noise to a uniformly random other class.
    Features are standardized with the training subset's statistics; a pixel that is constant on the
    training subset carries no information there and is mapped to 0 (dividing by a tiny std would blow
    the test images that have ink there up to ~1e6).
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(eval_seed).permutation(len(y))
    te, pool = perm[:n_test], perm[n_test:]
    rng = np.random.default_rng(train_seed)
    tr = rng.choice(pool, size=n_train, replace=False)  # the config refuses n_train + n_test > 1797
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sd = np.where(sd > 0, sd + 1e-6, np.inf)
    Xtr, Xte = (X[tr] - mu) / sd, (X[te] - mu) / sd
    ytr_clean, yte = y[tr].copy(), y[te]
    ytr = ytr_clean.copy()
    flip = rng.random(len(ytr)) < label_noise
    ytr[flip] = (ytr[flip] + rng.integers(1, 10, size=int(flip.sum()))) % 10
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt)
    return (t(Xtr), t(ytr, torch.long), t(ytr_clean, torch.long), t(Xte), t(yte, torch.long))


def mlp(d_in: int, hidden: int, depth: int, n_classes: int) -> nn.Module:
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, n_classes))
    return nn.Sequential(*layers)


def train_model(X, y, tc, mc, seed: int, teacher_probs=None, switch_step: int | None = None, log=None):
    """Full-batch Adam. Loss: one-hot CE before `switch_step`, KD on teacher_probs from then on
    (switch_step = 0: KD throughout; teacher_probs None: one-hot throughout)."""
    torch.manual_seed(seed)
    model = mlp(X.shape[1], mc.hidden, mc.depth, 10)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    for step in range(tc.steps):
        logits = model(X)
        use_kd = teacher_probs is not None and step >= (switch_step or 0)
        loss = kd_loss(logits, teacher_probs, tc.temperature) if use_kd else one_hot_ce(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log is not None and (step + 1) % tc.log_every == 0:
            log(step + 1, float(loss.detach()))
    return model.eval()


@torch.no_grad()
def evaluate(model, X, y):
    logits = model(X)
    return {"acc": float((logits.argmax(-1) == y).float().mean()),
            "nll": float(nn.functional.cross_entropy(logits, y)),
            "p_true": true_class_prob(logits, y)}


def confidence_gaps(p_teacher: torch.Tensor, p_student: torch.Tensor, low_q: float, high_q: float):
    """Mean student - teacher confidence on the teacher's least (<= low_q quantile) and most
    (>= high_q quantile) confident points."""
    lo = p_teacher <= torch.quantile(p_teacher, low_q)
    hi = p_teacher >= torch.quantile(p_teacher, high_q)
    d = p_student - p_teacher
    return float(d[lo].mean()), float(d[hi].mean()), float((d[lo] < 0).float().mean())


def gd_linear(X: torch.Tensor, loss_fn, steps: int, lr: float, n_classes: int = 10) -> torch.Tensor:
    """Full-batch gradient descent from W = 0 on a bias-free linear softmax model X @ W."""
    W = torch.zeros(X.shape[1], n_classes, requires_grad=True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(loss_fn(X @ W), W)
        with torch.no_grad():
            W -= lr * g
    return W.detach()


def input_eigenbasis(X: torch.Tensor, rel_floor: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of X^T X / n, dropping null directions
    (constant pixels: their weights never move under GD from zero)."""
    lam, V = torch.linalg.eigh(X.T @ X / X.shape[0])
    keep = lam > rel_floor * lam.max()
    return lam[keep].flip(0), V[:, keep].flip(1)


def eigen_exaggeration(Xtr, ytr, Xte, yte, tc) -> dict[str, float]:
    """Linear self-distillation by GD (distillation at tc.temperature, as for the MLPs); student/teacher
    weight ratio per input eigendirection."""
    lam, V = input_eigenbasis(Xtr)
    lr = tc.linear_lr_scale / float(lam[0])
    W_t = gd_linear(Xtr, lambda z: one_hot_ce(z, ytr), tc.linear_steps, lr)
    p_t = soft_targets(Xtr @ W_t, tc.temperature)
    W_s = gd_linear(Xtr, lambda z: kd_loss(z, p_t, tc.temperature), tc.linear_steps, lr)
    ratio = (V.T @ W_s).norm(dim=1) / (V.T @ W_t).norm(dim=1)
    q = max(1, int(round(tc.eigen_frac * len(ratio))))
    top, bottom = float(ratio[:q].mean()), float(ratio[-q:].mean())
    acc = lambda W: float(((Xte @ W).argmax(-1) == yte).float().mean())
    return {
        "eig_ratio_top": top,
        "eig_ratio_bottom": bottom,
        "eig_ratio_top_minus_bottom": top - bottom,
        "eig_ratio_rank_corr": spearman(lam, ratio),
        "linear_teacher_test_acc": acc(W_t),
        "linear_student_test_acc": acc(W_s),
    }


def run_all(cfg, ctx) -> dict[str, float]:
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    Xtr, ytr, ytr_clean, Xte, yte = load_split(dc.n_train, dc.n_test, dc.label_noise,
                                               ctx.seed_for("eval"), ctx.seed_for("train-data"))
    base = ctx.seed_for("init") % (2**31)
    teacher = train_model(Xtr, ytr, tc, mc, base, log=lambda s, l: ctx.log(s, teacher_loss=l))
    with torch.no_grad():
        t_logits = teacher(Xtr)
    probs = soft_targets(t_logits, tc.temperature)
    ev_t_tr, ev_t_te = evaluate(teacher, Xtr, ytr), evaluate(teacher, Xte, yte)
    switch = int(round(tc.switch_frac * tc.steps))

    res = {k: [] for k in ("onehot", "kd", "switch")}
    gaps = []
    for j in range(tc.n_students):  # students start from fresh inits (not the teacher's)
        s = base + 1000 * (j + 1)
        oh = train_model(Xtr, ytr, tc, mc, s)
        kd = train_model(Xtr, ytr, tc, mc, s, teacher_probs=probs, switch_step=0)
        sw = train_model(Xtr, ytr, tc, mc, s, teacher_probs=probs, switch_step=switch)
        res["onehot"].append(evaluate(oh, Xte, yte)["acc"])
        res["kd"].append(evaluate(kd, Xte, yte)["acc"])
        res["switch"].append(evaluate(sw, Xte, yte)["acc"])
        # confidence on the (training) label: teacher vs distilled student, on training and test points
        gaps.append(confidence_gaps(ev_t_tr["p_true"], evaluate(kd, Xtr, ytr)["p_true"], tc.low_q, tc.high_q)
                    + confidence_gaps(ev_t_te["p_true"], evaluate(kd, Xte, yte)["p_true"], tc.low_q, tc.high_q))
    g = np.mean(np.array(gaps), axis=0)
    acc = {k: float(np.mean(v)) for k, v in res.items()}
    kd_gain, sw_gain = acc["kd"] - acc["onehot"], acc["switch"] - acc["onehot"]
    return {
        "teacher_train_acc": ev_t_tr["acc"],
        "teacher_test_acc": ev_t_te["acc"],
        "teacher_mean_conf_train": float(ev_t_tr["p_true"].mean()),
        "onehot_test_acc": acc["onehot"],
        "kd_test_acc": acc["kd"],
        "switch_test_acc": acc["switch"],
        "kd_gain": kd_gain,
        "switch_gain": sw_gain,
        "switch_recovered_minus_half_gain": sw_gain - 0.5 * kd_gain,
        "low_conf_gap_train": float(g[0]),
        "high_conf_gap_train": float(g[1]),
        "low_conf_frac_below_train": float(g[2]),
        "low_conf_gap_test": float(g[3]),
        "high_conf_gap_test": float(g[4]),
        "low_conf_frac_below_test": float(g[5]),
        **eigen_exaggeration(Xtr, ytr, Xte, yte, tc),
    }
