"""Unit tests for icl-what-learning-algorithm: data layout, baselines and the SPD/ILWD metrics."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from methods.icl_what_learning_algorithm import Config  # noqa: E402
from methods.icl_what_learning_algorithm.train import (  # noqa: E402
    ICLTransformer,
    evaluate,
    implicit_weights,
    interleave,
    knn_predict,
    linear_weights,
    sample_sequences,
)


def test_sample_statistics():
    g = torch.Generator().manual_seed(0)
    b = sample_sequences(20000, 4, 3, generator=g, w_std=1.0, noise_std=0.5)
    var_y = float(b["Y"].var())
    assert abs(var_y - (4 * 1.0 + 0.25)) < 0.15  # tau^2 d + sigma^2
    assert abs(float(b["X"].var()) - 1.0) < 0.02


def test_interleave_layout():
    X = torch.arange(6.0).view(1, 2, 3)
    Y = torch.tensor([[[10.0], [20.0]]])
    t = interleave(X, Y)
    assert t.shape == (1, 4, 4)
    assert torch.equal(t[0, 0], torch.tensor([0.0, 0, 1, 2]))
    assert torch.equal(t[0, 1], torch.tensor([10.0, 0, 0, 0]))
    assert torch.equal(t[0, 3], torch.tensor([20.0, 0, 0, 0]))


def test_model_is_causal():
    g = torch.Generator().manual_seed(1)
    m = ICLTransformer(3, 12, 2, 16, 2)
    m.init_weights(g, std=0.2)
    b = sample_sequences(4, 3, 6, generator=g)
    p1 = m.predict_all(b["X"], b["Y"])
    Y2 = b["Y"].clone()
    Y2[:, 3:] += 5.0  # change labels from y_4 on: predictions for k <= 3 must not move
    p2 = m.predict_all(b["X"], Y2)
    assert torch.allclose(p1[:, :4], p2[:, :4], atol=1e-6)
    assert not torch.allclose(p1[:, 4:], p2[:, 4:])


def test_linear_weights_and_implicit_fit():
    g = torch.Generator().manual_seed(2)
    b = sample_sequences(8, 3, 10, generator=g)
    X, Y = b["X"].double(), b["Y"].double()
    assert torch.allclose(linear_weights(X, Y, 0.0), b["w"].double(), atol=1e-8)  # noiseless, n > d
    lam = 0.3
    w_r = linear_weights(X, Y, lam)
    grad = X.transpose(1, 2) @ (X @ w_r[..., None] - Y) + lam * w_r[..., None]  # ridge normal equations
    assert grad.abs().max() < 1e-8
    P = torch.randn(8, 16, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(implicit_weights(P, (P * w_r[:, None]).sum(-1)), w_r, atol=1e-8)


def test_knn_known_case():
    Xc = torch.tensor([[[0.0], [1.0], [2.0], [10.0]]])
    Yc = torch.tensor([[[1.0], [2.0], [3.0], [100.0]]])
    out = knn_predict(Xc, Yc, torch.tensor([[[0.5], [9.0]]]))
    assert torch.allclose(out, torch.tensor([[2.0, (2.0 + 3.0 + 100.0) / 3]]))


class _OLSModel:
    """A 'transformer' that answers every x-token with the min-norm OLS fit of the pairs before it."""

    def __call__(self, tokens):
        B, T, e = tokens.shape
        out = torch.zeros(B, T, dtype=tokens.dtype)
        for t in range(0, T, 2):
            k = t // 2
            xq = tokens[:, t, 1:]
            if k:
                Xc, Yc = tokens[:, 0:t:2, 1:].double(), tokens[:, 1:t:2, :1].double()
                out[:, t] = (linear_weights(Xc, Yc, 0.0) * xq.double()).sum(-1).to(tokens.dtype)
        return out

    def predict_all(self, X, Y):
        return self(interleave(X, Y))[:, 0::2]


def test_metrics_identify_ols():
    cfg = Config.model_validate({"data": {"d": 3, "n_points": 6}})
    g = torch.Generator().manual_seed(3)
    ev = sample_sequences(200, 3, 6, generator=g)
    probes = torch.randn(20, 8, 3, generator=g)
    out = evaluate(_OLSModel(), cfg, ev, probes, [0.0] + [1.0] * 5, 0.0)
    for k in range(1, 6):
        assert out["spd_ols"][k] < 1e-8 and out["ilwd_ols"][k] < 1e-8
        assert out["spd_gd"][k] > 1e-2 and out["spd_knn"][k] > 1e-2
    assert out["mse_ols"][5] < 1e-8  # noiseless, k = 5 > d
    # the zero predictor: SPD to it is the model's own mean squared prediction / d, its MSE the labels' second moment
    icl = _OLSModel().predict_all(ev["X"], ev["Y"]).double()
    for k in range(1, 6):
        assert out["spd_zero"][k] == pytest.approx(float((icl[:, k] ** 2).mean()) / 3, rel=1e-9)
        assert out["ilwd_zero"][k] == pytest.approx(out["ilwd_ols"][k] + float(
            (linear_weights(ev["X"][:20, :k].double(), ev["Y"][:20, :k].double(), 0.0) ** 2).sum(-1).mean()) / 3,
            abs=1e-6)
        assert out["mse_zero"][k] == pytest.approx(float((ev["Y"][:, k, 0].double() ** 2).mean()), rel=1e-9)


def test_noisy_model_trains_for_its_own_steps(tmp_path):
    """``train.noisy_steps`` sets the noisy model's step count (and its schedule); the others keep ``steps``."""
    from methods.icl_what_learning_algorithm.train import run_all
    from registry.context import RunContext

    cfg = Config.model_validate({
        "data": {"d": 2, "n_points": 4},
        "model": {"n_layers": 1, "d_model": 8, "n_heads": 2},
        "train": {"steps": 3, "noisy_steps": 7, "log_every": 1, "eval_tasks": 20, "ilwd_tasks": 5,
                  "n_probes": 4, "linesearch_tasks": 20},
    })
    ctx = RunContext(paper="icl-what-learning-algorithm", profile="test", seed=0, device="cpu", out_dir=tmp_path,
                     show_progress=False)
    run_all(cfg, ctx)
    last = {}
    for _, step, name, _ in ctx.curves:
        if name.endswith("train_loss"):
            last[name] = max(step, last.get(name, 0))
    assert last == {"main_train_loss": 3, "noisy_train_loss": 7, "shallow_train_loss": 3}
    noisy_lr = [v for _, step, name, v in ctx.curves if name == "noisy_lr"]
    assert noisy_lr[-1] == pytest.approx(0.0, abs=1e-12) and max(noisy_lr) > 0  # cosine reaches 0 at step 7
