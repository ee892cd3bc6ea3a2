"""Training and evaluation for ``parity-cot-transformer`` (torch; imported lazily).

The model (Kim & Suzuki, Sec. 2): a sequence of d input tokens followed by k - 1 generated
tokens. Token j carries the vector of bit j over all samples and a one-hot position e_j.
Keys and queries see only positions, so one-layer single-head attention is one score matrix
W (rows: generated positions, columns: all positions); node m outputs
x_hat_m = phi(sum_j softmax(W_m)_j x_j) over the positions it may attend to, with the fixed
link phi(z) = 2 z^2 - 1 (phi(0) = -1, phi(+-1) = 1: the average of two +-1 tokens is mapped
to their product). W = 0 at initialisation (uniform attention).

Variants (all trained by full-batch gradient descent on the same samples):
  direct  -- no CoT: one attention row over the d bits, then a trainable one-hidden-layer
             feed-forward link (which can express any k-parity once attention is uniform on
             the support); loss 1/2 (y - y_hat)^2.
  cot     -- end-to-end CoT: the model feeds its own outputs forward (causal mask, k - 1
             sequential steps), loss = CoT loss (mean over nodes of 1/2 (x_m - x_hat_m)^2);
             by default (backprop_through_chain: false) the generated tokens are fed forward as
             inputs without gradient, as sampled tokens would be.
  cot_tf  -- CoT with teacher forcing: every node reads the true intermediate parities.
  cot_sc  -- end-to-end CoT plus self-consistency: a node's generated token is passed on only
             if it is informative on augmented (fresh, unlabelled) inputs, i.e. its outputs
             there are (nearly) Boolean and balanced, mean |x_hat| >= 1 - tau and
             |mean x_hat| <= tau; otherwise the filter iota zeroes it. Levels are generated
             in parallel (level mask: log2 k steps).
Prediction loss / accuracy are always measured with autoregressive generation (no teacher
forcing) on held-out inputs.
"""
from __future__ import annotations

import math
import time

import torch

from methods._lib.boolean import MLP, parity_tree, random_support, sample_signs, tree_levels, tree_values


def phi(z: torch.Tensor) -> torch.Tensor:
    return 2.0 * z * z - 1.0


def groups_for(k: int, mask: str) -> list[list[int]]:
    """Nodes generated together: one group per level (level mask) or per node (causal mask)."""
    if mask == "level":
        return tree_levels(k)
    return [[m] for m in range(k - 1)]


def visible(d: int, k: int, mask: str) -> torch.Tensor:
    """Boolean (k-1, d+k-1): which positions each generated node may attend to.

    A node sees every position before the first node of its group: all earlier positions
    (causal mask), or the inputs and all earlier levels (level mask).
    """
    vis = torch.zeros(k - 1, d + k - 1, dtype=torch.bool)
    for group in groups_for(k, mask):
        for m in group:
            vis[m, : d + group[0]] = True
    return vis


def attention(W: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    return torch.softmax(W.masked_fill(~vis, float("-inf")), dim=1)


def teacher_forced(W, vis, x, inter):
    """Outputs of every node reading the true tokens (n, k-1)."""
    tokens = torch.cat([x, inter], dim=1)
    return phi(tokens @ attention(W, vis).T)


def generate(W, vis, x, k: int, mask: str, gate=None, detach: bool = False):
    """Autoregressive chain: returns the generated tokens (n, k-1).

    ``gate`` (k-1,) of 0/1 multiplies each node's output (the self-consistency filter iota:
    a node whose inputs failed the check outputs 0 and gets no gradient). ``detach``: treat the
    generated tokens as inputs (no gradient through the chain).
    """
    n, d = x.shape
    A = attention(W, vis)
    z_in = x @ A[:, :d].T  # contribution of the input bits, (n, k-1)
    raw: list[torch.Tensor] = [None] * (k - 1)
    fed: list[torch.Tensor] = []
    for group in groups_for(k, mask):
        idx = torch.as_tensor(group, device=x.device)
        z = z_in[:, idx]
        if fed:
            prev = torch.stack(fed, dim=1)  # (n, #generated so far)
            z = z + prev @ A[idx][:, d : d + len(fed)].T
        out = phi(z)
        if gate is not None:
            out = out * gate[idx]
        for col, m in enumerate(group):
            raw[m] = out[:, col]
            fed.append(out[:, col].detach() if detach else out[:, col])
    return torch.stack(raw, dim=1)


def informative(tok: torch.Tensor, tau: float) -> bool:
    """A generated token is informative when it is (nearly) Boolean and balanced on the inputs."""
    return bool(tok.abs().mean() >= 1.0 - tau and tok.mean().abs() <= tau)


def half_mse(a, b):
    return 0.5 * ((a - b) ** 2).mean()


class Direct(torch.nn.Module):
    def __init__(self, d: int, width: int, generator: torch.Generator):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(d))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.link = MLP(1, width, 1, act="relu", out_scale=0.1)

    def forward(self, x):
        z = x @ torch.softmax(self.w, dim=0)
        return self.link(z.unsqueeze(1)).squeeze(1)


def _gate(W, vis, aug_x, k, mask, tau):
    """Self-consistency filter from augmented (unlabelled) inputs, level by level.

    Level 1 is always on. Level l + 1 is on only if level l is on and every token it generates
    on the augmented inputs is informative; otherwise iota zeroes level l + 1's outputs.
    """
    with torch.no_grad():
        gate = torch.zeros(k - 1, device=W.device)
        levels = tree_levels(k)
        gate[levels[0]] = 1.0
        for lv, nxt in zip(levels, levels[1:]):
            toks = generate(W, vis, aug_x, k, mask, gate)
            if not all(informative(toks[:, m], tau) for m in lv):
                break
            gate[nxt] = 1.0
    return gate


def train_variant(variant, cfg, children, x, inter, y, x_test, inter_test, y_test, aug_x, ctx, gen):
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    d, k = dc.d, dc.k
    levels = tree_levels(k)
    solved_epoch = [math.nan] * len(levels)
    mask = mc.cot_mask if variant == "cot" else mc.parallel_mask
    dev = x.device
    vis = visible(d, k, mask).to(dev)

    if variant == "direct":
        model = Direct(d, mc.direct_width, gen).to(dev)
        params = list(model.parameters())
        lr = tc.direct_lr
    else:
        W = torch.zeros(k - 1, d + k - 1, device=dev, requires_grad=True)
        params = [W]
        lr = tc.lr
    opt = torch.optim.SGD(params, lr=lr)

    def evaluate():
        with torch.no_grad():
            if variant == "direct":
                pred = model(x_test)
                return {"pred_loss": float(half_mse(pred, y_test)),
                        "acc": float((torch.sign(pred) == y_test).float().mean())}
            gate = _gate(W, vis, aug_x, k, mask, tc.sc_tau) if variant == "cot_sc" else None
            raw = generate(W, vis, x_test, k, mask, gate)
            node = 0.5 * ((raw - inter_test) ** 2).mean(0)
            return {"pred_loss": float(half_mse(raw[:, -1], y_test)),
                    "acc": float((torch.sign(raw[:, -1]) == y_test).float().mean()),
                    "cot_loss": float(node.mean()),
                    "level_loss": [float(node[lv].mean()) for lv in levels]}

    hist = []
    for epoch in range(tc.epochs + 1):
        if epoch % tc.log_every == 0 or epoch == tc.epochs:
            ev = evaluate()
            ctx.log(epoch, **{f"{variant}_pred_loss": ev["pred_loss"], f"{variant}_acc": ev["acc"]})
            if "cot_loss" in ev:
                ctx.log(epoch, **{f"{variant}_cot_loss": ev["cot_loss"]})
                for li, v in enumerate(ev["level_loss"]):
                    if math.isnan(solved_epoch[li]) and v <= tc.solved_loss:
                        solved_epoch[li] = epoch
            hist.append((epoch, ev["pred_loss"]))
        if epoch == tc.epochs:
            break
        opt.zero_grad(set_to_none=True)
        if variant == "direct":
            loss = half_mse(model(x), y)
        elif variant == "cot_tf":
            loss = half_mse(teacher_forced(W, vis, x, inter), inter)
        else:
            gate = _gate(W, vis, aug_x, k, mask, tc.sc_tau) if variant == "cot_sc" else None
            raw = generate(W, vis, x, k, mask, gate, detach=not tc.backprop_through_chain)
            loss = half_mse(raw, inter)
        if not torch.isfinite(loss):
            break
        loss.backward()
        opt.step()
        if epoch % tc.log_every == 0:
            ctx.log(epoch, **{f"{variant}_train_loss": float(loss.detach())})

    ev = evaluate()
    out = {f"{variant}_pred_loss": ev["pred_loss"], f"{variant}_acc": ev["acc"]}
    if "cot_loss" in ev:
        out[f"{variant}_cot_loss"] = ev["cot_loss"]
        out[f"{variant}_min_pred_loss"] = min(p for _, p in hist)
        first = [e for e, p in hist if p <= tc.solved_loss]
        out[f"{variant}_solve_epoch"] = float(first[0]) if first else math.nan
        if variant in ("cot_tf", "cot_sc"):
            for li, e in enumerate(solved_epoch):
                out[f"{variant}_level{li + 1}_epoch"] = e
            done = [e for e in solved_epoch if not math.isnan(e)]
            # visible stages: every level solved, each strictly after the previous one
            out[f"{variant}_levels_in_order"] = float(
                len(done) == len(levels) and all(a < b for a, b in zip(done, done[1:])))
        if variant == "cot_tf" or variant == "cot_sc":
            # fraction of nodes whose two largest attention weights sit on the true children
            A = attention(W.detach(), vis).cpu()
            top2 = A.topk(2, dim=1).indices.sort(dim=1).values
            truth = torch.tensor(children).sort(dim=1).values
            out[f"{variant}_children_found"] = float((top2 == truth).all(dim=1).float().mean())
    return out


def one_step_tf(cfg, gen, children, x_test, y_test, k, d):
    """Thm. 5: a single gradient step from W = 0 on the teacher-forced CoT loss.

    The step uses its own n_one_step samples; the result is evaluated by autoregressive
    generation on the held-out inputs.
    """
    dev = x_test.device
    x = sample_signs(cfg.data.n_one_step, d, gen).to(dev)
    inter = tree_values(x, children)
    vis = visible(d, k, cfg.model.parallel_mask).to(dev)
    W = torch.zeros(k - 1, d + k - 1, device=dev, requires_grad=True)
    half_mse(teacher_forced(W, vis, x, inter), inter).backward()
    with torch.no_grad():
        W1 = -cfg.train.one_step_lr * W.grad
        raw = generate(W1, vis, x_test, k, cfg.model.parallel_mask)
    return {"tf_one_step_pred_loss": float(half_mse(raw[:, -1], y_test)),
            "tf_one_step_acc": float((torch.sign(raw[:, -1]) == y_test).float().mean())}


def run_all(cfg, ctx) -> dict[str, float]:
    dc, tc = cfg.data, cfg.train
    d, k = dc.d, dc.k
    t0 = time.time()
    gen = torch.Generator().manual_seed(ctx.seed_for("train-data"))
    support = random_support(d, k, torch.Generator().manual_seed(ctx.seed_for("task")))
    children = parity_tree(d, support)

    x = sample_signs(dc.n_train, d, gen)
    inter = tree_values(x, children)
    y = inter[:, -1]
    aug_x = sample_signs(dc.n_aug, d, gen)  # unlabelled inputs for the self-consistency check
    x_test = sample_signs(dc.n_test, d, torch.Generator().manual_seed(ctx.seed_for("eval")))
    inter_test = tree_values(x_test, children)
    y_test = inter_test[:, -1]
    # drawn on CPU generators (the same data on every device), then moved to the run's device
    x, inter, y, aug_x, x_test, inter_test, y_test = (
        t.to(ctx.device) for t in (x, inter, y, aug_x, x_test, inter_test, y_test))

    model_gen = torch.Generator().manual_seed(ctx.seed_for("model"))
    out: dict[str, float] = {}
    for variant in tc.variants:
        out.update(train_variant(variant, cfg, children, x, inter, y, x_test, inter_test, y_test, aug_x, ctx, model_gen))
    if tc.one_step_lr > 0:
        out.update(one_step_tf(cfg, gen, children, x_test, y_test, k, d))
    out["train_seconds"] = time.time() - t0
    return out
