"""Typed config sections shared by method packages (pydantic only: importing this never imports torch)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field

from registry.methods import Strict


class T5Model(Strict):
    """Architecture of ``seq_transformer.DecoderOnlyTransformer``; defaults: Position Coupling's 1-layer model."""

    n_layers: int = Field(1, ge=1)
    n_heads: int = Field(4, ge=1)
    d_model: int = Field(1024, ge=1)
    d_kv: int = Field(128, ge=1)
    d_ff: int = Field(2048, ge=1)
    act: Literal["gated-gelu", "gelu", "gated-relu", "relu"] = "gated-gelu"
    norm_position: Literal["pre", "post", "pre_post"] = "pre_post"


# a positive step count: the value type of a method's per-part step budgets (e.g. ``train.task_steps``)
StepBudget = Annotated[int, Field(ge=1)]


class AdamWCosineTrain(Strict):
    """What ``seq_transformer.adamw_cosine`` and ``training.optimize`` read: AdamW, linear warm-up then
    cosine decay to ``min_lr_ratio`` over ``steps``, optional gradient clipping, a loss log every
    ``log_every`` steps. A method's ``Train`` subclasses it, re-declaring the defaults its paper changes."""

    steps: int = Field(50_000, ge=1)
    batch_size: int = Field(1000, ge=1)
    optimizer: Literal["adamw"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_frac: float = Field(0.01, ge=0, lt=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    log_every: int = Field(100, ge=1)
