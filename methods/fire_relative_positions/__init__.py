"""FIRE: Functional Interpolation for Relative Positions (Li et al., ICLR 2024, arXiv:2310.04418).

The paper's claims concern C4 pre-training and long-text benchmarks, which cannot run here
(no downloads). This method is a clearly marked *proxy*: next-token language modelling on a
synthetic source with local (Markov) structure and long-range copying (``task.py``), trained at
length ``train_len`` and evaluated zero-shot at longer lengths. One ``run`` trains one model per
encoding in ``model.encodings`` (FIRE, RoPE, T5 RPE, ALiBi, Kerple-log, NoPE; see
``methods/_lib/relpos.py``; the model is the shared ``seq_transformer.DecoderOnlyTransformer``
with the encoding as its only position information) on identical data and reports per-token eval loss at every
evaluation length: ``{encoding}_loss_len{n}`` (all tokens) and ``{encoding}_longloss_len{n}``
(topic tokens and tokens inside a copied span, which only earlier context predicts; with copy_prob 0,
as in every profile, the topic tokens only). With copy_prob 0 it also reports the Bayes-optimal topic-token
loss of every evaluation set, ``ideal_longloss_len{n}``, and for every length n beyond the training length
``{encoding}_context_gain_len{n}``: the fall of the model's topic-token loss from the training length to n as
a fraction of the ideal fall (0 for a model that does not use the longer context).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from methods._lib.configs import AdamWCosineTrain
from registry.methods import MethodConfig, Strict, register

Encoding = Literal["fire", "rope", "t5", "alibi", "kerple", "nope"]


class Data(Strict):
    task: Literal["copy-markov"] = "copy-markov"
    vocab_size: int = Field(256, ge=2)  # Markov tokens
    topic_vocab: int = Field(256, ge=0)  # extra tokens used only by topic sets
    branching: int = Field(4, ge=1)  # successors per token in the Markov chain
    topic_size: int = Field(64, ge=1)  # per-sequence topic set
    topic_prob: float = Field(0.4, ge=0, le=1)  # chance per position of a token drawn from the topic set
    copy_prob: float = Field(0.0, ge=0, le=1)  # chance per free position to start a repeated span
    span_min: int = Field(8, ge=1)
    span_max: int = Field(24, ge=1)
    language_seed: int = Field(0, ge=0)  # the "language" (transition matrix), shared by all training seeds
    train_len: int = Field(2048, ge=2)
    eval_lengths: list[int] = [512, 1024, 2048, 4096, 8192]
    eval_sequences: int = Field(64, ge=1)  # per evaluation length

    @model_validator(mode="after")
    def _check(self) -> "Data":
        if self.span_min > self.span_max:
            raise ValueError("span_min > span_max")
        if self.branching > self.vocab_size:
            raise ValueError("branching > vocab_size")
        if self.topic_prob > 0 and self.topic_size > self.topic_vocab:
            raise ValueError("topic_size > topic_vocab")
        if not self.eval_lengths or min(self.eval_lengths) < 2:
            raise ValueError("eval_lengths must be non-empty, each >= 2")
        return self


class Model(Strict):
    encodings: list[Encoding] = ["fire", "rope", "t5", "alibi", "kerple", "nope"]
    n_layers: int = Field(12, ge=1)
    n_heads: int = Field(12, ge=1)
    d_model: int = Field(768, ge=1)
    d_kv: int = Field(64, ge=2)
    d_ff: int = Field(3072, ge=1)
    act: Literal["gated-gelu", "gelu", "gated-relu", "relu"] = "gelu"
    fire_mlp_width: int = Field(32, ge=1)
    # hidden layers of f_theta: 1 in the widely copied reference snippet, 2 in a FIRE co-author's later
    # reimplementation (HanseulJo/position-coupling) and in a third-party description of the paper
    fire_mlp_layers: int = Field(1, ge=1)
    fire_init_c: float = Field(0.1, gt=0)
    fire_init_L: float = Field(512.0, gt=0)
    t5_num_buckets: int = Field(32, ge=2)
    t5_max_distance: int = Field(128, ge=2)
    rope_base: float = Field(10000.0, gt=1)

    @model_validator(mode="after")
    def _check(self) -> "Model":
        if not self.encodings or len(set(self.encodings)) != len(self.encodings):
            raise ValueError("encodings must be a non-empty list without duplicates")
        if self.d_kv % 2:
            raise ValueError("d_kv must be even (RoPE rotates pairs)")
        if self.t5_max_distance <= self.t5_num_buckets // 2:
            raise ValueError("t5_max_distance must exceed t5_num_buckets // 2 (the exact buckets)")
        return self


class Train(AdamWCosineTrain):
    steps: int = Field(20_000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_frac: float = Field(0.02, ge=0, lt=1)
    eval_batch_size: int = Field(16, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


def _parts(cfg: Config) -> dict[str, float]:
    # one model per encoding on the same generators: independent parts of a seed (FIRE's MLP bias and
    # T5's bucketing cost a little more than the others)
    return {enc: 1.2 if enc in ("fire", "t5") else 1.0 for enc in cfg.model.encodings}


@register("fire-relative-positions", config=Config, parts=_parts)
def run(cfg: Config, ctx) -> dict[str, float]:
    from .train import run_all  # torch is imported lazily

    return run_all(cfg, ctx)
