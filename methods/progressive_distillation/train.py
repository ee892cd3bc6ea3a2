"""Training, distillation and probing for ``progressive-distillation`` (torch; imported lazily)."""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from methods._lib.boolean import MLP, kd_loss, monomial_correlations, parity, sample_signs


def _batch(n: int, k: int, m: int, gen: torch.Generator, device: str = "cpu"):
    """Drawn on a CPU generator, then moved: the same data on every device."""
    x = sample_signs(m, n, gen)
    y = ((parity(x, range(k)) + 1) / 2).long()  # class 1 <=> parity +1
    return x.to(device), y.to(device)


def _opt(tc, model):
    if tc.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=tc.lr)
    return torch.optim.SGD(model.parameters(), lr=tc.lr)


def _mlp(n: int, width: int, seed: int) -> MLP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(n, width, 2)


@torch.no_grad()
def _acc(model, x, y) -> float:
    return float((model(x).argmax(1) == y).float().mean())


@torch.no_grad()
def _probe(model, x, support, off, placebos=(), chunk: int = 16384):
    """Mean |E[chi_i(x) p(y=1|x)]| over degree-1 monomials on / off the support (official probing.py),
    and over each placebo set of coordinates."""
    p = torch.cat([torch.softmax(model(xb), dim=1)[:, 1] for xb in x.split(chunk)])
    on = monomial_correlations(p, x, [(i,) for i in support]).abs().mean()
    offc = monomial_correlations(p, x, [(i,) for i in off]).abs().mean()
    pl = [float(monomial_correlations(p, x, [(i,) for i in g]).abs().mean()) for g in placebos]
    return float(on), float(offc), pl


def spike(excess: list[float]) -> float:
    """Largest excess over the checkpoints minus the final one (>= 0 by construction)."""
    return max(excess) - excess[-1]


def _steps_to(curve: list[tuple[int, float]], target: float, cap: int) -> float:
    for step, acc in curve:
        if acc >= target:
            return float(step)
    return float(cap)  # censored: not reached within the budget


def run_all(cfg, ctx) -> dict[str, float]:
    dc, mc, tc = cfg.data, cfg.model, cfg.train
    n, k = dc.n, dc.k
    t0 = time.time()
    eval_gen = torch.Generator().manual_seed(ctx.seed_for("eval"))
    dev = ctx.device
    x_test, y_test = _batch(n, k, dc.n_test, eval_gen, dev)
    support = list(range(k))
    off = [int(i) + k for i in torch.randperm(n - k, generator=eval_gen)[: dc.n_probe_off]]
    x_probe = x_test if dc.n_probe is None else _batch(n, k, dc.n_probe, eval_gen, dev)[0]
    # drawn after every other evaluation draw, so that those stay as they were before placebos existed
    off_set = set(off)
    rest = [i for i in range(k, n) if i not in off_set]
    rest = [rest[int(j)] for j in torch.randperm(len(rest), generator=eval_gen)]
    placebos = [rest[g * k:(g + 1) * k] for g in range(dc.n_placebo_sets)]

    # ---- teacher: CE on fresh batches, checkpoints every ckpt_every steps
    teacher = _mlp(n, mc.teacher_width, ctx.seed_for("teacher-init")).to(dev)
    opt = _opt(tc, teacher)
    gen = torch.Generator().manual_seed(ctx.seed_for("teacher-data"))
    ckpts = [copy.deepcopy(teacher.state_dict())]
    probe = [(0, _acc(teacher, x_test, y_test), *_probe(teacher, x_probe, support, off, placebos))]
    with ctx.progress(tc.teacher_steps, "teacher") as bar:
        for step in range(1, tc.teacher_steps + 1):
            x, y = _batch(n, k, tc.batch_size, gen, dev)
            loss = F.cross_entropy(teacher(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
            if step % tc.ckpt_every == 0 or step == tc.teacher_steps:  # the final teacher is always kept
                ckpts.append(copy.deepcopy(teacher.state_dict()))
                acc, (on, offc, pl) = _acc(teacher, x_test, y_test), _probe(teacher, x_probe, support, off, placebos)
                probe.append((step, acc, on, offc, pl))
                ctx.log(step, teacher_acc=acc, teacher_deg1_corr=on, teacher_deg1_corr_off=offc)

    out: dict[str, float] = {"teacher_acc": probe[-1][1]}
    trans = [s for s, a, *_ in probe if a >= tc.acc_target]
    out["teacher_steps_to_target"] = float(trans[0]) if trans else float(tc.teacher_steps)
    # degree-1 probe: in-support correlation in excess of the off-support control at the same checkpoint
    excess = [(step, acc, on - offc) for step, acc, on, offc, _ in probe]
    out["teacher_deg1_spike"] = spike([e for _, _, e in excess])
    placebo_spikes = [spike([pl[g] - offc for *_, offc, pl in probe]) for g in range(len(placebos))]
    out["teacher_deg1_spike_placebo"] = sum(placebo_spikes) / len(placebo_spikes)
    out["teacher_deg1_spike_placebo_max"] = max(placebo_spikes)
    peak = max(excess, key=lambda r: r[2])
    out["teacher_deg1_excess_peak"] = peak[2]
    out["teacher_deg1_excess_peak_step"] = float(peak[0])
    out["teacher_acc_at_deg1_peak"] = peak[1]
    out["teacher_deg1_excess_init"] = excess[0][2]
    out["teacher_deg1_excess_final"] = excess[-1][2]
    out["teacher_deg1_corr_peak"] = max(r[2] for r in probe)
    out["teacher_deg1_corr_final"] = probe[-1][2]

    def teacher_at(idx: int) -> MLP:
        m = _mlp(n, mc.teacher_width, 0).to(dev)
        m.load_state_dict(ckpts[idx])
        return m.eval()

    final_teacher = teacher_at(len(ckpts) - 1)

    # ---- students: same init, same fresh batches, same number of steps
    student_seed = ctx.seed_for("student-init")
    for mode in tc.modes:
        student = _mlp(n, mc.student_width, student_seed).to(dev)
        opt = _opt(tc, student)
        gen = torch.Generator().manual_seed(ctx.seed_for("student-data"))
        curve = []
        current, current_idx = final_teacher, None
        with ctx.progress(tc.student_steps, f"student[{mode}]") as bar:
            for step in range(1, tc.student_steps + 1):
                x, y = _batch(n, k, tc.batch_size, gen, dev)
                logits = student(x)
                if mode == "ce":
                    loss = F.cross_entropy(logits, y)
                else:
                    if mode == "progressive":
                        idx = min(math.ceil(step / tc.ckpt_every), len(ckpts) - 1)
                        if idx != current_idx:
                            current, current_idx = teacher_at(idx), idx
                    with torch.no_grad():
                        t_logits = current(x)
                    loss = kd_loss(logits, t_logits, temperature=tc.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update()
                if step % tc.eval_every == 0:
                    acc = _acc(student, x_test, y_test)
                    curve.append((step, acc))
                    ctx.log(step, **{f"student_{mode}_acc": acc})
        out[f"{mode}_final_acc"] = curve[-1][1] if curve else _acc(student, x_test, y_test)
        out[f"{mode}_steps_to_target"] = _steps_to(curve, tc.acc_target, tc.student_steps + tc.eval_every)
        out[f"{mode}_auc_acc"] = sum(a for _, a in curve) / max(len(curve), 1)
    if "progressive" in tc.modes:
        for base in ("ce", "oneshot"):
            if base in tc.modes:
                out[f"speedup_vs_{base}"] = out[f"{base}_steps_to_target"] / out["progressive_steps_to_target"]
    out["train_seconds"] = time.time() - t0
    return out
