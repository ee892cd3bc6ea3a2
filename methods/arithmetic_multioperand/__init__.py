"""Multi-operand addition with a scratchpad and bi-level Position Coupling (Cho et al., ICLR 2025,
arXiv:2410.15787).

The model writes the running partial sums ``0 > a_1 > a_1+a_2 > ... > a_1+...+a_m`` (reversed,
zero-padded) after ``=``, and every token carries two coupled position IDs (digit significance,
operand index), looked up in two learned tables whose embeddings are added. One ``run`` trains
one model per variant on identical problems and reports exact-match accuracy (whole output,
scratchpad included) per test cell of (digits per operand, number of operands):
``<variant>_acc_d<n>_o<m>``.

Variants: ``scratchpad_coupled`` (the method), ``noscratchpad_coupled`` (answer only, digit-level
coupling, official ``MultipleAdditionDatasetWithCoupledPositions``), ``scratchpad_nope`` (the
scratchpad without position embeddings).

Defaults are the paper's setup (official scripts/multiple_addition/run_scratchpad_coupled_ape.sh
with the 1-layer 4-head variant run_scratchpad_coupled_ape_1L4H1024D128.sh): train on 1-10
digits and 2-10 operands, max position IDs 40/40, AdamW lr 3e-5, batch 400, 50k steps.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from methods._lib.configs import AdamWCosineTrain, T5Model
from registry.methods import MethodConfig, Strict, register

Variant = Literal["scratchpad_coupled", "noscratchpad_coupled", "scratchpad_nope"]


class Data(Strict):
    task: Literal["multi_operand_addition"] = "multi_operand_addition"
    train_min_digits: int = Field(1, ge=1)
    train_max_digits: int = Field(10, ge=1)
    train_min_operands: int = Field(2, ge=1)
    train_max_operands: int = Field(10, ge=1)
    # official 'partially_uniform' sampling: with this probability operand lengths are drawn
    # independently, otherwise all operands of a problem share one drawn length
    p_independent_lengths: float = Field(0.5, ge=0, le=1)
    # fixed training set (sampled once per data seed, drawn with replacement); None = fresh samples every step
    train_size: Optional[int] = Field(500_000, ge=1)
    # test cells [digits per operand, number of operands]; every operand has exactly that many digits
    test_cells: list[tuple[int, int]] = [(10, 10), (20, 10), (10, 20), (20, 20), (30, 30)]
    # rows of the two coupled position tables (bounded so that checking a config stays instant)
    max_pos_digits: int = Field(40, ge=2, le=1000)
    max_pos_operands: int = Field(40, ge=2, le=1000)

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if self.train_min_digits > self.train_max_digits:
            raise ValueError("train_min_digits > train_max_digits")
        if self.train_min_operands > self.train_max_operands:
            raise ValueError("train_min_operands > train_max_operands")
        if not self.test_cells:
            raise ValueError("test_cells must be non-empty")
        cells = list(self.test_cells) + [(self.train_max_digits, self.train_max_operands)]
        for n, m in cells:
            if n < 1 or m < 1:
                raise ValueError("test cells need positive digits and operands")
            if n + 1 > self.max_pos_digits or m + 1 > self.max_pos_operands:  # before any arithmetic on 10**n
                raise ValueError(f"max_pos_digits={self.max_pos_digits} / max_pos_operands={self.max_pos_operands} "
                                 f"too small for {n} digits and {m} operands")
            w = len(str(m * (10**n - 1)))
            if self.max_pos_digits < w + 1:
                raise ValueError(f"max_pos_digits={self.max_pos_digits} too small for width {w} ({n} digits, {m} operands)")
            if self.max_pos_operands < m + 1:
                raise ValueError(f"max_pos_operands={self.max_pos_operands} too small for {m} operands")
        return self


class Model(T5Model):
    variants: list[Variant] = ["scratchpad_coupled", "noscratchpad_coupled", "scratchpad_nope"]

    @model_validator(mode="after")
    def _check(self) -> "Model":
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError("variants must be a non-empty list without duplicates")
        return self


class Train(AdamWCosineTrain):
    batch_size: int = Field(400, ge=1)
    lr: float = Field(3e-5, gt=0)
    eval_every: int = Field(0, ge=0)  # 0: evaluate only at the end
    eval_samples: int = Field(1000, ge=1)  # per test cell
    eval_batch_size: int = Field(100, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


def _parts(cfg: Config) -> dict[str, float]:
    # one model per variant on the same generators: independent parts of a seed; the scratchpad makes
    # sequences about twice as long
    return {v: 2.0 if v.startswith("scratchpad") else 1.0 for v in cfg.model.variants}


@register("arithmetic-multioperand-length-generalization", config=Config, parts=_parts)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
