"""Can Looped Transformers Learn to Implement Multi-step Gradient Descent for In-context
Learning? (Gatmiry, Saunshi, Reddi, Jegelka, Kumar; ICML 2024; arXiv:2410.08292).

A looped (weight-shared) restricted linear transformer, Z <- Z - (1/n) P Z M (Z^T Q Z) with
only the top-left d x d block A of Q and the x-part u of P's last row trainable, is trained on
in-context linear regression x ~ N(0, Sigma), w ~ N(0, Sigma^-1), y = <w, x> with L loops.
Theory (Thm. 3.2): the global minimiser has A ~ Sigma^-1 (up to a scale in [1-c, 1+c]) and
u = 0, i.e. it runs L steps of Sigma^-1-preconditioned GD. We use an anisotropic Sigma (the
paper's experiments use Sigma = I, where Sigma^-1 cannot be told apart from the identity).

Reported: normalised test losses (MSE / E[y_q^2]) of the looped model and of an untied
L-layer model of the same kind, of line-searched L-step plain GD and Sigma^-1-preconditioned
GD; the scale-free distance of A to Sigma^-1 (and to I), the size of u; and the loss of the
looped model run with 1..max_test_loops loops in distribution, under a covariance shift and
with a longer context (``*_loop_ratio``: loss at max_test_loops / loss at the trained loops,
``*_max_rel_increase``: largest relative loss increase between consecutive loop counts).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    d: int = Field(10, ge=2)
    n_context: int = Field(40, ge=1)
    kappa: float = Field(10.0, ge=1.0)  # condition number of Sigma (1: the paper's Sigma = I)
    spacing: Literal["log", "linear"] = "log"
    cov_seed: int = 0  # Sigma's random rotation (fixed across training seeds)
    w_prior: Literal["inverse", "identity"] = "inverse"  # w ~ N(0, Sigma^-1) (paper) or N(0, I)
    noise_std: float = Field(0.0, ge=0)
    # out-of-distribution tests: Sigma_ood = Sigma^1/2 R Sigma^1/2 with R a random covariance of
    # condition number ood_kappa and geometric-mean eigenvalue 1; and a longer context
    ood_kappa: float = Field(2.0, ge=1.0)
    ood_n_context: int = Field(80, ge=1)


class Model(Strict):
    n_loops: int = Field(5, ge=1)  # loops used in training
    train_u: bool = True
    compare_untied: bool = True  # also train an L-layer untied model of the same kind


class Train(Strict):
    steps: int = Field(3000, ge=1)  # unconfirmed (not in the catalogue)
    batch_size: int = Field(1024, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(0.03, gt=0)
    lr_decay: Literal["none", "cosine"] = "cosine"
    grad_clip: Optional[float] = Field(1.0, gt=0)
    init_scale: float = Field(0.0, ge=0)  # A = init_scale * I + noise
    init_noise: float = Field(0.1, ge=0)  # untied model only (breaks the layer symmetry)
    eval_tasks: int = Field(10_000, ge=1)
    max_test_loops: int = Field(20, ge=1)
    # further covariance-shift evaluation sets (eval_tasks tasks each, shared by all seeds) on which the
    # 20/5-loop ratio is also measured: how much the shift claim depends on which tasks were drawn; 0: off
    ood_cov_extra_draws: int = Field(0, ge=0, le=50)
    # u probe: restart training from the trained looped model with u moved away from 0 (to u_rel =
    # u_probe_rel, a random direction) for u_probe_steps steps on fresh tasks; does u return to 0? (u starts
    # at exactly 0 and, by the prior's w -> -w symmetry, gets no pull away from it, so u_rel alone cannot
    # show that 0 attracts u.) 0: off
    u_probe_steps: int = Field(0, ge=0)
    u_probe_rel: float = Field(0.3, gt=0)
    log_every: int = Field(100, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()

    @model_validator(mode="after")
    def _check(self) -> "Config":
        if self.train.max_test_loops < self.model.n_loops:
            raise ValueError("train.max_test_loops must be >= model.n_loops")
        if self.train.u_probe_steps and not self.model.train_u:
            raise ValueError("train.u_probe_steps needs model.train_u (the probe trains u)")
        return self


@register("looped-transformer-multistep-gd", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
