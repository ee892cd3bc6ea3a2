"""Fast checks for methods/looped_transformer_multistep_gd (the shared model is tested in test_looped_linear.py)."""
import contextlib
import math

import pytest
import torch

from methods.looped_transformer_multistep_gd import Config
from methods.looped_transformer_multistep_gd.train import _covariances, _gd_baselines, _sampler, run_all, symmetrised
from methods._lib.looped_linear import RestrictedLinearAttention, sqrtm_psd


class _Ctx:
    device = "cpu"

    def __init__(self):
        self.logged = []

    def seed_for(self, purpose):
        return {"eval": 7}.get(purpose, hash(purpose) % 1000)

    def log(self, step, **m):
        self.logged.append((step, m))

    def progress(self, total, desc):
        class P:
            def update(self, n=1, **k):
                pass
        return contextlib.nullcontext(P())


def test_ood_covariance_is_a_whitened_shift_of_condition_number_ood_kappa():
    dc = Config().data
    S, S_ood = _covariances(dc)
    ev = torch.linalg.eigvalsh(S)
    assert math.isclose(float(ev[-1] / ev[0]), dc.kappa, rel_tol=1e-9)
    Wh = torch.linalg.inv(sqrtm_psd(S))
    R_ev = torch.linalg.eigvalsh(Wh @ S_ood @ Wh)
    assert math.isclose(float(R_ev[-1] / R_ev[0]), dc.ood_kappa, rel_tol=1e-9)
    assert abs(float(torch.log(R_ev).mean())) < 1e-9  # geometric mean 1


def test_preconditioned_gd_baseline_beats_plain_gd_on_anisotropic_data():
    dc = Config(data=dict(d=4, n_context=12)).data
    S, _ = _covariances(dc)
    g = torch.Generator().manual_seed(0)
    ev, ls = _sampler(dc, S, dc.n_context, g)(300), _sampler(dc, S, dc.n_context, g)(300)
    out = _gd_baselines(dc, S, ev, ls, steps=3)
    assert out["loss_pgd"] < 0.75 * out["loss_gd"] < 0.75


def test_tiny_run_reports_finite_metrics_and_loop_curves():
    cfg = Config(data=dict(d=3, n_context=8, ood_n_context=12),
                 model=dict(n_loops=2),
                 train=dict(steps=5, batch_size=16, eval_tasks=64, max_test_loops=4, log_every=5))
    ctx = _Ctx()
    out = run_all(cfg, ctx)
    for k in ("loss_looped", "loss_multilayer", "precond_rel_err", "u_rel", "id_loop_ratio", "ood_cov_loop_ratio",
              "pgd_id_loop_ratio", "pgd_ood_cov_loop_ratio", "looped_sym_loss_ratio", "looped_sym_ood_cov_loop_ratio"):
        assert math.isfinite(out[k]), k
    assert sum(1 for _, m in ctx.logged if "loss_vs_loops_id" in m) == 4


def test_extra_shifted_draws_leave_the_other_metrics_alone_and_report_the_worst_ratio():
    """The extra covariance-shift sets are drawn after every other evaluation set: the run's other metrics are
    those of a run without them, and the worst-draw ratios cover the profile's own set."""
    kw = dict(data=dict(d=3, n_context=8, ood_n_context=12), model=dict(n_loops=2, compare_untied=False))
    train = dict(steps=5, batch_size=16, eval_tasks=64, max_test_loops=4, log_every=5)
    base = run_all(Config(**kw, train=train), _Ctx())
    out = run_all(Config(**kw, train=train | {"ood_cov_extra_draws": 3}), _Ctx())
    assert {k: out[k] for k in base} == base
    assert set(out) - set(base) == {"ood_cov_loop_ratio_worst_draw", "ood_cov_draws_over_half",
                                    "pgd_ood_cov_loop_ratio_worst_draw"}
    assert out["ood_cov_loop_ratio_worst_draw"] >= out["ood_cov_loop_ratio"]
    assert out["pgd_ood_cov_loop_ratio_worst_draw"] >= out["pgd_ood_cov_loop_ratio"]
    assert out["ood_cov_draws_over_half"] in {0.0, 1.0, 2.0, 3.0, 4.0}
    assert (out["ood_cov_draws_over_half"] > 0) == (out["ood_cov_loop_ratio_worst_draw"] > 0.5)
    assert out["ood_cov_draws_over_half"] >= (out["ood_cov_loop_ratio"] > 0.5)


def test_worst_draw_of_the_idealised_solution_is_the_largest_ratio_over_the_sets():
    dc = Config(data=dict(d=4, n_context=12)).data
    S, S_ood = _covariances(dc)
    g = torch.Generator().manual_seed(0)
    ev, ls = _sampler(dc, S, dc.n_context, g)(300), _sampler(dc, S, dc.n_context, g)(300)
    sets = [_sampler(dc, S_ood, dc.n_context, g)(300) for _ in range(3)]
    each = [_gd_baselines(dc, S, ev, ls, 3, more_steps=6, shifted=b)["pgd_ood_cov_loop_ratio"] for b in sets]
    out = _gd_baselines(dc, S, ev, ls, 3, more_steps=6, shifted=sets[0], extra_shifted=tuple(sets[1:]))
    assert out["pgd_ood_cov_loop_ratio"] == each[0]
    assert out["pgd_ood_cov_loop_ratio_worst_draw"] == max(each)


def test_symmetrised_drops_only_the_antisymmetric_part():
    g = torch.Generator().manual_seed(0)
    m = RestrictedLinearAttention(3, 2, tied=True)
    S = torch.randn(3, 3, generator=g)
    with torch.no_grad():
        m.A.copy_(((S + S.T) / 2)[None])
        m.u.copy_(torch.randn(1, 3, generator=g) * 0.1)
    X, Y, xq = torch.randn(5, 6, 3, generator=g), torch.randn(5, 6, 1, generator=g), torch.randn(5, 3, generator=g)
    assert torch.allclose(symmetrised(m)(X, Y, xq), m(X, Y, xq))  # symmetric A: same model
    K = torch.randn(3, 3, generator=g)
    with torch.no_grad():
        m.A.add_((K - K.T)[None])
    twin = symmetrised(m)
    assert torch.allclose(twin.A[0], twin.A[0].T) and torch.allclose(twin.u, m.u)
    assert not torch.allclose(twin(X, Y, xq), m(X, Y, xq))
    with pytest.raises(ValueError, match="tied"):
        symmetrised(RestrictedLinearAttention(3, 2, tied=False))


def test_pgd_loop_ratio_is_below_one_when_the_step_is_stable():
    """Large n: Sigma^-1-preconditioned GD at the 3-step line-searched step keeps converging (ratio << 1)."""
    dc = Config(data=dict(d=3, n_context=200)).data
    S, S_ood = _covariances(dc)
    g = torch.Generator().manual_seed(0)
    ev, ls = _sampler(dc, S, dc.n_context, g)(300), _sampler(dc, S, dc.n_context, g)(300)
    out = _gd_baselines(dc, S, ev, ls, steps=3, more_steps=10, shifted=_sampler(dc, S_ood, dc.n_context, g)(300))
    assert out["pgd_id_loop_ratio"] < 0.1 and out["pgd_ood_cov_loop_ratio"] < 1.0
    assert "pgd_id_loop_ratio" not in _gd_baselines(dc, S, ev, ls, steps=3)


def test_u_probe_leaves_the_other_metrics_alone_and_starts_at_the_requested_size():
    kw = dict(data=dict(d=3, n_context=8, ood_n_context=12), model=dict(n_loops=2, compare_untied=False))
    train = dict(steps=5, batch_size=16, eval_tasks=64, max_test_loops=4, log_every=5)
    base = run_all(Config(**kw, train=train), _Ctx())
    out = run_all(Config(**kw, train=train | {"u_probe_steps": 3, "u_probe_rel": 0.4}), _Ctx())
    assert {k: out[k] for k in base} == base  # the probe runs last, on generators of its own
    assert set(out) - set(base) == {"u_probe_rel_start", "u_probe_rel_end", "u_probe_loss_start", "u_probe_loss_end"}
    assert out["u_probe_rel_start"] == pytest.approx(0.4, rel=1e-6)
    assert out["u_probe_rel_end"] != out["u_probe_rel_start"]  # the probe trained u
    with pytest.raises(ValueError, match="train_u"):
        Config(model=dict(train_u=False), train=dict(u_probe_steps=10))


def test_u_returns_to_zero_from_the_preconditioned_gd_solution():
    """At A = c Sigma^-1 (the idealised looped solution) a u moved away from 0 is pulled back by training:
    what u-returns-to-zero-after-perturbation measures."""
    from methods.looped_transformer_multistep_gd.train import u_probe

    cfg = Config(data=dict(d=3, n_context=20), model=dict(n_loops=3, compare_untied=False),
                 train=dict(steps=1, batch_size=256, lr=0.01, u_probe_steps=300, u_probe_rel=0.3))
    dc, tc = cfg.data, cfg.train
    S, _ = _covariances(dc)
    g = torch.Generator().manual_seed(0)
    ev, ls = _sampler(dc, S, dc.n_context, g)(2000), _sampler(dc, S, dc.n_context, g)(2000)
    lr = _gd_baselines(dc, S, ev, ls, steps=3)["pgd_lr"]
    model = RestrictedLinearAttention(dc.d, 3, tied=True)
    with torch.no_grad():
        model.A.copy_((lr * torch.linalg.inv(S)).float().unsqueeze(0))
    out = u_probe(model, dc, tc, S, ev, _Ctx())
    assert out["u_probe_rel_start"] == pytest.approx(0.3, rel=1e-6)
    assert out["u_probe_rel_end"] < 0.1
    assert out["u_probe_loss_end"] < out["u_probe_loss_start"]
