"""On the Role of Depth and Looping for In-Context Learning with Task Diversity (Gatmiry,
Saunshi, Reddi, Jegelka, Kumar; 2024; arXiv:2410.21698).

In-context linear regression with task diversity: every task has its own input covariance
with condition number drawn in [1, kappa] (random rotation, largest eigenvalue 1), w ~ N(0, I),
y = <w, x>. For each depth L in ``model.depths`` a multilayer (untied) and a looped (tied)
restricted linear-attention transformer (per layer a d x d matrix A_l and a vector u_l; see
``methods._lib.looped_linear``) are trained on the same task stream. The paper's statements
(theory): depth helps (log(kappa) or sqrt(kappa) layers needed and sufficient), multilayer
models are not robust to small distribution shifts, looped models are robust and the only
ones whose loss is monotone in depth.

Training spectrum (``data.spectrum``): ``continuous`` (per task condition number k ~
U[kappa_min, kappa], eigenvalues 1, 1/k and log-uniform values in between) or ``discrete``
(every eigenvalue drawn uniformly from the few values ``data.atoms``, e.g. {1/kappa, 1}). The
discrete family probes the paper's non-robustness mechanism: an untied stack implements a GD
polynomial prod_l (1 - eta_l lambda) whose roots it can place on the training atoms, so it may be
fragile at eigenvalues between them, whereas a looped stack implements (1 - eta lambda)^L, which
has one root and is uniformly small on the whole range. Trained from a near-zero start, untied
stacks keep nearly equal steps and place no such roots; ``train.init_step_range`` starts their
layers at steps log-spaced over a range (random layer order) so that training can keep them.

Three covariance shifts are evaluated: ``ood`` scales every covariance by ``ood_scale`` (the
eigenvalues leave the training range [1/kappa, 1]); ``hard`` uses the continuous family with all
tasks at condition number kappa (for the continuous training family a shift of the task mixture
inside the training support); ``within`` draws every eigenvalue i.i.d. log-uniform in
[1/kappa, 1] (inside the training range, and off the atoms of the discrete family).

Reported per depth L (suffix ``_L{L}``): normalised test loss (MSE / E[y_q^2]) in distribution
and under a covariance shift (all covariances scaled by ``ood_scale``, i.e. eigenvalues up to
ood_scale instead of 1) for both models, the log-degradation log(ood / id) and the robustness
gap (multilayer degradation minus looped degradation), likewise ``hard_*`` and ``within_*`` for
the other two shifts. For the deepest models: the loss of the
looped model run at depths 1..max_test_depth and of the multilayer model read out after each
of its layers (``*_max_rel_increase``: largest relative loss increase from one depth to the next).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    d: int = Field(5, ge=2)
    n_context: int = Field(40, ge=1)
    kappa_min: float = Field(1.0, ge=1.0)
    kappa: float = Field(10.0, ge=1.0)  # condition numbers ~ U[kappa_min, kappa]
    noise_std: float = Field(0.0, ge=0)
    ood_scale: float = Field(1.2, gt=0)  # covariance shift: Sigma -> ood_scale * Sigma
    # training spectrum: "continuous" (condition number ~ U[kappa_min, kappa], see above) or
    # "discrete" (every eigenvalue drawn uniformly from ``atoms``)
    spectrum: Literal["continuous", "discrete"] = "continuous"
    atoms: list[float] = [0.1, 1.0]

    @model_validator(mode="after")
    def _atoms_in_range(self) -> "Data":
        # the within-range shift draws eigenvalues in [1/kappa, 1]; the atoms must lie there too
        lo = 1.0 / self.kappa
        if not self.atoms or any(a < lo * (1 - 1e-9) or a > 1.0 + 1e-9 for a in self.atoms):
            raise ValueError(f"atoms must be a non-empty list inside [1/kappa, 1] = [{lo:g}, 1]")
        return self


class Model(Strict):
    depths: list[int] = [2, 4, 8]
    train_u: bool = True

    @field_validator("depths")
    @classmethod
    def _sorted(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v) or sorted(set(v)) != v:
            raise ValueError("depths must be a non-empty increasing list of positive ints")
        return v


class Train(Strict):
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(1024, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(0.01, gt=0)
    lr_decay: Literal["none", "cosine"] = "cosine"
    grad_clip: Optional[float] = Field(1.0, gt=0)
    init_scale: float = Field(0.0, ge=0)
    init_noise: float = Field(0.1, ge=0)  # untied models only (breaks the layer symmetry)
    # untied models only: if set, layer l starts at A_l = eta_l I (+ noise) with the eta_l
    # log-spaced over this range, in a random order (lets training reach root-placing solutions
    # that a near-zero start does not find); None: every layer starts at init_scale * I
    init_step_range: Optional[tuple[float, float]] = None

    @field_validator("init_step_range")
    @classmethod
    def _positive_range(cls, v: Optional[tuple[float, float]]) -> Optional[tuple[float, float]]:
        if v is not None and not 0 < v[0] <= v[1]:
            raise ValueError("init_step_range must be (lo, hi) with 0 < lo <= hi")
        return v
    eval_tasks: int = Field(10_000, ge=1)
    test_depth_factor: int = Field(2, ge=1)  # looped model also run at up to factor * max depth
    log_every: int = Field(100, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register("depth-looping-icl-task-diversity", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
