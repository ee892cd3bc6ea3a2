"""Kernel self-distillation (arXiv:2102.13088): closed forms against brute force."""
import numpy as np

from methods.self_distillation_gt.train import (KernelSD, closed_form_eval, distill, distill_optimal,
                                                 effective_lambda, explicit_coeffs, filter_coeffs)


def _setup(seed=0, trials=7):
    rng = np.random.default_rng(seed)
    X = np.linspace(0, 1, 11)
    sd = KernelSD(X, gamma=80.0, lam=0.2)
    Y = np.sin(2 * np.pi * X)[:, None] + 0.5 * rng.standard_normal((11, trials))
    return sd, Y, rng


def test_step_solves_weighted_ridge_objective():
    # one step = argmin_w alpha|y - Kw|^2 + (1-alpha)|f - Kw|^2 + lam w^T K w, solved by brute force
    sd, Y, rng = _setup()
    y, f_prev, a = Y[:, 0], sd.S @ Y[:, 0], 0.3
    K = np.exp(-80.0 * (sd.X[:, None] - sd.X[None, :]) ** 2)
    H = K @ K + sd.lam * K  # normal equations of the objective in the dual weights
    w = np.linalg.lstsq(H, K @ (a * y + (1 - a) * f_prev), rcond=None)[0]
    fits, _ = distill(sd, Y[:, :1], [a])
    assert np.allclose(K @ w, fits[1][:, 0], atol=1e-8)


def test_alpha_one_is_ridge_and_closed_form_matches_iteration():
    sd, Y, _ = _setup()
    fits, _ = distill(sd, Y, [1.0] * 3)
    assert all(np.allclose(f, fits[0]) for f in fits)
    alphas = [0.0, 0.7, 0.2, 0.5]
    _, ev = distill(sd, Y, alphas, sd.predictor(np.linspace(0, 1, 50)))
    cs = filter_coeffs(sd.s, alphas)
    for t in range(1, 5):
        cf = closed_form_eval(sd, Y, cs[t - 1], alphas[t - 1], sd.predictor(np.linspace(0, 1, 50)))
        assert np.allclose(cf, ev[t], atol=1e-12)
    for a in (0.0, 0.4):
        cs = filter_coeffs(sd.s, [a] * 6)
        assert all(np.allclose(explicit_coeffs(sd.s, a, t), cs[t]) for t in range(7))


def test_limit_is_ridge_with_lam_over_alpha_and_zero_without_ground_truth():
    sd, Y, _ = _setup()
    x = np.linspace(0, 1, 30)
    _, ev = distill(sd, Y, [0.25] * 400, sd.predictor(x), keep_all=False)
    assert np.allclose(ev[-1], sd.ridge_predictor(x, 0.2 / 0.25) @ Y, atol=1e-10)
    fits, _ = distill(sd, Y, [0.0] * 400, keep_all=False)
    assert np.abs(fits[-1]).max() < 1e-8 * np.abs(fits[0]).max()


def test_optimal_alpha_beats_a_grid():
    sd, Y, _ = _setup()
    ref = np.sin(2 * np.pi * sd.X)[:, None]
    a_star = distill_optimal(sd, Y, 1, clip=False, ref_train=ref)[0]
    F0 = sd.S @ Y
    for j in range(Y.shape[1]):
        err = lambda a: np.sum((sd.S @ (a * Y[:, j] + (1 - a) * F0[:, j]) - ref[:, 0]) ** 2)
        grid = np.linspace(-1, 2, 3001)
        assert err(a_star[j]) <= min(err(a) for a in grid) + 1e-12


def test_effective_lambda_inverts_degrees_of_freedom():
    sd, _, _ = _setup()
    dof = float(np.sum(sd.d / (sd.d + 0.7)))
    assert abs(effective_lambda(sd.d, dof) - 0.7) < 1e-6


def test_closed_form_check_is_independent_of_the_literal_smoother():
    # The literal iteration uses a linear solve; the closed form uses the eigendecomposition. A wrong ridge
    # filter on the closed-form side (penalty 3 lam) must therefore show up as a disagreement.
    sd, Y, _ = _setup()
    K = np.exp(-80.0 * (sd.X[:, None] - sd.X[None, :]) ** 2)
    assert np.allclose(sd.S, K @ np.linalg.inv(K + sd.lam * np.eye(11)), atol=1e-10)
    x_te = np.linspace(0, 1, 31)
    A = sd.predictor(x_te)
    _, ev = distill(sd, Y, [0.3] * 3, A)
    cs = filter_coeffs(sd.s, [0.3] * 3)
    good = closed_form_eval(sd, Y, cs[2], 0.3, A)
    assert np.linalg.norm(good - ev[3]) / np.linalg.norm(ev[3]) < 1e-10
    bad_s = sd.d / (sd.d + 3 * sd.lam)
    bad = closed_form_eval(sd, Y, filter_coeffs(bad_s, [0.3] * 3)[2], 0.3, A)
    assert np.linalg.norm(bad - ev[3]) / np.linalg.norm(ev[3]) > 1e-2
