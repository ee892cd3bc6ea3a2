"""Progressive distillation induces an implicit curriculum (Panigrahi et al., ICLR 2025, arXiv:2410.05464).

Sparse parity: x uniform in {-1, +1}^n, label = parity of k fixed coordinates. A wide
one-hidden-layer MLP teacher is trained with cross-entropy on fresh samples and checkpointed
along the way. Narrow MLP students get the same number of fresh samples and steps, trained
(a) with cross-entropy on the labels, (b) by one-shot distillation from the final teacher,
or (c) by progressive distillation from the teacher's checkpoints in order. Claims checked:
(c) reaches high accuracy in fewer steps than (a) and (b); the teacher's correlation with
the degree-1 monomials of the support spikes during its phase transition (implicit curriculum).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    n: int = Field(100, ge=2)  # input dimension (data_dimension)
    k: int = Field(6, ge=1)  # support size (feature_complexity); support = first k coordinates
    n_test: int = Field(10_000, ge=1)  # held-out inputs (shared by all seeds), also used for probing
    n_probe_off: int = Field(20, ge=1)  # random off-support degree-1 monomials for the probe baseline
    # Inputs for the degree-1 probe. None: the held-out set (as the official probing code). A larger
    # dedicated set lowers the probe's noise floor (about 0.5 / sqrt(n) per monomial).
    n_probe: Optional[int] = Field(None, ge=1)
    # placebo supports: disjoint sets of k further off-support coordinates, probed like the support, so
    # that a spike of the support can be told from the fluctuations any k coordinates show
    n_placebo_sets: int = Field(6, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if self.k + self.n_probe_off + self.n_placebo_sets * self.k > self.n:
            raise ValueError(f"need k + n_probe_off + n_placebo_sets * k <= n, got "
                             f"{self.k} + {self.n_probe_off} + {self.n_placebo_sets} * {self.k} > {self.n}")
        return self


class Model(Strict):
    teacher_width: int = Field(50_000, ge=1)
    student_width: int = Field(100, ge=1)


class Train(Strict):
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    teacher_steps: int = Field(200_000, ge=1)  # one fresh batch per step
    ckpt_every: int = Field(1_000, ge=1)  # teacher checkpoint interval = progressive switch interval
    student_steps: int = Field(100_000, ge=1)
    temperature: float = Field(1.0, gt=0)
    eval_every: int = Field(1_000, ge=1)
    acc_target: float = Field(0.9, gt=0, le=1)  # "learned" = held-out accuracy >= this
    modes: list[Literal["ce", "oneshot", "progressive"]] = ["ce", "oneshot", "progressive"]


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register("progressive-distillation", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
