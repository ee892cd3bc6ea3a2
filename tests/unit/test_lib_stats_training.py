"""methods/_lib: rank correlation with ties (stats.py) and the finite-loss check of the training loop."""
import numpy as np
import pytest

from methods._lib.stats import average_ranks, spearman
from registry.context import RunContext


def test_ties_share_the_mean_rank():
    assert average_ranks([3.0, 1.0, 1.0, 2.0, 1.0]).tolist() == [4.0, 1.0, 1.0, 3.0, 1.0]


def test_spearman_with_ties_does_not_depend_on_the_order_of_the_samples():
    a, b = np.array([1, 1, 1, 2, 3]), np.array([3, 2, 1, 4, 5])
    # average ranks [1, 1, 1, 3, 4] and [2, 1, 0, 3, 4]: covariance 8, variances 8 and 10
    assert spearman(a, b) == pytest.approx(8 / np.sqrt(80))
    assert spearman(a[::-1], b[::-1]) == pytest.approx(8 / np.sqrt(80))


def test_spearman_without_ties_is_the_correlation_of_the_orderings():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x**3) == pytest.approx(-1.0)
    y = rng.normal(size=50)
    ra, rb = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    assert spearman(x, y) == pytest.approx(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_optimize_stops_on_a_loss_that_is_not_finite(bad, tmp_path):
    import torch

    from methods._lib.training import optimize

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = iter([1.0, 2.0, bad, 3.0])

    def batch_loss():
        return model.weight.sum() * 0 + next(losses)

    ctx = RunContext(paper="p", profile="smoke", seed=0, device="cpu", out_dir=tmp_path, show_progress=False)
    with pytest.raises(FloatingPointError, match="at step 3"):
        optimize(model, opt, batch_loss, steps=4, ctx=ctx, desc="t", log_every=1)
    assert [step for _, step, name, _ in ctx.curves if name == "train_loss"] == [1, 2]
