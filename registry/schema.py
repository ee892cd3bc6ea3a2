"""The manifest schema: one YAML file per paper, validated strictly (pydantic v2, extra="forbid").

A manifest describes the paper, how to reproduce it (data, model, train, hardware,
profiles) and what the paper claims (with the tolerance each claim is checked at).
Nothing in a manifest executes code: it is read with ``yaml.safe_load`` semantics and
turned into these models; the method is looked up by key in the method registry.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
SLUG_MAX = 80
Slug = Annotated[str, StringConstraints(pattern=SLUG, max_length=SLUG_MAX)]
MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.]*$", max_length=100)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

REQUIRED_PROFILES = ("smoke", "cpu", "paper")
PROFILE_NAME = r"^[a-z][a-z0-9_-]*$"


class Model(BaseModel):
    # allow_inf_nan=False: a threshold, tolerance or reported number of .inf/.nan would make a check
    # meaningless (e.g. tolerance.abs: .inf passes every claim), so every float of the manifest is finite
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Paper(Model):
    title: Text
    authors: list[Text] = Field(min_length=1, description="Authors in paper order; 'et al.' allowed last.")
    year: int = Field(ge=1950, le=2100)
    venue: Text
    arxiv: Annotated[str, StringConstraints(pattern=r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})$")] | None = None
    code: Text | None = Field(None, description="Official code (owner/repo) or 'none released'.")
    tier: Literal["A", "B", "C", "T"] | None = Field(
        None, description="A: faithful CPU reproduction; B: scaled proxy on CPU; C: needs large compute; T: theory."
    )
    url: Text | None = None


class Section(BaseModel):
    """``data`` / ``model``: a description plus method parameters (checked by the method's typed config)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    description: Text | None = None

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _distinct(v: list[int]) -> list[int]:
    if len(set(v)) != len(v):
        raise ValueError("seeds must be unique")
    return v


# The one definition of a valid seed list: the base train.seeds and every profile override use it (and the
# CLI's --seeds). A seed is below 2**32, numpy's seed range (torch.manual_seed refuses >= 2**64 and context.seed_for
# hashes any integer); the runner passes it to random, numpy and torch as it is.
SEED_LIMIT = 2**32
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT, strict=True)]
Seeds = Annotated[list[Seed], Field(min_length=1), AfterValidator(_distinct)]
SEEDS = TypeAdapter(Seeds)


class Train(BaseModel):
    """``train``: seeds are the runner's; every other key goes to the method's typed ``train`` config."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    seeds: Seeds
    optimizer: Text | None = None
    lr: float | None = Field(None, gt=0)
    steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)

    def params(self) -> dict[str, Any]:
        out = {k: v for k, v in self.model_dump(exclude={"seeds"}).items() if v is not None}
        out.update(self.model_extra or {})
        return out


class Hardware(Model):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    paper: Text | None = Field(None, description="What the paper ran on, e.g. '1x A100 40GB'.")
    estimated_minutes: dict[str, float] = Field(
        default_factory=dict, description="Expected wall-clock minutes per profile on the profile's target hardware."
    )


class Profile(Model):
    """Overrides on top of the base data/model/train sections (deep-merged)."""

    description: Text
    data: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    device: Literal["auto", "cpu", "cuda"] | None = None
    jobs: int | None = Field(
        None, ge=1, description="CPU worker processes for this profile (one torch thread each; seeds and declared "
        "method parts run in parallel, with the numbers of a one-thread run); `--jobs` overrides it.")


class Metric(Model):
    name: MetricName
    description: Text
    higher_is_better: bool | None = None
    unit: Text | None = None


class Reported(Model):
    """The paper's own number for a claim."""

    value: float | None = Field(None, description="The number as the paper states it (same units as the metric).")
    spread: float | None = Field(None, ge=0, description="Std/CI the paper gives, if any.")
    spread_kind: Literal["std", "sem", "ci95", "range"] | None = None
    n_seeds: int | None = Field(None, ge=1)
    unconfirmed: bool = Field(False, description="True when the number was not checked against the paper text.")
    note: Text | None = None


class Tolerance(Model):
    abs: float = Field(0.0, ge=0)
    rel: float = Field(0.0, ge=0)
    rationale: Text

    def width(self, target: float) -> float:
        return self.abs + self.rel * abs(target)


Comparison = Literal[">=", "<=", "within"]
Statistic = Literal["mean", "median", "min", "max"]


class SeedSelection(Model):
    """Judge a claim on the seeds whose own per-seed metric meets a condition, as a paper does that
    averages only some runs (e.g. only those that fit their training range exactly)."""

    metric: MetricName = Field(description="Per-seed metric the condition tests, e.g. a 0/1 'fit' flag.")
    compare: Literal[">=", "<="]
    value: float
    min_seeds: int = Field(1, ge=1, description="With fewer seeds meeting the condition the claim fails.")
    rationale: Text = Field(description="Whose protocol this is (the paper's, where it says so).")

    def describe(self) -> str:
        return f"seeds with {self.metric} {self.compare} {self.value:g} (at least {self.min_seeds})"


class Claim(Model):
    id: Slug
    statement: Text
    source: Text = Field(description="Where in the paper: section, table or figure.")
    kind: Literal["paper", "scaled", "qualitative", "setup"] = Field(
        description=(
            "paper: the paper's number is the target. scaled: our own threshold for a scaled-down run "
            "(rationale required). qualitative: the paper states it without a number (rationale required). "
            "setup: a check of the experiment itself that no trained model enters (e.g. that two baselines "
            "differ enough for a claim comparing a model with them to mean something; rationale required): "
            "counted apart from the claims, and a failing one fails the verdict."
        )
    )
    reported: Reported | None = None
    rationale: Text | None = Field(None, description="Why this threshold, for scaled/qualitative claims.")
    # The check. All optional so that catalogued papers can list claims before a method exists.
    metric: MetricName | None = None
    baseline: MetricName | None = Field(None, description="If set, the checked quantity is metric - baseline.")
    compare: Comparison | None = None
    target: float | None = Field(None, description="Threshold for scaled/qualitative claims; paper claims use reported.value.")
    tolerance: Tolerance | None = None
    statistic: Statistic = "mean"
    seeds_where: SeedSelection | None = Field(
        None, description="Judge only the seeds meeting this condition (default: every seed of the run).")
    profiles: list[Annotated[str, StringConstraints(pattern=PROFILE_NAME)]] = Field(default_factory=list)

    @property
    def checked(self) -> bool:
        return self.metric is not None

    @property
    def threshold(self) -> float | None:
        if self.kind == "paper":
            return self.reported.value if self.reported else None
        return self.target


class Manifest(Model):
    """One paper: metadata, how to reproduce it and what it claims."""

    schema_version: Literal[1] = 1
    id: Slug
    status: Literal["implemented", "catalogued"]
    status_reason: Text | None = Field(None, description="Why a paper is only catalogued (required then).")
    paper: Paper
    method: Slug | None = Field(None, description="Key in the method registry (implemented papers).")
    summary: Text | None = None
    data: Section = Field(default_factory=Section)
    model: Section = Field(default_factory=Section)
    train: Train | None = None
    hardware: Hardware = Field(default_factory=Hardware)
    profiles: dict[Annotated[str, StringConstraints(pattern=PROFILE_NAME)], Profile] = Field(default_factory=dict)
    metrics: list[Metric] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)
    notes: Text | None = None



def json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Paper reproduction manifest"
    return schema

