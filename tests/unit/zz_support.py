"""Test-only support: a tiny typed method registered as ``zz-test-method`` and valid base manifests.

Imported by the unit tests (never by the registry). The method's config is typed like a real one so that
``registry.manifest.check_file`` exercises the method-config checks; ``run`` is never called by these tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from registry.methods import MethodConfig, Strict, register

TEST_METHOD = "zz-test-method"
HERE = Path(__file__).resolve().parent
BAD_DIR = HERE.parent / "bad_manifests"


class Data(Strict):
    n: int = Field(8, ge=1)
    noise: float = Field(0.0, ge=0)


class Model(Strict):
    width: int = Field(4, ge=1)


class Train(Strict):
    lr: float = Field(0.1, gt=0)
    steps: int = Field(10, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    batch_size: int = Field(4, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register(TEST_METHOD, config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    return {"acc": 1.0, "base_acc": 0.5}


# A valid implemented manifest; every file in tests/bad_manifests/ is a small variation of it (or of the
# catalogued one below). "@ID@" is replaced by the paper id (= the file's stem).
BASE_IMPLEMENTED = """\
schema_version: 1
id: @ID@
status: implemented
paper:
  title: A tiny test paper
  authors: [Ada Lovelace, et al.]
  year: 2020
  venue: TestConf 2020
  arxiv: '2001.00001'
  tier: A
method: zz-test-method
summary: A manifest used only by the registry's unit tests.
data:
  description: Synthetic data generated in code.
  n: 8
  noise: 0.1
model:
  description: A tiny model.
  width: 4
train:
  seeds: [0, 1, 2]
  lr: 0.1
  steps: 10
hardware:
  device: cpu
  estimated_minutes: {smoke: 0.01, cpu: 0.1, paper: 1}
profiles:
  smoke:
    description: Seconds.
    train:
      seeds: [0]
      steps: 2
  cpu:
    description: CPU run.
  paper:
    description: Paper run.
    model:
      width: 16
metrics:
  - name: acc
    description: Test accuracy.
    higher_is_better: true
  - name: base_acc
    description: Accuracy of a trivial baseline.
claims:
  - id: acc-high
    statement: Accuracy is high.
    source: Table 1
    kind: paper
    reported:
      value: 0.9
      n_seeds: 3
    metric: acc
    compare: ">="
    tolerance:
      abs: 0.05
      rationale: Seed noise.
    profiles: [cpu, paper]
  - id: beats-baseline
    statement: The model beats the baseline.
    source: Figure 2
    kind: scaled
    rationale: Scaled-down run, exact threshold.
    metric: acc
    baseline: base_acc
    compare: ">="
    target: 0.0
    tolerance:
      abs: 0.0
      rationale: Exact.
    profiles: [smoke, cpu]
"""

BASE_CATALOGUED = """\
schema_version: 1
id: @ID@
status: catalogued
status_reason: Needs a GPU cluster.
paper:
  title: A tiny catalogued paper
  authors: [Alan Turing]
  year: 1950
  venue: Mind
claims:
  - id: machines-think
    statement: Machines can think.
    source: Section 1
    kind: qualitative
    rationale: Catalogued only.
"""


def manifest_text(paper_id: str, base: str = BASE_IMPLEMENTED) -> str:
    return base.replace("@ID@", paper_id)


def write_manifest(directory: Path, paper_id: str, base: str = BASE_IMPLEMENTED) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{paper_id}.yaml"
    path.write_text(manifest_text(paper_id, base), encoding="utf-8")
    return path
