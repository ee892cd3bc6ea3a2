"""A Formal Framework for Understanding Length Generalization in Transformers
(Huang et al., ICLR 2025, arXiv:2410.02140; official code lacoco-lab/length_generalization).

Algorithmic tasks from ``methods._lib.seq_tasks`` (unique-token copy, sort, repeated-token
copy, parity) are each trained on short inputs with a GPT-2-style decoder with learned
absolute position embeddings and evaluated on longer ones. As in the official
``algorithmic/language_modeling_train.py``, every training sequence's position ids start at a
random per-example offset so that the whole position table (sized for the longest test
sequence) is trained; test sequences start at 0. One ``run`` trains one model per task in
``data.tasks`` (own architecture/lr per task, ``model.tasks``) and reports exact-match
accuracy per length range, prefixed by task (``sort_acc_51_100`` ...), plus ``{task}_fit``
(1 when in-distribution accuracy is exactly 1, the paper's criterion for counting a seed).

Defaults are the paper's: train lengths 0-50, test ranges 51-100 and 101-150 (2000 samples
each), batch 64, AdamW (wd 0.01) with a linear schedule, max 30k steps, evaluation every 3k
steps with early stop at 100% in-distribution accuracy, per-task architectures of
``algorithmic/run_multiple_seeds.py``.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from registry.methods import MethodConfig, Strict, register

TaskName = Literal["copy_unique", "sort", "copy_repeat", "parity"]
Scheme = Literal["random_offset_example", "absolute", "random_offset", "nope"]


class TaskArch(Strict):
    n_layers: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    d_model: int = Field(ge=1)
    lr: float = Field(gt=0)
    steps: Optional[int] = Field(None, ge=1)  # None: train.steps


def _default_archs() -> dict[str, TaskArch]:
    # official algorithmic/run_multiple_seeds.py task_arch (APE); "smalllr" = 1e-4
    return {
        "copy_unique": TaskArch(n_layers=2, n_heads=1, d_model=64, lr=1e-3),
        "sort": TaskArch(n_layers=1, n_heads=2, d_model=256, lr=1e-4),
        "copy_repeat": TaskArch(n_layers=4, n_heads=4, d_model=256, lr=1e-3),
        "parity": TaskArch(n_layers=4, n_heads=2, d_model=256, lr=1e-4),
    }


class Data(Strict):
    tasks: list[TaskName] = ["copy_unique", "sort", "copy_repeat", "parity"]
    train_min_len: int = Field(0, ge=0)  # copy/sort tasks use max(1, .) as the official generators
    train_max_len: int = Field(50, ge=1)
    test_ranges: list[tuple[int, int]] = [(51, 100), (101, 150)]
    # alphabet of copy_unique / sort; None = the longest test length (official)
    n_symbols: Optional[int] = Field(None, ge=1)
    repeat_symbols: int = Field(2, ge=1)  # copy_repeat alphabet ("a", "b")
    parity_count_uniform: bool = True  # number of ones uniform in [0, n], then shuffled (official)
    eval_samples: int = Field(2000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError("tasks must be a non-empty list without duplicates")
        if self.train_min_len > self.train_max_len:
            raise ValueError("train_min_len > train_max_len")
        for lo, hi in self.test_ranges:
            if lo > hi or lo < 0:
                raise ValueError(f"bad test range {(lo, hi)}")
        if self.n_symbols is not None and self.n_symbols < self.max_len:
            raise ValueError("n_symbols must be >= the longest train/test length (distinct symbols)")
        return self

    @property
    def max_len(self) -> int:
        return max([self.train_max_len] + [hi for _, hi in self.test_ranges])


class Model(Strict):
    arch: Literal["gpt2", "t5"] = "gpt2"
    scheme: Scheme = "random_offset_example"
    tasks: dict[TaskName, TaskArch] = Field(default_factory=_default_archs)
    d_ff: Optional[int] = Field(None, ge=1)  # None: 4 * d_model (GPT-2)


class Train(Strict):
    steps: int = Field(30_000, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw"] = "adamw"
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["linear", "cosine"] = "linear"
    warmup_frac: float = Field(0.0, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: Optional[float] = Field(1.0, gt=0)
    log_every: int = Field(500, ge=1)
    eval_every: int = Field(3000, ge=1)  # in-distribution check for early stopping
    early_stop: bool = True  # stop at 100% in-distribution exact match (official)
    eval_batch_size: int = Field(500, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()

    @model_validator(mode="after")
    def _check(self) -> "Config":
        missing = [t for t in self.data.tasks if t not in self.model.tasks]
        if missing:
            raise ValueError(f"model.tasks lacks an architecture for {missing}")
        return self


def _parts(cfg: Config) -> dict[str, float]:
    # one model per task on its own generators: independent parts of a seed; cost ~ steps x layers x width
    return {name: float((cfg.model.tasks[name].steps or cfg.train.steps) * cfg.model.tasks[name].n_layers
                        * cfg.model.tasks[name].d_model)
            for name in cfg.data.tasks}


@register("formal-length-generalization-framework", config=Config, parts=_parts)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
