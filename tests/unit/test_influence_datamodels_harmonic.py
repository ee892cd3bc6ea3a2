"""influence-datamodels-harmonic: Fourier identities, correlated sampling, stability estimator, learners."""
from __future__ import annotations

import numpy as np

from methods.influence_datamodels_harmonic import Config
from methods.influence_datamodels_harmonic.train import (
    FourierAccumulator,
    correlated,
    fit_datamodel,
    fourier_degree1,
    knn_outputs,
    make_data,
    ridge_outputs,
    sample_subsets,
    stability_estimates,
)


def _f(S, p):
    """Known function: degree-1 part plus a degree-2 term on characters."""
    phi = (S.astype(float) - p) / np.sqrt(p * (1 - p))
    return (0.3 + phi[:, :3] @ np.array([1.0, -0.5, 0.25]) + 0.7 * phi[:, 3] * phi[:, 4])[:, None]


def test_datamodel_weights_equal_scaled_degree1_fourier():
    rng = np.random.default_rng(0)
    p = 0.3
    S = sample_subsets(rng, 100_000, 6, p)
    f = _f(S, p)
    theta = fit_datamodel(S, f)[1:, 0]
    expected = np.array([1.0, -0.5, 0.25, 0, 0, 0]) / np.sqrt(p * (1 - p))
    assert np.allclose(theta, expected, atol=0.03)
    assert np.allclose(fourier_degree1(S, f, p)[:, 0] / np.sqrt(p * (1 - p)), expected, atol=0.03)
    resid = ((f[:, 0] - theta @ S.T.astype(float) - fit_datamodel(S, f)[0, 0]) ** 2).mean()
    assert abs(resid - 0.49) < 0.015  # mass above degree 1 = 0.7^2


def test_streamed_fourier_coefficients_equal_the_batch_estimate():
    rng = np.random.default_rng(3)
    p = 0.3
    chunks = [sample_subsets(rng, m, 6, p) for m in (500, 1, 1200)]
    acc = FourierAccumulator(6, p)
    for S in chunks:
        acc.add(S, _f(S, p))
    S = np.vstack(chunks)
    assert np.allclose(acc.coefficients(), fourier_degree1(S, _f(S, p), p), atol=1e-12)


def test_config_refuses_unusable_rhos_and_oversized_groups():
    import pytest
    from pydantic import ValidationError

    for bad in ([0.5, 0.5], [0.0, 0.5], [0.25, 1.0], [-0.5, 0.5]):
        with pytest.raises(ValidationError, match="rhos"):
            Config(train={"rhos": bad})
    with pytest.raises(ValidationError, match="group_size"):
        Config(data={"n_train": 8}, train={"group_size": 10})
    Config(train={"rhos": [0.5, 0.25]})


def test_correlated_copy_statistics():
    rng = np.random.default_rng(1)
    p, rho = 0.4, 0.3
    S = sample_subsets(rng, 100_000, 5, p)
    S2 = correlated(rng, S, rho, p)
    assert abs(S2.mean() - p) < 0.005
    a = (S - p) / np.sqrt(p * (1 - p))
    b = (S2 - p) / np.sqrt(p * (1 - p))
    assert abs((a * b).mean() - rho) < 0.01


def test_stability_estimator_exact_on_known_spectrum():
    W = {1: 2.0, 2: 0.5, 3: 0.1}
    var = np.array([sum(W.values())])
    covs = {r: np.array([sum(r ** k * w for k, w in W.items())]) for r in (0.25, 0.5)}
    est, lo, hi = stability_estimates(var, covs)
    R = 0.6
    assert lo[0] <= R <= hi[0]
    # extrapolation error only from degree 3: rho1 * rho2 * W3
    assert abs(est[0] - (R + 0.25 * 0.5 * 0.1)) < 1e-12


def test_learners_match_brute_force():
    cfg = Config()
    d = make_data(cfg.data, 0)
    rng = np.random.default_rng(2)
    S = sample_subsets(rng, 5, cfg.data.n_train, 0.5)
    out_r = ridge_outputs(d, S, 1.0)
    out_k = knn_outputs(d, S, 3)
    X1 = np.hstack([d["X"], np.ones((len(d["X"]), 1))])
    Xt1 = np.hstack([d["Xt"], np.ones((len(d["Xt"]), 1))])
    for j, s in enumerate(S):
        A, y = X1[s], d["y"][s]
        w = np.linalg.solve(A.T @ A + np.eye(A.shape[1]), A.T @ y)
        assert np.allclose(out_r[j], (Xt1 @ w) * d["yt"])
        for t in range(len(d["Xt"])):
            idx = np.flatnonzero(s)
            dist = ((d["X"][idx] - d["Xt"][t]) ** 2).sum(1)
            nn = idx[np.argsort(dist)[:3]]
            assert np.isclose(out_k[j, t], d["yt"][t] * d["y"][nn].mean())
