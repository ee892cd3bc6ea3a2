"""Method registry: paper id -> training entry point and its typed config.

Method packages live under ``methods/`` and register themselves on import::

    @register("position-coupling", config=Config)
    def run(cfg: Config, ctx: RunContext) -> dict[str, float]: ...

A method whose seed consists of independent pieces (e.g. several models trained on their own
generators) may declare them; the runner then calls ``run`` once per piece (in a worker process of
its own under ``registry run --jobs N``, which can spread one seed over several processes) and keeps
each finished piece, so an interrupted run resumes within a seed::

    @register("icl-what-learning-algorithm", config=Config,
              parts=lambda cfg: {"main": 1.0, "noisy": 4.0})   # name -> relative cost, in run order
    def run(cfg, ctx):
        for tag in ...:
            if not ctx.runs(tag):
                continue
            ...

``ctx.part`` names the one piece to compute and ``run`` returns only its metrics; the runner merges
the parts of a seed in the declared order (two parts returning the same metric, or logging the same
curve, are an error). ``ctx.part`` is None, and ``ctx.runs`` true for every piece, only when ``run``
is called directly. Results must not depend on which other parts ran in the same process (use
generators seeded by ``ctx.seed_for``, not global state).

Importing a method package must stay cheap (no torch, no mlflow): the heavy
imports belong inside ``run`` so that ``registry validate`` can check configs
against the typed ``Config`` without loading a deep-learning framework.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
import traceback
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


@dataclass(frozen=True)
class ImportFailure:
    """A module under ``methods/`` that raised while being imported (so registered nothing, or not all)."""

    module: str  # e.g. "methods.broken"
    path: Path  # the package's __init__.py, or the module file
    file: Path | None  # the file the error points at (a SyntaxError's file, else the last frame in the module)
    line: int | None
    error: str  # "ModuleNotFoundError: No module named 'nope'"

    @property
    def where(self) -> str:
        """``methods/broken/__init__.py:3``: the file relative to the folder holding ``methods/``."""
        f = self.file or self.path
        try:
            shown = f.relative_to(self.path.parents[2] if self.path.name == "__init__.py" else self.path.parents[1])
        except ValueError:
            shown = f
        return f"{shown.as_posix()}:{self.line}" if self.line else shown.as_posix()

    def describe(self) -> str:
        return f"module {self.module} failed to import ({self.where}: {self.error})"


class UnknownMethodError(KeyError):
    def __init__(self, key: str, known: list[str], failed: list[ImportFailure] | tuple[ImportFailure, ...] = ()):
        self.key = key
        self.known = known
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        avail = ", ".join(known) if known else "(none)"
        note = ("; it may be registered by a method module that failed to import: "
                + "; ".join(f.describe() for f in failed)) if failed else ""
        super().__init__(f"unknown method {key!r}.{hint} Available: {avail}{note}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class MethodImportError(UnknownMethodError):
    """The method's module exists but raised on import: the message names the module, file, line and error."""

    def __init__(self, key: str, failure: ImportFailure):
        KeyError.__init__(self, f"method {key!r} is unavailable: its {failure.describe()}")
        self.key = key
        self.known = []
        self.failure = failure


_REGISTRY: dict[str, Method] = {}
_FAILED: dict[str, ImportFailure] = {}
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


def _import_failure(module: str, path: Path, exc: BaseException) -> ImportFailure:
    """Where in ``path`` (a package directory or module file) importing ``module`` failed, and why."""

    def inside(f: str | None) -> bool:
        if not f:
            return False
        fp = Path(f).resolve()
        return fp == path.resolve() or (path.is_dir() and path.resolve() in fp.parents)

    file = line = None
    if isinstance(exc, SyntaxError) and inside(exc.filename):
        file, line = Path(exc.filename), exc.lineno
        error = f"{type(exc).__name__}: {exc.msg}"
    else:
        frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if inside(fr.filename)]
        if frames:
            file, line = Path(frames[-1].filename), frames[-1].lineno
        error = f"{type(exc).__name__}: {exc}"
    pkg_init = path / "__init__.py"
    return ImportFailure(module=module, path=pkg_init if path.is_dir() else path,
                         file=file or (pkg_init if path.is_dir() else path), line=line, error=error)


def discover() -> dict[str, Method]:
    """Import every module/package under ``methods/`` once so they register.

    A module that raises on import (a missing dependency, a SyntaxError) is skipped and remembered
    (:func:`import_failures`), so that one broken method does not break every other paper; asking for a
    method it would have registered raises :class:`MethodImportError` naming the module and the error."""
    global _DISCOVERED
    if not _DISCOVERED:
        import methods

        for info in pkgutil.iter_modules(methods.__path__):
            if info.name.startswith("_"):
                continue
            name = f"methods.{info.name}"
            try:
                importlib.import_module(name)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any error of the method's own code (a
                # sys.exit() at import would otherwise end `registry validate` with exit 0 and no output)
                base = Path(getattr(info.module_finder, "path", methods.__path__[0])) / info.name
                _FAILED[name] = _import_failure(name, base if info.ispkg else base.with_suffix(".py"), exc)
        _DISCOVERED = True
    return _REGISTRY


def import_failures() -> list[ImportFailure]:
    """The method modules that failed to import in :func:`discover`, in import order."""
    discover()
    return list(_FAILED.values())


def _failure_for(key: str) -> ImportFailure | None:
    """The failed module that most likely registers ``key``: the one named after it (``my-paper`` ->
    ``methods.my_paper``), else one whose source text has ``register("key"``."""
    by_name = _FAILED.get(f"methods.{key.replace('-', '_')}")
    if by_name is not None:
        return by_name
    pattern = re.compile(r"register\(\s*['\"]" + re.escape(key) + r"['\"]")
    for failure in _FAILED.values():
        files = sorted(failure.path.parent.rglob("*.py")) if failure.path.name == "__init__.py" else [failure.path]
        for f in files:
            try:
                if pattern.search(f.read_text(encoding="utf-8", errors="replace")):
                    return failure
            except OSError:
                continue
    return None


def get(key: str) -> Method:
    registry = discover()
    try:
        return registry[key]
    except KeyError:
        pass
    failure = _failure_for(key)
    if failure is not None:
        raise MethodImportError(key, failure) from None
    raise UnknownMethodError(key, sorted(registry), list(_FAILED.values())) from None


def all_methods() -> dict[str, Method]:
    return dict(discover())
