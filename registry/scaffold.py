"""`registry new`: a manifest and a method package that validate and run as they are, to be edited."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import yaml
from pydantic import ValidationError

from .schema import SLUG, SLUG_MAX, Paper


class ScaffoldError(Exception):
    """Bad input for `registry new`; ``problems`` holds one message per problem (nothing was written)."""

    def __init__(self, *problems: str):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


MANIFEST = '''\
# Reproduce: registry run {id} --profile cpu      (or: dvc repro verify@{id})
# Scaffolded by `registry new`: replace the example task with the paper's own setup and claims.
id: {id}
status: implemented
paper:
  title: {title}
  authors: [{authors}]
  year: {year}
  venue: {venue}
{arxiv_line}  code: none released
method: {id}
summary: >-
  Template: least-squares regression trained with minibatch SGD. Replace with the paper's setup.
data:
  description: Gaussian inputs, a random linear teacher and Gaussian label noise, generated in code.
  dim: 20
  n_train: 2000
  n_test: 2000
  noise_std: 0.1
model:
  description: A linear model without bias.
train:
  seeds: [0, 1, 2]
  optimizer: sgd
  lr: 0.05
  steps: 2000
  batch_size: 64
  log_every: 50
hardware:
  device: auto
  paper: not stated
  estimated_minutes: {{smoke: 0.05, cpu: 0.5, paper: 1}}
profiles:
  smoke:
    description: Seconds; checks that the pipeline runs end to end.
    train: {{seeds: [0], steps: 50}}
  cpu:
    description: The claims below at full scale for this toy task, on 2 CPU cores.
  paper:
    description: The paper's own setup.
metrics:
  - name: test_mse
    description: Mean squared error on held-out data.
    higher_is_better: false
  - name: excess_mse
    description: Test MSE minus the noise floor (noise_std^2).
    higher_is_better: false
claims:
  - id: reaches-noise-floor
    statement: Trained by SGD, the model's test error comes within 10% of the noise floor.
    source: Template (replace with e.g. 'Table 1, row 3').
    kind: qualitative
    rationale: Template threshold; state the paper's number as a 'paper' claim once known.
    metric: excess_mse
    compare: "<="
    target: 0.001
    tolerance: {{abs: 0.0, rationale: Exact threshold.}}
    profiles: [cpu, paper]
'''

METHOD = '''\
"""{title} ({arxiv}).

Scaffolded by `registry new`. The config below is typed: `registry validate` checks the manifest's
data/model/train sections against it. Keep torch imports inside `run` (or in a submodule) so that
the fast CLI commands never import torch.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from registry.methods import MethodConfig, Strict, register


class Data(Strict):
    dim: int = Field(20, ge=1)
    n_train: int = Field(2000, ge=1)
    n_test: int = Field(2000, ge=1)
    noise_std: float = Field(0.1, ge=0)


class Model(Strict):
    pass


class Train(Strict):
    optimizer: Literal["sgd"] = "sgd"
    lr: float = Field(0.05, gt=0)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    log_every: int = Field(50, ge=1)


class Config(MethodConfig):
    data: Data = Data()
    model: Model = Model()
    train: Train = Train()


@register("{id}", config=Config)
def run(cfg: Config, ctx) -> dict[str, float]:
    import torch

    d = cfg.data
    g_data = torch.Generator().manual_seed(ctx.seed_for("train-data"))
    g_eval = torch.Generator().manual_seed(ctx.seed_for("eval"))
    teacher = torch.randn(d.dim, generator=torch.Generator().manual_seed(ctx.seed_for("eval") + 1))
    x_tr = torch.randn(d.n_train, d.dim, generator=g_data)
    y_tr = x_tr @ teacher + d.noise_std * torch.randn(d.n_train, generator=g_data)
    x_te = torch.randn(d.n_test, d.dim, generator=g_eval)
    y_te = x_te @ teacher + d.noise_std * torch.randn(d.n_test, generator=g_eval)
    x_tr, y_tr, x_te, y_te = (t.to(ctx.device) for t in (x_tr, y_tr, x_te, y_te))

    w = torch.zeros(d.dim, device=ctx.device, requires_grad=True)
    opt = torch.optim.SGD([w], lr=cfg.train.lr)
    g_batch = torch.Generator().manual_seed(ctx.seed_for("batches"))
    with ctx.progress(total=cfg.train.steps, desc="train") as bar:
        for step in range(1, cfg.train.steps + 1):
            idx = torch.randint(0, d.n_train, (cfg.train.batch_size,), generator=g_batch).to(ctx.device)
            loss = ((x_tr[idx] @ w - y_tr[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(1, loss=loss.item())
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                ctx.log(step, train_loss=loss.item())
    with torch.no_grad():
        test_mse = ((x_te @ w - y_te) ** 2).mean().item()
    return {{"test_mse": test_mse, "excess_mse": test_mse - d.noise_std**2}}
'''


# the `registry new` option that sets each paper field, for messages about bad input
OPTION = {"title": "--title", "authors": "--authors", "year": "--year", "venue": "--venue", "arxiv": "--arxiv"}


def yaml_scalar(value: str) -> str:
    """``value`` as one double-quoted YAML scalar that reads back as exactly ``value``."""
    out = yaml.safe_dump(value, default_style='"', width=float("inf"), allow_unicode=True).rstrip("\n")
    if out.endswith("\n..."):  # pragma: no cover - a document end marker, never written for quoted scalars
        out = out[: -len("\n...")]
    if "\n" in out or yaml.safe_load(out) != value:  # pragma: no cover - guard against a PyYAML surprise
        raise ScaffoldError(f"cannot write {value!r} as a YAML string")
    return out


def _check_paper(title: str, authors: list[str], year: int, venue: str, arxiv: str | None) -> dict:
    """The paper metadata as the manifest schema reads it, or a ScaffoldError naming each bad option."""
    fields = {"title": title, "authors": authors, "year": year, "venue": venue, "code": "none released"}
    if arxiv is not None:
        fields["arxiv"] = arxiv
    try:
        Paper.model_validate(fields)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else ""
            opt = OPTION.get(field, field)
            if field == "arxiv" and err["type"] == "string_pattern_mismatch":
                msg = "not an arXiv id (e.g. 2212.07677 or hep-th/9901001)"
            elif field == "authors" and len(err["loc"]) > 1:
                msg = f"author {err['loc'][1] + 1}: {err['msg']}"
            else:
                msg = err["msg"]
            got = err.get("input")
            msgs.append(f"{opt}: {msg}" + (f" (got {got!r})" if got is not None and not isinstance(got, (dict, list))
                                           else ""))
        raise ScaffoldError(*msgs) from None
    return fields


def create(root: Path, paper: str, *, title: str, authors: list[str], year: int, venue: str,
           arxiv: str | None) -> list[Path]:
    """Write manifests/<paper>.yaml and methods/<paper_with_underscores>/__init__.py. Everything is checked
    first (the inputs, then the rendered manifest against the schema): on any problem nothing is written."""
    if not re.match(SLUG, paper) or len(paper) > SLUG_MAX:
        raise ScaffoldError(f"paper id {paper!r} must be a slug of at most {SLUG_MAX} characters: lowercase "
                            f"letters, digits and single hyphens")
    authors = [a for a in authors if a] or ["Unknown"]
    _check_paper(title, authors, year, venue, arxiv)
    manifest = root / "manifests" / f"{paper}.yaml"
    pkg = root / "methods" / paper.replace("-", "_")
    for p in (manifest, pkg):
        if p.exists():
            raise ScaffoldError(f"{p.relative_to(root)} already exists")

    q = yaml_scalar
    text = MANIFEST.format(
        id=paper, title=q(title), authors=", ".join(q(a) for a in authors), year=year,
        venue=q(venue), arxiv_line=f"  arxiv: {q(arxiv)}\n" if arxiv else "")
    source = METHOD.format(id=paper, title=title.replace("\\", "\\\\").replace('"', '\\"'),
                           arxiv=f"arXiv {arxiv}" if arxiv else "no arXiv id")
    _check_rendered(paper, text, source)
    pkg.mkdir(parents=True)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(source, encoding="utf-8")
    manifest.write_text(text, encoding="utf-8")
    return [manifest, pkg / "__init__.py"]


def _check_rendered(paper: str, text: str, source: str) -> None:
    """The scaffold must validate as written (schema and claim checks; its method is not registered yet)
    and its method must compile; a guard, since the inputs were checked already."""
    from . import manifest as mf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{paper}.yaml"
        path.write_text(text, encoding="utf-8")
        _, problems = mf.check_file(path, with_methods=False, root=Path(tmp))
    if problems:
        raise ScaffoldError(*(f"the manifest would not validate: {p}" for p in problems))
    try:
        compile(source, f"methods/{paper.replace('-', '_')}/__init__.py", "exec")
    except SyntaxError as exc:
        raise ScaffoldError(f"the method would not compile: {exc}") from None
