"""Distillation losses and the digits self-distillation pieces (arXiv:2301.12923)."""
import numpy as np
import torch

from methods._lib.distill import kd_loss, soft_targets, true_class_prob
from methods._lib.stats import spearman
from methods.student_teacher_deviations.train import confidence_gaps, gd_linear, input_eigenbasis, load_split, mlp


def test_kd_loss_is_kl_plus_teacher_entropy_and_minimized_at_teacher():
    g = torch.Generator().manual_seed(0)
    t_logits, s_logits = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    T = 2.0
    p = soft_targets(t_logits, T)
    q = torch.log_softmax(s_logits / T, -1)
    kl = (p * (p.log() - q)).sum(-1).mean()
    ent = -(p * p.log()).sum(-1).mean()
    assert torch.allclose(kd_loss(s_logits, p, T), T**2 * (kl + ent), atol=1e-5)
    s = t_logits.clone().requires_grad_(True)  # student equal to the teacher: zero gradient
    kd_loss(s, p, T).backward()
    assert s.grad.abs().max() < 1e-6


def test_true_class_prob_and_confidence_gaps_on_known_case():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    assert torch.allclose(true_class_prob(logits, torch.tensor([0, 1])), torch.tensor([0.7, 0.1]))
    pt = torch.linspace(0.05, 0.95, 10)
    ps = pt.clone()
    ps[0] -= 0.04  # the teacher's least confident point: student lower
    ps[9] += 0.03  # the most confident point: student higher
    lo, hi, frac = confidence_gaps(pt, ps, low_q=0.1, high_q=0.9)
    assert abs(lo + 0.04) < 1e-6 and abs(hi - 0.03) < 1e-6 and frac == 1.0


def test_split_is_fixed_test_set_with_requested_label_noise():
    a = load_split(300, 797, 0.2, eval_seed=1, train_seed=2)
    b = load_split(300, 797, 0.2, eval_seed=1, train_seed=3)
    assert torch.equal(a[4], b[4])  # same test images/labels for every seed (features standardized per seed)
    assert a[3].shape == b[3].shape == (797, 64)
    assert not torch.equal(a[0], b[0])
    flipped = (a[1] != a[2]).float().mean().item()
    assert 0.13 < flipped < 0.27  # ~20% of labels flipped, always to another class
    assert abs(a[0].mean().item()) < 1e-4  # standardized on the training subset
    # pixels that are constant (blank) on the 300 training digits are set to 0, not divided by ~0
    const = a[0].std(0) == 0
    assert bool(const.any()) and bool((a[3][:, const] == 0).all())
    assert float(a[3].abs().max()) < 100


def test_config_refuses_a_split_larger_than_the_digits():
    import pytest
    from pydantic import ValidationError

    from methods.student_teacher_deviations import Config

    with pytest.raises(ValidationError, match="exceeds the 1797 digits"):
        Config(data={"n_train": 300, "n_test": 1600})
    Config(data={"n_train": 1000, "n_test": 797})


def test_mlp_shapes():
    net = mlp(64, 16, 2, 10)
    assert net(torch.zeros(3, 64)).shape == (3, 10)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3


def test_input_eigenbasis_is_descending_orthonormal_and_drops_null_directions():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 6, generator=g)
    X[:, 2] = 0.0  # a constant (standardized) pixel
    lam, V = input_eigenbasis(X)
    assert lam.shape == (5,) and V.shape == (6, 5)
    assert bool((lam[:-1] >= lam[1:]).all())
    assert torch.allclose(V.T @ V, torch.eye(5), atol=1e-5)
    assert V[2].abs().max() < 1e-6  # the null direction is gone
    assert torch.allclose(X.T @ X / 50 @ V, V * lam, atol=1e-4)


def test_spearman_known_values():  # methods/_lib/stats.py (also used by vanishing-gradients-rft)
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert abs(spearman(a, a**3) - 1.0) < 1e-12
    assert abs(spearman(a, -a) + 1.0) < 1e-12
    assert abs(spearman(a, torch.tensor([2.0, 1.0, 4.0, 3.0])) - 0.6) < 1e-12


def test_gd_linear_matches_closed_form_along_eigendirections_for_squared_loss():
    """For squared loss, GD from zero reaches 1 - (1 - eta lambda_i)^T of the least-squares weights along
    eigendirection i: the exact version of the bias that the cross-entropy experiment measures."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 4, generator=g) * torch.tensor([2.0, 1.0, 0.5, 0.2])
    Y = torch.randn(40, 3, generator=g)
    lam, V = input_eigenbasis(X)
    eta, T = 0.5 / float(lam[0]), 25
    W = gd_linear(X, lambda z: 0.5 * ((z - Y) ** 2).sum(-1).mean(), T, eta, n_classes=3)
    W_ls = torch.linalg.lstsq(X, Y).solution
    frac = (V.T @ W) / (V.T @ W_ls)
    expected = 1 - (1 - eta * lam) ** T
    assert torch.allclose(frac, expected[:, None].expand_as(frac), atol=1e-4)
