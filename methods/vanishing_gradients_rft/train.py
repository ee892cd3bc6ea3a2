"""Pretraining, RFT / SFT finetuning and gradient probes for ``vanishing-gradients-rft`` (torch)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from methods._lib.stats import spearman

N_CLASSES = 10


def make_data(cfg, seed: int) -> dict[str, torch.Tensor]:
    """Digits split into train/test, a random low-std group of train inputs, and for it a
    random wrong label used as the pretraining target (a pure function of ``seed``)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0 - 0.5).astype(np.float32)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_tr = int(round(cfg.data.train_frac * len(y)))
    tr, te = perm[:n_tr], perm[n_tr:]
    low = np.isin(y[tr], cfg.data.low_classes)
    wrong = (y[tr] + 1 + rng.integers(0, N_CLASSES - 1, n_tr)) % N_CLASSES
    labelled = np.zeros(n_tr, dtype=bool)
    labelled[rng.choice(n_tr, max(1, int(round(cfg.train.sft_frac * n_tr))), replace=False)] = True
    t = torch.as_tensor
    return {"X": t(X[tr]), "y": t(y[tr]), "Xte": t(X[te]), "yte": t(y[te]), "low": t(low),
            "wrong": t(wrong), "labelled": t(labelled)}


def mlp(d_in: int, hidden: int, depth: int) -> torch.nn.Sequential:
    layers, d = [], d_in
    for _ in range(depth):
        layers += [torch.nn.Linear(d, hidden), torch.nn.ReLU()]
        d = hidden
    layers.append(torch.nn.Linear(d, N_CLASSES))
    return torch.nn.Sequential(*layers)


def pretrain_targets(y: torch.Tensor, wrong: torch.Tensor, low: torch.Tensor, p_correct: float) -> torch.Tensor:
    """Low group: one-hot on a wrong label. Others: p_correct on the true label, the rest spread
    uniformly over the other labels (a high reward-std output distribution)."""
    T = torch.full((len(y), N_CLASSES), (1.0 - p_correct) / (N_CLASSES - 1))
    T[torch.arange(len(y)), y] = p_correct
    T[low] = F.one_hot(wrong[low], N_CLASSES).float()
    return T


def expected_reward(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """V(x) = E_{a ~ softmax(logits)} 1[a = y] = pi(y | x), exactly (sum over all actions)."""
    return logits.softmax(-1).gather(1, y[:, None]).squeeze(1)


def reward_std(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """std of the Bernoulli reward, sqrt(pi_y (1 - pi_y)), computed in log space: 1 - pi_y formed as a
    difference would round to 0 once pi_y > 1 - 6e-8 in float32 although the std is ~1e-4 there."""
    logp = logits.log_softmax(-1)
    log_py = logp.gather(1, y[:, None]).squeeze(1)
    log_rest = torch.logsumexp(logp.masked_fill(F.one_hot(y, N_CLASSES).bool(), float("-inf")), -1)
    return torch.exp(0.5 * (log_py + log_rest))


def logit_grad_norm(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||d V(x) / d z|| with z the logits: d pi_y / d z = pi_y (e_y - pi)."""
    p = logits.softmax(-1)
    py = p.gather(1, y[:, None])
    g = py * (F.one_hot(y, N_CLASSES).float() - p)
    return g.norm(dim=1)


def param_grad_norms(model, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-input ||grad_theta V(x)|| (exact expected gradient)."""
    out = []
    params = [p for p in model.parameters()]
    for i in range(len(y)):
        v = expected_reward(model(X[i:i + 1]), y[i:i + 1]).sum()
        gs = torch.autograd.grad(v, params)
        out.append(torch.sqrt(sum((g ** 2).sum() for g in gs)))
    return torch.stack(out).detach()


def _opt(tc, params, lr):
    return torch.optim.Adam(params, lr=lr) if tc.optimizer == "adam" else torch.optim.SGD(params, lr=lr)


@torch.no_grad()
def group_rewards(model, d) -> dict[str, float]:
    v = expected_reward(model(d["X"]), d["y"])
    s = reward_std(model(d["X"]), d["y"])
    return {"reward_low": float(v[d["low"]].mean()), "reward_high": float(v[~d["low"]].mean()),
            "reward_train": float(v.mean()), "std_low": float(s[d["low"]].mean()),
            "std_high": float(s[~d["low"]].mean()),
            "test_reward": float(expected_reward(model(d["Xte"]), d["yte"]).mean())}


def finetune(model, d, tc, mode: str, ctx, tag: str, offset: int, before_step=None) -> None:
    """mode: 'rft' (ascend mean exact expected reward), 'sft' (cross-entropy on true labels),
    'sft_rft' (tc.sft_steps of SFT on the labelled subset, then RFT on all train inputs).
    before_step(k, model), if given, is called with k = 0 .. steps (k updates done so far)."""
    opt = _opt(tc, model.parameters(), tc.lr)
    X, y = d["X"], d["y"]
    lab = d["labelled"]
    for step in range(1, tc.steps + 1):
        if before_step is not None:
            before_step(step - 1, model)
        logits = model(X)
        if mode == "sft" :
            loss = F.cross_entropy(logits, y)
        elif mode == "sft_rft" and step <= tc.sft_steps:
            loss = F.cross_entropy(logits[lab], y[lab])
        else:
            loss = -expected_reward(logits, y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % tc.log_every == 0 or step == tc.steps:
            r = group_rewards(model, d)
            ctx.log(offset + step, **{f"{tag}_{k}": v for k, v in r.items() if k.startswith("reward")})
    if before_step is not None:
        before_step(tc.steps, model)


def path_checkpoints(steps: int, n: int) -> list[int]:
    """Step 0 and about n - 1 further steps spaced geometrically up to `steps` (distinct, sorted)."""
    return sorted({0, *(int(round(v)) for v in np.geomspace(1, steps, max(1, n - 1)))})


def run_all(cfg, ctx) -> dict[str, float]:
    tc, mc = cfg.train, cfg.model
    d = make_data(cfg, ctx.seed_for("train-data"))
    torch.manual_seed(ctx.seed_for("init"))
    model = mlp(d["X"].shape[1], mc.hidden, mc.depth)

    # ---- pretraining: confident wrong outputs on the low group, spread-out outputs elsewhere
    T = pretrain_targets(d["y"], d["wrong"], d["low"], cfg.data.high_correct_prob)
    opt = torch.optim.Adam(model.parameters(), lr=tc.pretrain_lr)  # pretraining: always Adam
    with ctx.progress(total=tc.pretrain_steps + 3 * tc.steps, desc="pretrain+finetune") as bar:
        for step in range(1, tc.pretrain_steps + 1):
            loss = -(T * model(d["X"]).log_softmax(-1)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % tc.log_every == 0:
                ctx.log(step, pretrain_loss=float(loss.detach()))
            bar.update(1)

        out: dict[str, float] = {}
        out.update({f"init_{k}": v for k, v in group_rewards(model, d).items()})

        # ---- gradient probes at the pretrained point
        with torch.no_grad():
            logits = model(d["X"])
            std = reward_std(logits, d["y"])
            gz = logit_grad_norm(logits, d["y"])
        ratio = gz / std.clamp_min(1e-30) ** (2.0 / 3.0)
        out["thm1_logit_ratio_max"] = float(ratio.max())
        g = torch.Generator().manual_seed(ctx.seed_for("eval"))
        idx_low = torch.nonzero(d["low"]).squeeze(1)
        idx_high = torch.nonzero(~d["low"]).squeeze(1)
        idx_low = idx_low[torch.randperm(len(idx_low), generator=g)[: tc.grad_probe]]
        idx_high = idx_high[torch.randperm(len(idx_high), generator=g)[: tc.grad_probe]]
        gl = param_grad_norms(model, d["X"][idx_low], d["y"][idx_low])
        gh = param_grad_norms(model, d["X"][idx_high], d["y"][idx_high])
        out["grad_norm_low"] = float(gl.mean())
        out["grad_norm_high"] = float(gh.mean())
        out["grad_norm_ratio_low_high"] = float(gl.mean() / gh.mean())
        idx = torch.cat([idx_low, idx_high])
        gall = torch.cat([gl, gh]).numpy()
        sall = std[idx].numpy()
        out["grad_std_spearman"] = spearman(gall, sall)

        # ---- the same probe inputs along the SFT run, where each input's std sweeps a continuum
        # (low group: ~1e-3 up to ~0.5 and down again as pi_y goes from ~0 to ~1; others: 0.46 down)
        # (step 0 is the pretrained point, probed just above)
        checkpoints = set(path_checkpoints(tc.steps, tc.path_probes)) - {0}
        path_g, path_s = [torch.cat([gl, gh])], [std[idx]]

        def probe_path(k: int, net) -> None:
            if k in checkpoints:
                with torch.no_grad():
                    path_s.append(reward_std(net(d["X"][idx]), d["y"][idx]))
                path_g.append(param_grad_norms(net, d["X"][idx], d["y"][idx]))

        # ---- finetuning from the same pretrained point
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for i, mode in enumerate(["rft", "sft", "sft_rft"]):
            model.load_state_dict(state)
            finetune(model, d, tc, mode, ctx, mode, tc.pretrain_steps + i * tc.steps,
                     before_step=probe_path if mode == "sft" else None)
            r = group_rewards(model, d)
            out.update({f"{mode}_{k}": v for k, v in r.items()})
            out[f"{mode}_gain_low"] = r["reward_low"] - out["init_reward_low"]
            out[f"{mode}_gain_high"] = r["reward_high"] - out["init_reward_high"]
            bar.update(tc.steps)
    ps, pg = torch.cat(path_s), torch.cat(path_g)
    out["grad_std_spearman_sft_path"] = spearman(pg.numpy(), ps.numpy())
    out["sft_path_std_min"], out["sft_path_std_max"] = float(ps.min()), float(ps.max())
    return out
