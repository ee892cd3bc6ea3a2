"""Fast checks for methods/depth_looping_icl_task_diversity."""
import contextlib
import math

import pytest
import torch

from methods.depth_looping_icl_task_diversity import Config
from methods._lib.looped_linear import RestrictedLinearAttention, atom_covariances, loguniform_covariances
from methods.depth_looping_icl_task_diversity.train import _sampler, _spread_steps, _step_sizes, run_all


class _Ctx:
    device = "cpu"

    def seed_for(self, purpose):
        return {"eval": 7}.get(purpose, hash(purpose) % 1000)

    def log(self, step, **m):
        pass

    def progress(self, total, desc):
        class P:
            def update(self, n=1, **k):
                pass
        return contextlib.nullcontext(P())


def _cov_eigs(batch):
    X = batch["X"].double()
    return torch.linalg.eigvalsh(X.transpose(1, 2) @ X / X.shape[1])


def test_shifted_samplers_have_the_intended_spectra():
    dc = Config(data=dict(n_context=4000)).data
    g = torch.Generator().manual_seed(0)
    base, scaled, hard = (_sampler(dc, g)(20), _sampler(dc, g, dc.ood_scale)(20), _sampler(dc, g, kappa_min=dc.kappa)(20))
    top = lambda b: float(_cov_eigs(b)[:, -1].mean())
    assert abs(top(base) - 1.0) < 0.08
    assert abs(top(scaled) - dc.ood_scale) < 0.1
    e = _cov_eigs(hard)
    assert float((e[:, -1] / e[:, 0]).mean()) == pytest.approx(dc.kappa, rel=0.15)


def _true_eigs(L):
    return torch.linalg.eigvalsh(L @ L.transpose(-1, -2))


def test_atom_covariances_put_every_eigenvalue_on_an_atom():
    g = torch.Generator().manual_seed(0)
    e = _true_eigs(atom_covariances(200, 5, [0.1, 1.0], g, lam_scale=1.2)).flatten()
    dist = torch.minimum((e - 0.12).abs(), (e - 1.2).abs())
    assert float(dist.max()) < 1e-9
    frac_small = float((e < 0.5).double().mean())
    assert 0.4 < frac_small < 0.6  # both atoms drawn, uniformly


def test_loguniform_covariances_stay_inside_the_range_and_spread_over_it():
    g = torch.Generator().manual_seed(0)
    e = _true_eigs(loguniform_covariances(400, 5, 0.1, 1.0, g)).flatten()
    assert float(e.min()) >= 0.1 * (1 - 1e-9) and float(e.max()) <= 1.0 + 1e-9
    # log-uniform: about 10% of the eigenvalues in each tenth of the log-range, none piled on an endpoint
    t = torch.log10(e) + 1.0
    hist = torch.histc(t.float(), bins=10, min=0.0, max=1.0) / t.numel()
    assert float(hist.min()) > 0.06 and float(hist.max()) < 0.14


def test_discrete_sampler_and_within_shift_have_the_intended_spectra():
    dc = Config(data=dict(spectrum="discrete", n_context=4000)).data
    g = torch.Generator().manual_seed(1)
    e = _cov_eigs(_sampler(dc, g)(20)).flatten()
    assert float(torch.minimum((e - 0.1).abs() / 0.1, (e - 1.0).abs()).max()) < 0.15  # near the atoms
    w = _cov_eigs(_sampler(dc, g, family="loguniform")(20)).flatten()
    off = torch.minimum((w - 0.1).abs() / 0.1, (w - 1.0).abs())
    assert float((off > 0.3).double().mean()) > 0.5  # most within-shift eigenvalues lie between the atoms
    assert float(w.min()) > 0.1 * 0.85 and float(w.max()) < 1.15


def test_atoms_must_lie_in_the_training_range():
    with pytest.raises(Exception):
        Config(data=dict(spectrum="discrete", kappa=10.0, atoms=[0.05, 1.0]))
    with pytest.raises(Exception):
        Config(data=dict(atoms=[0.1, 1.5]))


def test_init_step_range_must_be_positive_and_ordered():
    for bad in ([0.0, 1.0], [2.0, 1.0]):
        with pytest.raises(Exception):
            Config(train=dict(init_step_range=bad))


def test_spread_init_sets_log_spaced_steps_in_random_order():
    m = RestrictedLinearAttention(4, 6, tied=False)
    m.reset_parameters(0.0, 0.0, torch.Generator().manual_seed(0))
    _spread_steps(m, 0.5, 10.0, torch.Generator().manual_seed(0))
    steps = _step_sizes(m)
    assert sorted(steps) == pytest.approx(torch.logspace(math.log10(0.5), 1.0, 6).tolist(), rel=1e-5)
    A = m.A.detach()
    assert torch.allclose(A, torch.diag_embed(torch.diagonal(A, dim1=-2, dim2=-1)))  # eta_l I, no noise


def test_depths_must_increase():
    with pytest.raises(Exception):
        Config(model=dict(depths=[4, 2]))


def test_tiny_run_reports_per_depth_metrics():
    cfg = Config(data=dict(d=3, n_context=8), model=dict(depths=[1, 2]),
                 train=dict(steps=5, batch_size=16, eval_tasks=64, log_every=5))
    out = run_all(cfg, _Ctx())
    for k in ("loss_looped_L1", "loss_multi_L2", "robustness_gap_L2", "hard_robustness_gap_L2",
              "looped_max_rel_increase", "multi_max_rel_increase", "looped_depth_gain"):
        assert math.isfinite(out[k]), k


def test_tiny_discrete_run_with_spread_init_reports_within_shift_metrics():
    cfg = Config(data=dict(d=3, n_context=8, spectrum="discrete"), model=dict(depths=[1, 2]),
                 train=dict(steps=5, batch_size=16, eval_tasks=64, log_every=5, init_step_range=[0.5, 10.0]))
    out = run_all(cfg, _Ctx())
    for k in ("within_robustness_gap_L2", "within_degradation_multi_L2", "multi_max_step", "looped_step"):
        assert math.isfinite(out[k]), k
    assert out["multi_max_step"] > 5.0  # the spread start survives five small Adam steps
