"""Transformers Provably Solve Parity Efficiently with Chain of Thought (Kim & Suzuki, ICLR 2025, arXiv:2410.08633).

A one-layer transformer whose attention sees only positions learns a random k-parity over d
bits (k a power of two) by generating the k - 1 intermediate 2-parities of a binary tree as
chain-of-thought tokens. Four training regimes are compared by full-batch gradient descent
on the same samples: direct (no CoT), end-to-end CoT, CoT with teacher forcing, and
end-to-end CoT with a self-consistency filter. Claims checked: direct training stays at the
chance-level prediction loss 0.5; teacher forcing solves the task (and a single large
gradient step already does, Thm. 5); end-to-end CoT needs the self-consistency check, which
learns the tree level by level. See ``train.py`` for the construction.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register

Variant = Literal["direct", "cot", "cot_tf", "cot_sc"]


class Data(Strict):
    d: int = Field(64, ge=2)  # number of input bits
    k: int = Field(32, ge=2)  # parity degree, a power of two
    n_train: int = Field(100_000, ge=1)  # samples, used full-batch
    n_test: int = Field(10_000, ge=1)  # held-out inputs (shared by all seeds)
    n_aug: int = Field(2_000, ge=1)  # unlabelled augmented inputs for the self-consistency check
    n_one_step: int = Field(100_000, ge=1)  # samples of the single teacher-forced gradient step (Thm. 5)

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if self.k & (self.k - 1):
            raise ValueError("k must be a power of two")
        if self.k > self.d:
            raise ValueError("k must be <= d")
        return self


class Model(Strict):
    cot_mask: Literal["causal", "level"] = "causal"  # mask of plain end-to-end CoT
    parallel_mask: Literal["causal", "level"] = "level"  # mask of CoT+TF and CoT+SC (log2 k steps)
    direct_width: int = Field(64, ge=1)  # hidden width of the direct model's feed-forward link


class Train(Strict):
    variants: list[Variant] = ["direct", "cot", "cot_tf", "cot_sc"]
    epochs: int = Field(350, ge=1)  # full-batch GD steps
    lr: float = Field(5.0, gt=0)  # GD step size on the attention scores (CoT variants)
    direct_lr: float = Field(0.5, gt=0)  # GD step size of the direct model
    one_step_lr: float = Field(0.0, ge=0)  # > 0: also test one teacher-forced GD step (Thm. 5)
    # end-to-end CoT: differentiate through the generated tokens (False: they are treated like
    # sampled tokens, i.e. as inputs, as in autoregressive generation)
    backprop_through_chain: bool = False
    # informative if mean |x_hat| >= 1 - tau and |mean x_hat| <= tau on augmented inputs
    sc_tau: float = Field(0.1, gt=0, lt=1)
    solved_loss: float = Field(0.05, gt=0)  # a level / the prediction counts as solved below this loss
    log_every: int = Field(10, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register("parity-cot-transformer", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
