"""Method registry: paper id -> training entry point and its typed config.

Method packages live under ``methods/`` and register themselves on import::

    @register("position-coupling", config=Config)
    def run(cfg: Config, ctx: RunContext) -> dict[str, float]: ...

A method whose seed consists of independent pieces (e.g. several models trained on their own
generators) may declare them, so that ``registry run --jobs N`` can spread one seed over
several processes::

    @register("icl-what-learning-algorithm", config=Config,
              parts=lambda cfg: {"main": 1.0, "noisy": 4.0})   # name -> relative cost, in run order
    def run(cfg, ctx):
        for tag in ...:
            if not ctx.runs(tag):
                continue
            ...

With a part set, ``ctx.part`` names the one piece to compute and ``run`` returns only its metrics;
the runner merges the parts of a seed in the declared order. Results must not depend on which
other parts ran in the same process (use generators seeded by ``ctx.seed_for``, not global state).

Importing a method package must stay cheap (no torch, no mlflow): the heavy
imports belong inside ``run`` so that ``registry validate`` can check configs
against the typed ``Config`` without loading a deep-learning framework.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every typed config section: unknown keys are errors, and so are .inf/.nan floats."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MethodConfig(Strict):
    """A method's config has exactly three sections, mirroring the manifest."""

    data: Strict
    model: Strict
    train: Strict


RunFn = Callable[[Any, Any], Mapping[str, float]]
PartsFn = Callable[[Any], Mapping[str, float]]


@dataclass(frozen=True)
class Method:
    key: str
    run: RunFn
    config: type[MethodConfig]
    module: str
    parts: PartsFn | None = None  # cfg -> {part name: relative cost}, in the order run() computes them

    def part_costs(self, cfg: Any) -> dict[str, float]:
        """The seed's independent parts for ``cfg`` ({} when the method declares none, or only one)."""
        if self.parts is None:
            return {}
        costs = {str(k): float(v) for k, v in self.parts(cfg).items()}
        return costs if len(costs) > 1 else {}

    @property
    def source_dir(self) -> Path:
        """Directory (package) or file holding the method's code, for DVC deps and run identity."""
        mod = importlib.import_module(self.module)
        path = Path(mod.__file__)
        return path.parent if path.name == "__init__.py" else path


class UnknownMethodError(KeyError):
    def __init__(self, key: str, known: list[str]):
        self.key = key
        self.known = known
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        avail = ", ".join(known) if known else "(none)"
        super().__init__(f"unknown method {key!r}.{hint} Available: {avail}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


_REGISTRY: dict[str, Method] = {}
_DISCOVERED = False


def register(key: str, *, config: type[MethodConfig], parts: PartsFn | None = None) -> Callable[[RunFn], RunFn]:
    """Register ``fn`` as the entry point of method ``key``; double registration is an error.
    ``parts`` (optional): see the module docstring."""

    if not isinstance(config, type) or not issubclass(config, MethodConfig):
        raise TypeError(f"method {key!r}: config must subclass registry.methods.MethodConfig")

    def deco(fn: RunFn) -> RunFn:
        existing = _REGISTRY.get(key)
        if existing is not None and existing.module != fn.__module__:
            raise ValueError(
                f"method {key!r} registered twice: by {existing.module} and {fn.__module__}"
            )
        _REGISTRY[key] = Method(key=key, run=fn, config=config, module=fn.__module__, parts=parts)
        return fn

    return deco


def discover() -> dict[str, Method]:
    """Import every module/package under ``methods/`` once so they register."""
    global _DISCOVERED
    if not _DISCOVERED:
        import methods

        for info in pkgutil.iter_modules(methods.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"methods.{info.name}")
        _DISCOVERED = True
    return _REGISTRY


def get(key: str) -> Method:
    registry = discover()
    try:
        return registry[key]
    except KeyError:
        raise UnknownMethodError(key, sorted(registry)) from None


def all_methods() -> dict[str, Method]:
    return dict(discover())
