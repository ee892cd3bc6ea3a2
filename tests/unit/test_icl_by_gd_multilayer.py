"""Unit tests for the multi-layer (GD++) extension of methods/icl_by_gd (arXiv:2212.07677)."""
import pytest
import torch
from pydantic import ValidationError

from methods._lib.icl_linear import LSAStack, build_tokens, gd_lsa_weights, gd_predict, sample_tasks
from methods.icl_by_gd import Config
from methods.icl_by_gd.train import _log_cond


def test_two_unshared_gd_layers_equal_two_gd_steps():
    """K separate layers with the GD construction (possibly different lrs) run K GD steps."""
    d, N = 4, 9
    g = torch.Generator().manual_seed(0)
    b = sample_tasks(128, d, N, generator=g, dtype=torch.float64)
    m = LSAStack(d, 1, 2, share_weights=False).double()
    m.layers[0].set_weights(*(w.double() for w in gd_lsa_weights(d, 1, N, 0.7)))
    m.layers[1].set_weights(*(w.double() for w in gd_lsa_weights(d, 1, N, 0.7)))
    with torch.no_grad():
        p = m(build_tokens(b["X"], b["Y"], b["xq"]))
    assert torch.allclose(p, gd_predict(b["X"], b["Y"], b["xq"], 0.7, 2), atol=1e-10)


def test_log_cond_known_case():
    X = torch.zeros(2, 3, 2, dtype=torch.float64)
    X[0, 0, 0], X[0, 1, 1] = 1.0, 10.0  # X^T X = diag(1, 100): cond 100
    X[1, 0, 0], X[1, 1, 1] = 2.0, 2.0  # cond 1
    assert abs(_log_cond(X) - 1.0) < 1e-9


def test_multilayer_off_by_default():
    assert Config().model.multilayer == []


def test_eval_every_must_be_a_multiple_of_log_every():
    """The test loss is only computed at logging steps: a period that is not a multiple used to be ignored."""
    Config.model_validate({"train": {"log_every": 25, "eval_every": 250}})
    Config.model_validate({"train": {"log_every": 25, "eval_every": 0}})
    with pytest.raises(ValidationError, match="multiple of log_every"):
        Config.model_validate({"train": {"log_every": 20, "eval_every": 25}})


def test_per_step_gd_step_sizes_beat_a_shared_one_and_find_the_grid_optimum():
    from methods._lib.icl_linear import gd_predict_lrs, half_sq_loss, line_search_gd_lr, line_search_gd_lrs

    g = torch.Generator().manual_seed(0)
    b = sample_tasks(3000, 3, 5, generator=g, x_dist="uniform", x_low=-0.5, x_high=0.5)
    X, Y, xq, yq = (b[k].double() for k in ("X", "Y", "xq", "yq"))
    # equal step sizes are plain K-step GD
    assert torch.allclose(gd_predict_lrs(X, Y, xq, torch.tensor([0.7, 0.7, 0.7], dtype=torch.float64)),
                          gd_predict(X, Y, xq, 0.7, 3))
    shared = line_search_gd_lr(X, Y, xq, yq, steps=2)
    lrs = line_search_gd_lrs(X, Y, xq, yq, steps=2, init_lr=shared)

    def loss(v):
        return float(half_sq_loss(gd_predict_lrs(X, Y, xq, torch.tensor(v, dtype=torch.float64)), yq))

    assert loss(lrs) < loss([shared, shared]) - 1e-4  # the shared value is a saddle, not the optimum
    grid = torch.linspace(0.5, 3 * shared, 60).tolist()
    best = min(loss([a, c]) for a in grid for c in grid)
    assert loss(lrs) <= best + 1e-6
    assert line_search_gd_lrs(X, Y, xq, yq, steps=1, init_lr=shared) == [shared]
