"""What learning algorithm is in-context learning? Investigations with linear models
(Akyürek, Schuurmans, Andreas, Ma, Zhou; ICLR 2023; arXiv:2211.15661).

A GPT-style decoder-only transformer (softmax attention, learned absolute positions) reads
sequences ``x_1, y_1, ..., x_n, y_n`` (x ~ N(0, I_d), w ~ N(0, tau^2 I), y = w.x + N(0, sigma^2))
and is trained to predict every ``y_i`` from the tokens before it (Eq. 8 of the paper). On a
fixed set of evaluation tasks shared by all seeds its prediction for ``x_{k+1}`` after ``k``
in-context examples is compared with textbook predictors computed on the same prefix:
min-norm least squares (OLS), ridge with the Bayes-optimal ``lambda = sigma^2 / tau^2``, one
step of batch gradient descent from w = 0 (learning rate line-searched per k on separate
tasks), 3-nearest-neighbours (uniform) and the zero predictor (always 0: where a model that
learned nothing sits; ``*_zero``). Metrics (Sec. 4.1), both divided by d:

* SPD: squared prediction difference ``E (A1(D)(x') - A2(D)(x'))^2``;
* ILWD: implicit linear weight difference ``E ||w_A1 - w_A2||^2`` where ``w_A`` is the least-squares
  linear fit to A's predictions on unlabeled probe inputs (the exact weights for linear A).

One ``run`` trains up to three models on identical seeds (independent parts: ``registry run
--jobs N`` may train them in separate processes): ``main`` (noiseless, ``model.n_layers``),
``noisy`` (``data.noisy_std`` > 0, same architecture; compared with several ridge parameters) and
``shallow`` (noiseless, ``model.shallow_layers``; the depth transition of Fig. 3); the noisy model
may train for its own ``train.noisy_steps``. Metrics are
prefixed by the model's tag, e.g. ``main_spd_ols``, ``noisy_mspd_ridge_bayes``, ``shallow_mspd_gd``.
``spd_*``/``ilwd_*`` average over k = 1..n-1 examples, ``mspd_*`` over the under-determined
region k = 1..d-1 (the paper's MSPD).

Defaults are the paper's main setup (Sec. 4.2, App. D): d = 8, 40 pairs, L = 16, H = 512, M = 4,
Adam lr 1e-4 with cosine schedule and 1/5 warmup, batch 64, 500k iterations.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    d: int = Field(8, ge=1)  # input dimension
    n_points: int = Field(40, ge=2)  # (x, y) pairs per in-context sequence
    w_std: float = Field(1.0, gt=0)  # tau: prior std of w
    noisy_std: float = Field(0.5, ge=0)  # sigma of the noisy setting; 0 = no noisy model
    # noisy setting: ridge is also compared at lambda_bayes / f (ridge_small) and lambda_bayes * f (ridge_large)
    ridge_factor: float = Field(4.0, gt=1)


class Model(Strict):
    n_layers: int = Field(16, ge=1)  # L
    d_model: int = Field(512, ge=8)  # H
    n_heads: int = Field(4, ge=1)  # M
    mlp_ratio: int = Field(4, ge=1)
    shallow_layers: Optional[int] = Field(1, ge=1)  # depth of the extra shallow model; None = skip

    @model_validator(mode="after")
    def _check(self) -> "Model":
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        return self


class Train(Strict):
    steps: int = Field(500_000, ge=1)
    # steps of the noisy model only (None = ``steps``): at small scale it converges to the Bayes ridge
    # predictor much more slowly than the noiseless models converge to OLS
    noisy_steps: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-4, gt=0)
    warmup_frac: float = Field(0.2, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    eval_tasks: int = Field(1000, ge=1)
    n_probes: int = Field(32, ge=1)  # unlabeled probe inputs per task for ILWD
    ilwd_tasks: int = Field(200, ge=1)  # evaluation tasks used for ILWD (subset of eval_tasks)
    linesearch_tasks: int = Field(4000, ge=1)
    log_every: int = Field(100, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


def setups(cfg: Config) -> list[tuple[str, int, float, int]]:
    """The models one seed trains, in order: (tag, depth, label noise sigma, training steps).
    Each has its own generators (``ctx.seed_for`` of its tag), so they are independent parts."""
    mc, tc = cfg.model, cfg.train
    out = [("main", mc.n_layers, 0.0, tc.steps)]
    if cfg.data.noisy_std > 0:
        out.append(("noisy", mc.n_layers, cfg.data.noisy_std, tc.noisy_steps or tc.steps))
    if mc.shallow_layers is not None:
        out.append(("shallow", mc.shallow_layers, 0.0, tc.steps))
    return out


def _parts(cfg: Config) -> dict[str, float]:
    # relative cost: training steps x depth (+1 for the embedding, read-out and data)
    return {tag: float(steps * (depth + 1)) for tag, depth, _, steps in setups(cfg)}


@register("icl-what-learning-algorithm", config=Config, parts=_parts)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
