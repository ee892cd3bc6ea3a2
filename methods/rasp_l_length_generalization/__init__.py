"""What Algorithms can Transformers Learn? A Study in Length Generalization
(Zhou et al., ICLR 2024, arXiv:2310.16028).

RASP-Generalization Conjecture: a decoder-only transformer trained from scratch tends to
length-generalize when the task has a short RASP-L program that works at every length
(count, mode, copy with unique tokens) and not otherwise (copy with repeated tokens, parity).
Addition with index hints (each digit preceded by a token naming its significance) has a short
RASP-L program when the answer is written least significant digit first (``addition_reverse``)
but not most significant first (``addition_forward``, which needs the carry look-ahead); the task
length of addition is the number of digits per operand.
One ``run`` trains one model per task listed in ``data.tasks`` (same architecture, optimizer
and seed) on lengths [train_min_len, train_max_len] and reports greedy exact-match accuracy
per test length (``count_acc_len15``...). Positions are learned absolute embeddings; with
``model.scheme = random_offset_example`` every training sequence starts at a random position offset
so that all position embeddings up to the longest test sequence are trained, as in the paper.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from methods._lib.configs import AdamWCosineTrain, StepBudget
from registry.methods import MethodConfig, Strict, register

TaskName = Literal["count", "mode", "copy_unique", "copy_repeat", "parity", "addition_reverse", "addition_forward"]
ADDITION = ("addition_reverse", "addition_forward")

# default alphabet sizes (symbols per task); count needs numbers up to the longest count; for the
# addition tasks (index hints, reversed or forward answer) it is the number of index-hint tokens,
# which must exceed the longest operand length by one (the sum has n + 1 digits)
DEFAULT_SYMBOLS = {"count": 150, "mode": 10, "copy_unique": 100, "copy_repeat": 4, "parity": 2,
                   "addition_reverse": 60, "addition_forward": 60}


class Data(Strict):
    tasks: list[TaskName] = ["count", "mode", "copy_unique", "copy_repeat", "parity"]
    n_symbols: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_SYMBOLS))
    train_min_len: int = Field(1, ge=1)
    train_max_len: int = Field(50, ge=1)
    test_lengths: list[int] = [50, 60, 70, 80, 90, 100]

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError("tasks must be a non-empty list without duplicates")
        if self.train_min_len > self.train_max_len:
            raise ValueError("train_min_len > train_max_len")
        if not self.test_lengths or min(self.test_lengths) < 1:
            raise ValueError("test_lengths must be positive")
        longest = max(max(self.test_lengths), self.train_max_len)
        for t in ("count", "copy_unique"):
            if t in self.tasks and self.n_symbols.get(t, DEFAULT_SYMBOLS[t]) < longest:
                raise ValueError(f"{t} needs n_symbols >= {longest} (the longest length)")
        for t in ADDITION:
            if t in self.tasks and self.n_symbols.get(t, DEFAULT_SYMBOLS[t]) < longest + 1:
                raise ValueError(f"{t} needs n_symbols (index hints) >= {longest + 1} (longest operand + 1)")
        unknown = set(self.n_symbols) - set(DEFAULT_SYMBOLS)
        if unknown:
            raise ValueError(f"n_symbols has unknown tasks {sorted(unknown)}")
        return self

    def symbols(self, task: str) -> int:
        return self.n_symbols.get(task, DEFAULT_SYMBOLS[task])


class Model(Strict):
    scheme: Literal["random_offset_example", "random_offset", "absolute", "nope"] = "random_offset_example"
    n_layers: int = Field(6, ge=1)
    n_heads: int = Field(8, ge=1)
    d_model: int = Field(512, ge=1)
    d_kv: Optional[int] = Field(64, ge=1)
    d_ff: Optional[int] = Field(2048, ge=1)
    act: Literal["gelu", "relu", "gated-gelu", "gated-relu"] = "gelu"
    norm_position: Literal["pre", "post", "pre_post"] = "pre"
    # learned position table size; None = the longest test sequence (every row trained with random_offset)
    n_positions: Optional[int] = Field(None, ge=1)


class Train(AdamWCosineTrain):
    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    eval_samples: int = Field(1000, ge=1)  # per task and test length
    eval_batch_size: int = Field(500, ge=1)
    # stop early once in-distribution exact match reaches this (None: train all steps)
    early_stop_acc: Optional[float] = Field(None, gt=0, le=1)
    early_stop_every: int = Field(500, ge=1)
    early_stop_samples: int = Field(500, ge=1)
    # per-task step budgets overriding ``steps`` (e.g. parity needs longer to fit in distribution)
    task_steps: dict[TaskName, StepBudget] = Field(default_factory=dict)

    def for_task(self, name: str) -> "Train":
        """This section with the task's own step budget."""
        return self.model_copy(update={"steps": self.task_steps.get(name, self.steps)})


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()

    @model_validator(mode="after")
    def _task_steps_known(self) -> "Config":
        extra = set(self.train.task_steps) - set(self.data.tasks)
        if extra:
            raise ValueError(f"train.task_steps names tasks that are not run: {sorted(extra)}")
        return self


def _parts(cfg: Config) -> dict[str, float]:
    # one model per task on its own generators: independent parts of a seed; cost ~ the task's steps
    return {name: float(cfg.train.for_task(name).steps) for name in cfg.data.tasks}


@register("rasp-l-length-generalization", config=Config, parts=_parts)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
