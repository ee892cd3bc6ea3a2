"""Vanishing gradients in reinforcement finetuning of language models (Razin et al., ICLR 2024, arXiv:2310.20703).

Controlled setting of the paper's Sec. 4.2, scaled to CPU: classification as a one-step
bandit. A softmax MLP policy over the 10 digit classes (sklearn ``load_digits``) picks a
label y for an input x and receives reward r(x, y) = 1[y = true label]. The model is first
"pretrained" so that the training inputs of a few classes (the *low-std* group) get a confident
wrong prediction (expected reward ~ 0, reward std ~ 0) while the rest get a spread-out
output distribution (moderate reward, large std). It is then finetuned from that
pretrained point with

* RFT: gradient ascent on the exact expected reward V(x) = E_{y~pi(.|x)} r(x, y)
  (no sampling noise; the expectation is a sum over the 10 labels),
* SFT: cross-entropy on the true labels,
* SFT -> RFT: a short SFT phase on a small labelled fraction of the inputs, then RFT.

Reported: the train reward of each group after each finetuning, the initial reward std,
per-input expected-gradient norms (logits and parameters) and the Theorem-1 ratio
||grad_z V(x)|| / std(x)^{2/3} (Theorem 1 bounds it by 6 L_out gamma; for the logits
themselves as the output, L_out = gamma = 1).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    train_frac: float = Field(0.7, gt=0, lt=1)  # rest: held-out test inputs
    # classes whose train inputs form the low-std group (pretrained to a confident wrong label);
    # whole classes, so that RFT on the other inputs cannot fix them by generalisation
    low_classes: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, max_length=9)
    high_correct_prob: float = Field(0.3, gt=0, lt=1)  # pretraining target mass on the true label (high-std group)

    @field_validator("low_classes")
    @classmethod
    def _digit_classes(cls, v: list[int]) -> list[int]:
        if any(not 0 <= c <= 9 for c in v) or len(set(v)) != len(v):
            raise ValueError(f"low_classes must be distinct digit classes 0-9, got {v}")
        return v


class Model(Strict):
    hidden: int = Field(128, ge=1)
    depth: int = Field(2, ge=1)  # number of hidden layers


class Train(Strict):
    optimizer: Literal["adam", "sgd"] = "sgd"  # finetuning optimizer
    pretrain_steps: int = Field(2000, ge=1)  # full-batch Adam
    pretrain_lr: float = Field(3e-3, gt=0)
    steps: int = Field(500, ge=1)  # full-batch finetuning steps (each of RFT, SFT, SFT -> RFT)
    lr: float = Field(0.1, gt=0)
    sft_steps: int = Field(50, ge=0)  # SFT phase of SFT -> RFT (counted inside `steps`)
    sft_frac: float = Field(0.05, gt=0, le=1)  # labelled fraction of train inputs used for that phase
    grad_probe: int = Field(100, ge=1)  # inputs per group for per-input gradient norms
    path_probes: int = Field(10, ge=2, le=50)  # SFT checkpoints (step 0 + geometric) at which they are probed again
    log_every: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _sft_phase_inside_steps(self):
        if self.sft_steps >= self.steps:
            raise ValueError(f"sft_steps ({self.sft_steps}) must be smaller than steps ({self.steps}): "
                             "the SFT phase of SFT -> RFT is counted inside steps, and RFT must follow it")
        return self


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register("vanishing-gradients-rft", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
