"""Training and evaluation for ``icl-what-learning-algorithm`` (torch; imported lazily)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods._lib.training import optimize
from methods._lib.icl_linear import gd_predict, line_search_gd_lr


# --------------------------------------------------------------------------- data
def sample_sequences(n_tasks: int, d: int, n_points: int, *, generator: torch.Generator,
                     w_std: float = 1.0, noise_std: float = 0.0) -> dict[str, Tensor]:
    """x ~ N(0, I_d), w ~ N(0, w_std^2 I_d), y = w.x + N(0, noise_std^2). X (B,n,d), Y (B,n,1), w (B,d)."""
    w = torch.randn(n_tasks, d, generator=generator) * w_std
    X = torch.randn(n_tasks, n_points, d, generator=generator)
    Y = torch.einsum("bnd,bd->bn", X, w)[..., None]
    if noise_std > 0:
        Y = Y + noise_std * torch.randn(Y.shape, generator=generator)
    return {"X": X, "Y": Y, "w": w}


def interleave(X: Tensor, Y: Tensor) -> Tensor:
    """Tokens (B, 2n, d+1): x_i -> [0, x_i], y_i -> [y_i, 0_d], in the order x_1, y_1, x_2, ..."""
    B, n, d = X.shape
    xt = torch.cat([X.new_zeros(B, n, 1), X], -1)
    yt = torch.cat([Y, X.new_zeros(B, n, d)], -1)
    return torch.stack([xt, yt], 2).reshape(B, 2 * n, d + 1)


# --------------------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, h: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv, self.proj = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.mlp = nn.Sequential(nn.Linear(h, mlp_ratio * h), nn.GELU(), nn.Linear(mlp_ratio * h, h))

    def forward(self, x: Tensor) -> Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, H // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, H))
        return x + self.mlp(self.ln2(x))


class ICLTransformer(nn.Module):
    """Pre-LN decoder-only transformer with learned absolute positions; a linear read-out
    at every x-token predicts that x's label from the tokens before it (softmax attention)."""

    def __init__(self, d: int, max_len: int, n_layers: int, d_model: int, n_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.embed = nn.Linear(d + 1, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 1)

    def init_weights(self, gen: torch.Generator, std: float = 0.02) -> None:
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                elif "ln" not in name:
                    p.zero_()

    def forward(self, tokens: Tensor) -> Tensor:
        """Output (B, T): the read-out at every position (only x-positions are used)."""
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln_f(h))[..., 0]

    def predict_all(self, X: Tensor, Y: Tensor) -> Tensor:
        """(B, n): prediction for y_{k+1} from the first k pairs and x_{k+1}, k = 0..n-1."""
        return self(interleave(X, Y))[:, 0::2]


# --------------------------------------------------------------------------- baselines
def knn_predict(Xc: Tensor, Yc: Tensor, xq: Tensor, k_nn: int = 3) -> Tensor:
    """Uniform k-NN: mean label of the k_nn context points closest to each query. xq (B,P,d) -> (B,P)."""
    kk = min(k_nn, Xc.shape[1])
    dist = torch.cdist(xq, Xc)  # (B,P,k)
    idx = dist.topk(kk, dim=-1, largest=False).indices
    yc = Yc[..., 0][:, None, :].expand(-1, xq.shape[1], -1)
    return torch.gather(yc, 2, idx).mean(-1)


def linear_weights(Xc: Tensor, Yc: Tensor, lam: float) -> Tensor:
    """OLS (min-norm, lam = 0) / ridge weights (B, d)."""
    if lam > 0:
        A = Xc.transpose(1, 2) @ Xc + lam * torch.eye(Xc.shape[-1], dtype=Xc.dtype)
        return torch.linalg.solve(A, Xc.transpose(1, 2) @ Yc)[..., 0]
    return (torch.linalg.pinv(Xc) @ Yc)[..., 0]


def implicit_weights(P: Tensor, preds: Tensor) -> Tensor:
    """Least-squares linear fit (B, d) of predictions (B,P) on probe inputs P (B,P,d) (Eq. 16)."""
    return (torch.linalg.pinv(P) @ preds[..., None])[..., 0]


# --------------------------------------------------------------------------- train / eval
def _train(model: ICLTransformer, cfg, gen: torch.Generator, noise_std: float, ctx, tag: str, steps: int) -> None:
    """``steps`` Adam steps on fresh sequences; warmup and cosine decay span those ``steps``."""
    dc, tc = cfg.data, cfg.train
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    warm = int(tc.warmup_frac * steps)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        p = (step - warm) / max(1, steps - warm)
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    dev = next(model.parameters()).device

    def batch_loss() -> torch.Tensor:
        # drawn on the CPU generator, then moved: the same data on every device
        b = sample_sequences(tc.batch_size, dc.d, dc.n_points, generator=gen, w_std=dc.w_std,
                             noise_std=noise_std)
        X, Y = b["X"].to(dev), b["Y"].to(dev)
        return F.mse_loss(model.predict_all(X, Y), Y[..., 0])

    optimize(model, opt, batch_loss, steps=steps, ctx=ctx, desc=f"train {tag}", log_every=tc.log_every,
        prefix=f"{tag}_", grad_clip=tc.grad_clip, sched=sched)


@torch.no_grad()
def evaluate(model: ICLTransformer, cfg, ev: dict, probes: Tensor, gd_lrs: list[float], noise_std: float,
             chunk: int = 4096, dev: str | torch.device = "cpu") -> dict[str, list[float]]:
    """Per prefix length k = 0..n-1: dimension-normalised SPD and ILWD between the model and each
    reference predictor, plus test MSEs. Returns lists indexed by k."""
    dc = cfg.data
    d, n = dc.d, dc.n_points
    X, Y = ev["X"].double(), ev["Y"].double()
    icl = torch.cat([model.predict_all(ev["X"][s:s + chunk].to(dev), ev["Y"][s:s + chunk].to(dev)).cpu()
                     for s in range(0, X.shape[0], chunk)]).double()  # (B, n)
    lams: dict[str, float] = {}
    if noise_std > 0:
        lam = noise_std ** 2 / dc.w_std ** 2  # Bayes-optimal ridge parameter sigma^2 / tau^2
        lams = {"ridge_bayes": lam, "ridge_small": lam / dc.ridge_factor, "ridge_large": lam * dc.ridge_factor}
    # "zero" (always predict 0) is the reference a model that learned nothing sits at: a claim that the model
    # is closer to one algorithm than to another can also hold for it (e.g. one GD step shrinks towards 0)
    names = ["ols", "gd", "knn", *lams, "zero"]
    out: dict[str, list[float]] = {f"spd_{a}": [] for a in names}
    out.update({f"ilwd_{a}": [] for a in names})
    out.update({f"mse_{a}": [] for a in ["icl", *names]})
    nt, Pn = probes.shape[0], probes.shape[1]
    for k in range(n):
        Xc, Yc, xq, yq = X[:, :k], Y[:, :k], X[:, k], Y[:, k, 0]
        preds = {}
        ws = {}
        if k == 0:
            for a in names:
                preds[a] = torch.zeros_like(yq)
        else:
            for a, lam in [("ols", 0.0), *lams.items()]:
                ws[a] = linear_weights(Xc, Yc, lam)
                preds[a] = (ws[a] * xq).sum(-1)
            preds["gd"] = gd_predict(Xc, Yc, xq, gd_lrs[k], 1)[:, 0]
            ws["gd"] = gd_lrs[k] * (Xc * Yc).sum(1) / k
            preds["knn"] = knn_predict(Xc, Yc, xq[:, None])[:, 0]
            preds["zero"], ws["zero"] = torch.zeros_like(yq), torch.zeros_like(xq)
        out["mse_icl"].append(float(((icl[:, k] - yq) ** 2).mean()))
        for a in names:
            out[f"spd_{a}"].append(float(((icl[:, k] - preds[a]) ** 2).mean()) / d)
            out[f"mse_{a}"].append(float(((preds[a] - yq) ** 2).mean()))
        # ---- ILWD on the first nt tasks with Pn unlabeled probes each
        if k == 0:
            for a in names:
                out[f"ilwd_{a}"].append(float("nan"))
            continue
        ctx_tok = interleave(ev["X"][:nt, :k], ev["Y"][:nt, :k])  # (nt, 2k, d+1)
        seq = ctx_tok[:, None].expand(nt, Pn, 2 * k, d + 1).reshape(nt * Pn, 2 * k, d + 1)
        q_tok = torch.cat([torch.zeros(nt * Pn, 1, 1), probes.reshape(nt * Pn, 1, d)], -1)
        seq = torch.cat([seq, q_tok], 1)
        p_icl = torch.cat([model(seq[s:s + chunk].to(dev))[:, -1].cpu() for s in range(0, seq.shape[0], chunk)])
        w_icl = implicit_weights(probes.double(), p_icl.view(nt, Pn).double())
        w_knn = implicit_weights(probes.double(), knn_predict(Xc[:nt], Yc[:nt], probes.double()))
        for a in names:
            wa = w_knn if a == "knn" else ws[a][:nt]
            out[f"ilwd_{a}"].append(float(((w_icl - wa) ** 2).sum(-1).mean()) / d)
    return out


def _summarise(per_k: dict[str, list[float]], d: int, tag: str, ctx) -> dict[str, float]:
    res: dict[str, float] = {}
    for name, vals in per_k.items():
        for k, v in enumerate(vals):
            if k > 0:
                ctx.log(k, **{f"{tag}_{name}_by_k": v})
        tail = vals[1:]
        res[f"{tag}_{name}"] = sum(tail) / len(tail)
        if name.startswith("spd_"):
            under = vals[1:d]
            res[f"{tag}_m{name}"] = sum(under) / len(under) if under else float("nan")
    return res


def run_all(cfg, ctx) -> dict[str, float]:
    from . import setups

    dc, mc, tc = cfg.data, cfg.model, cfg.train
    d, n = dc.d, dc.n_points
    # Data, baselines and metrics live on CPU (CPU generators: identical data on every device); the
    # transformer trains and predicts on ctx.device.
    out: dict[str, float] = {}
    for tag, depth, sigma, steps in setups(cfg):
        if not ctx.runs(tag):
            continue
        # evaluation, probe and line-search data: fixed across seeds (offset per noise level)
        g_eval = torch.Generator().manual_seed(ctx.seed_for("eval") + (1000 if sigma > 0 else 0))
        ev = sample_sequences(tc.eval_tasks, d, n, generator=g_eval, w_std=dc.w_std, noise_std=sigma)
        probes = torch.randn(min(tc.ilwd_tasks, tc.eval_tasks), tc.n_probes, d, generator=g_eval)
        ls = sample_sequences(tc.linesearch_tasks, d, n, generator=g_eval, w_std=dc.w_std, noise_std=sigma)
        gd_lrs = [0.0] + [line_search_gd_lr(ls["X"][:, :k], ls["Y"][:, :k], ls["X"][:, k], ls["Y"][:, k], 1)
                          for k in range(1, n)]

        g_init = torch.Generator().manual_seed(ctx.seed_for(f"init-{tag}"))
        model = ICLTransformer(d, 2 * n, depth, mc.d_model, mc.n_heads, mc.mlp_ratio)
        model.init_weights(g_init)
        model.to(ctx.device)
        g_train = torch.Generator().manual_seed(ctx.seed_for(f"train-data-{tag}"))
        _train(model, cfg, g_train, sigma, ctx, tag, steps)
        model.eval()
        out.update(_summarise(evaluate(model, cfg, ev, probes, gd_lrs, sigma, dev=ctx.device), d, tag, ctx))
    return out
