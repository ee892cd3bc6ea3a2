"""vanishing-gradients-rft: exact expected reward, its logit gradient, data groups, pretraining targets."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from methods.vanishing_gradients_rft import Config  # noqa: E402
from methods.vanishing_gradients_rft.train import (  # noqa: E402
    N_CLASSES,
    expected_reward,
    logit_grad_norm,
    make_data,
    mlp,
    param_grad_norms,
    path_checkpoints,
    pretrain_targets,
    reward_std,
)


def test_expected_reward_and_std_match_enumeration():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, N_CLASSES, generator=g)
    y = torch.randint(0, N_CLASSES, (7,), generator=g)
    p = z.softmax(-1)
    r = torch.nn.functional.one_hot(y, N_CLASSES).float()  # reward of every action
    mean = (p * r).sum(-1)
    var = (p * (r - mean[:, None]) ** 2).sum(-1)
    assert torch.allclose(expected_reward(z, y), mean, atol=1e-6)
    assert torch.allclose(reward_std(z, y), var.sqrt(), atol=1e-6)


def test_logit_grad_matches_autograd_and_theorem1():
    g = torch.Generator().manual_seed(1)
    z = (3 * torch.randn(20, N_CLASSES, generator=g)).requires_grad_(True)
    y = torch.randint(0, N_CLASSES, (20,), generator=g)
    (gz,) = torch.autograd.grad(expected_reward(z, y).sum(), z)
    assert torch.allclose(logit_grad_norm(z.detach(), y), gz.norm(dim=1), atol=1e-6)
    # Theorem 1 on the logits (L_out = gamma = 1): ||grad|| <= 6 std^(2/3)
    assert bool((gz.norm(dim=1) <= 6 * reward_std(z.detach(), y) ** (2 / 3) + 1e-9).all())


def test_reward_std_stays_accurate_when_the_model_is_sure():
    # pi_y = 1 - ~2e-8: in float32 1 - pi_y rounds to 0, but the std is ~1.4e-4 (exact value in float64)
    z = torch.zeros(2, N_CLASSES)
    z[:, 3] = 20.0
    y = torch.tensor([3, 0])  # sure and right; sure and wrong
    z64 = z.double()
    p = z64.softmax(-1)
    want = torch.stack([(p[0, 3] * (1 - p[0, 3])).sqrt(), (p[1, 0] * (1 - p[1, 0])).sqrt()])
    got = reward_std(z, y)
    assert float(got[0]) > 1e-4
    assert torch.allclose(got.double(), want, rtol=1e-5)
    # the Theorem-1 ratio stays far below 6 there (for a softmax it is <= 2^(1/2) 2^(-4/3) ~ 0.561 for any logits)
    ratio = logit_grad_norm(z, y) / got ** (2 / 3)
    assert float(ratio.max()) < 0.5615


def test_theorem1_logit_ratio_has_the_algebraic_bound_over_extreme_logits():
    g = torch.Generator().manual_seed(2)
    z = 15 * torch.randn(2000, N_CLASSES, generator=g)
    y = torch.randint(0, N_CLASSES, (2000,), generator=g)
    ratio = logit_grad_norm(z, y) / reward_std(z, y).clamp_min(1e-30) ** (2 / 3)
    assert float(ratio.max()) <= 2 ** 0.5 * 2 ** (-4 / 3) + 1e-5


def test_path_checkpoints_start_at_zero_end_at_steps_and_are_distinct():
    assert path_checkpoints(500, 10) == [0, 1, 2, 5, 10, 22, 49, 106, 230, 500]  # 500 ** (k / 8)
    assert path_checkpoints(20, 10)[0] == 0 and path_checkpoints(20, 10)[-1] == 20
    assert path_checkpoints(3, 10) == [0, 1, 2, 3]


def test_config_refuses_bad_low_classes_and_an_sft_phase_that_leaves_no_rft():
    from pydantic import ValidationError

    for bad in ([7, 7], [12], [-1]):
        with pytest.raises(ValidationError, match="distinct digit classes"):
            Config(data={"low_classes": bad})
    with pytest.raises(ValidationError, match="sft_steps"):
        Config(train={"steps": 10, "sft_steps": 10})
    Config(train={"steps": 10, "sft_steps": 9})


def test_data_groups_and_targets():
    cfg = Config()
    d = make_data(cfg, 3)
    low_cls = torch.isin(d["y"], torch.tensor(cfg.data.low_classes))
    assert torch.equal(d["low"], low_cls)
    assert bool((d["wrong"] != d["y"]).all())
    assert int(d["labelled"].sum()) == round(cfg.train.sft_frac * len(d["y"]))
    T = pretrain_targets(d["y"], d["wrong"], d["low"], 0.3)
    assert torch.allclose(T.sum(1), torch.ones(len(d["y"])))
    assert bool((T[d["low"]].gather(1, d["y"][d["low"]][:, None]) == 0).all())
    assert torch.allclose(T[~d["low"]].gather(1, d["y"][~d["low"]][:, None]), torch.tensor(0.3))


def test_confident_wrong_output_has_tiny_parameter_gradient():
    torch.manual_seed(0)
    net = mlp(4, 8, 1)
    X = torch.randn(2, 4)
    with torch.no_grad():
        net[-1].bias.zero_()
        net[-1].bias[3] = 20.0  # confident on label 3
    g = param_grad_norms(net, X, torch.tensor([0, 3]))
    assert float(g[0]) < 1e-6 and float(g[1]) < 1e-6  # both std ~ 0 (wrong and right)
    with torch.no_grad():
        net[-1].bias.zero_()
    g2 = param_grad_norms(net, X, torch.tensor([0, 3]))
    assert float(g2.min()) > 1e-4
