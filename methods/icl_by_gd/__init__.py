"""Transformers learn in-context by gradient descent (von Oswald et al., ICML 2023, arXiv:2212.07677).

A stack of linear self-attention (LSA) layers is trained on fresh in-context linear
regression tasks (W ~ N(0, I), x uniform, y = W x, N context pairs, tokens
e_j = (x_j, y_j), query (x_query, 0)); the prediction is minus the y-entry of the query
token. It is compared with K steps of gradient descent from W0 = 0 on the in-context
loss 1/(2N) sum_j ||W x_j - y_j||^2 with a line-searched learning rate, on a fixed
evaluation set shared by all seeds (loss 0.5 * squared error, official code).

Reported (K = n_layers): loss_lsa, loss_gd, loss_gap (= lsa - gd), loss_ols,
loss_zero (predicting 0), gd_lr, alignment with GD: pred_cosine, pred_l2,
sensitivity_cosine, sensitivity_l2 (d y_hat / d x_query). For one layer also the
scale-corrected weight match (qk_rel_err, pv_rel_err, scale) and the interpolated model
(theta + theta_GD)/2 (loss_interp).

Defaults follow the official code (google-research/self-organising-systems,
transformers_learn_icl_by_gd/constructed_token_setup.ipynb, 1 layer): batch 2048,
5000 Adam steps at lr 1e-3 (b2 = 0.98), global-norm gradient clip 1e-3, init scale
0.002 (haiku VarianceScaling), 10k evaluation tasks.

``model.multilayer`` (e.g. [2, 3]) adds K-layer LSAs without weight sharing, compared
with K steps of line-searched GD (``ml{K}_loss_lsa``, ``ml{K}_loss_gd``,
``ml{K}_rel_gap_gd``, ``ml{K}_pred_cosine``) and, for GD++, the first layer's effect on the
inputs: mean log10 condition number of the context Gram matrix X^T X before / after
layer 1 (``ml{K}_logcond_in`` / ``ml{K}_logcond_l1``). See ``x_low``/``x_high``: the
official code draws x ~ U(-0.5, 0.5) (input_range = 1).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    d: int = Field(10, ge=1)  # input dimension
    out_dim: int = Field(1, ge=1)  # n_O
    n_context: int = Field(10, ge=1)  # N
    x_dist: Literal["uniform", "gaussian"] = "uniform"
    # official code: uniform(-input_range/2, input_range/2) with input_range = 1
    x_low: float = -0.5
    x_high: float = 0.5
    w_std: float = Field(1.0, gt=0)
    noise_std: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if self.x_dist == "uniform" and not self.x_low < self.x_high:
            raise ValueError("x_low must be < x_high")
        return self


class Model(Strict):
    n_layers: int = Field(1, ge=1)  # K; compared with K steps of GD
    n_heads: int = Field(1, ge=1)
    key_size: Optional[int] = Field(None, ge=1)  # None: d + out_dim
    # one layer applied K times (official 'deq' / recurrent Transformer; GD baseline then
    # uses one shared lr across steps in either case)
    share_weights: bool = True
    # extra runs after the main experiment: one K-layer LSA (separate weights per layer) for each
    # K listed, compared with K steps of line-searched GD (GD++, Sec. 4); empty: off
    multilayer: list[int] = []


class Train(Strict):
    steps: int = Field(5000, ge=1)
    batch_size: int = Field(2048, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(1e-3, gt=0)  # global-norm clip; None = off
    init_scale: float = Field(0.002, gt=0)  # haiku VarianceScaling scale (divided by K officially)
    eval_tasks: int = Field(10_000, ge=1)
    linesearch_tasks: int = Field(10_000, ge=1)  # separate tasks from the eval stream
    log_every: int = Field(100, ge=1)
    eval_every: int = Field(100, ge=0)  # test-loss curve on the eval set; 0: final evaluation only
    multilayer_steps: Optional[int] = Field(None, ge=1)  # None: steps
    multilayer_batch_size: Optional[int] = Field(None, ge=1)  # None: batch_size

    @model_validator(mode="after")
    def _check(self) -> "Train":
        # the test loss is computed at logging steps (and the last), so another period would be ignored
        if self.eval_every % self.log_every:
            raise ValueError(f"eval_every ({self.eval_every}) must be 0 or a multiple of log_every "
                             f"({self.log_every})")
        return self


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register("transformers-learn-icl-by-gd", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
