"""Understanding influence functions and datamodels via harmonic analysis (Saunshi et al., ICLR 2023, arXiv:2210.01072).

For a learner trained on a random subset S of n training points (each kept independently
with probability p) the test output f(S) is a function on the p-biased hypercube. With
the orthonormal p-biased characters phi_i(S) = (1[i in S] - p) / sqrt(p (1 - p)):

* the best linear datamodel f(S) ~ b + sum_i w_i 1[i in S] has w_i = f_hat(i) / sqrt(p (1 - p)),
  f_hat(i) = E[f(S) phi_i(S)] (degree-1 Fourier coefficients);
* its residual error is the Fourier mass above degree 1, R = Var f - W_1 with
  W_k = sum_{|T| = k} f_hat(T)^2;
* noise stability Stab_rho = E[f(S) f(S')] over rho-correlated pairs equals
  sum_k rho^k W_k, so R can be estimated from pairs (S, S') alone, without fitting a
  datamodel: L_rho = Var - (Stab_rho - mu^2) / rho satisfies L_rho <= R <= L_rho / (1 - rho),
  and a two-rho extrapolation of (Stab_rho - mu^2) / rho to rho = 0 gives a point estimate.

Learners are cheap so that tens of thousands of subset-trainings fit on CPU: ridge
regression and a k-nearest-neighbour margin on synthetic two-class Gaussian data. The
method fits the linear datamodel on held-out-checked subsets and compares its residual
with the noise-stability estimate per test point; it also checks that the fitted
coefficients match the degree-1 Fourier coefficients, and that group influences add up
(linear prediction of removing a group) for the learner with little mass above degree 1.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    n_train: int = Field(100, ge=2)
    n_test: int = Field(20, ge=1)
    dim: int = Field(5, ge=1)
    separation: float = Field(1.0, gt=0)  # distance of class means from 0 along each axis / sqrt(dim)
    label_noise: float = Field(0.1, ge=0, lt=0.5)


class Model(Strict):
    learners: list[Literal["ridge", "knn"]] = Field(default_factory=lambda: ["ridge", "knn"], min_length=1)
    ridge_lambda: float = Field(1.0, gt=0)
    knn_k: int = Field(5, ge=1)


class Train(Strict):
    p: float = Field(0.5, gt=0, lt=1)  # subset keep probability
    n_fit: int = Field(10000, ge=10)  # subsets for fitting the datamodel
    n_holdout: int = Field(3000, ge=10)  # subsets for its residual
    n_pairs: int = Field(30000, ge=10)  # rho-correlated pairs per rho
    # ridge is cheap: more pairs (the two-rho estimate's noise is ~8 Var / sqrt(pairs), against a
    # residual of ~8% of Var for ridge); None: n_pairs
    n_pairs_ridge: Optional[int] = Field(1_000_000, ge=10)
    rhos: tuple[Annotated[float, Field(gt=0, lt=1)], Annotated[float, Field(gt=0, lt=1)]] = (0.25, 0.5)
    group_size: int = Field(10, ge=1)  # group-influence check: removed group size
    n_groups: int = Field(20, ge=1)
    n_group_bases: int = Field(200, ge=1)  # base subsets per group

    @model_validator(mode="after")
    def _two_rhos(self):
        if self.rhos[0] == self.rhos[1]:
            raise ValueError(f"rhos must be two different correlations (the extrapolation to rho = 0 needs two), "
                             f"got {list(self.rhos)}")
        return self


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()

    @model_validator(mode="after")
    def _group_fits(self):
        if self.train.group_size > self.data.n_train:
            raise ValueError(f"train.group_size ({self.train.group_size}) exceeds data.n_train ({self.data.n_train})")
        return self


@register("influence-datamodels-harmonic", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # numpy only; kept out of the import path of the registry

    return run_all(cfg, ctx)
