"""Load, check and resolve manifests, reporting every problem with file, line and field.

Loading never executes anything from the file: YAML is composed with ``yaml.SafeLoader``
(no Python tags), duplicate keys are refused, and the result is validated by the
pydantic models in :mod:`registry.schema`. All problems in a file are collected, not
just the first one.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from .schema import PROFILE_NAME, REQUIRED_PROFILES, SEEDS, Claim, Manifest, Profile, Section, Train

Loc = tuple[Any, ...]

try:  # the C parser is ~10x faster; fall back to pure Python where libyaml is missing
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _BaseLoader = yaml.SafeLoader

MAX_DEPTH = 50  # nesting levels; a manifest needs about 6 (deeper input would exhaust Python's recursion limit)
_INT_BITS = 128  # larger integers are refused where they are read (no field needs them; printing one can fail)


class _Loader(_BaseLoader):
    """The safe loader, with two changes that keep every scalar readable and every error tied to its line:
    a date-like scalar (``2024-05-01``) stays text, as no manifest field is a date (YAML 1.1 would make it a
    date, and an impossible one such as ``2025-13-45`` an uncaught error), and an integer too large to use is
    an error at its line."""

    def construct_yaml_timestamp(self, node):  # noqa: D102
        return self.construct_scalar(node)

    def construct_yaml_int(self, node):  # noqa: D102
        try:
            value = super().construct_yaml_int(node)
        except ValueError:  # more decimal digits than Python converts (4300)
            raise yaml.constructor.ConstructorError(None, None, "integer too large (thousands of digits)",
                                                    node.start_mark) from None
        if abs(value).bit_length() > _INT_BITS:
            raise yaml.constructor.ConstructorError(None, None, f"integer too large (more than {_INT_BITS} bits)",
                                                    node.start_mark)
        return value


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ManifestError(Exception):
    """One or more problems in one or more manifests."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------- YAML with positions


@dataclass
class Document:
    path: Path
    data: Any
    node: yaml.Node | None

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the deepest node that exists along ``loc``."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                # the last pair wins, as in the constructed mapping: after YAML merge keys (``<<: *x``)
                # are resolved, an explicit key follows (and overrides) the merged one
                match = [(k, v) for k, v in node.value if k.value == str(part)]
                if not match:
                    return line
                key_node, node = match[-1]
                line = key_node.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def has(self, loc: Loc) -> bool:
        cur = self.data
        for part in loc:
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
                cur = cur[part]
            else:
                return False
        return True


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(node: yaml.Node, path: Loc, out: list[tuple[Loc, int, str]],
                    visited: set[int] | None = None) -> None:
    """Keys given twice in one mapping, found on the composed node (before construction, which resolves
    merge keys in place). A merge key ``<<`` is not a key of its own, and a key that overrides a merged
    one is legal YAML; the merged mappings are checked where they are defined."""
    visited = set() if visited is None else visited
    if id(node) in visited:  # an alias (*x) of a node already checked where its anchor is
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # a merge key, or a list/mapping as key (construction reports it as unhashable)
            key = key_node.value
            if key in seen:
                out.append((path + (key,), key_node.start_mark.line + 1, f"duplicate key {key!r}"))
            seen.add(key)
            _duplicate_keys(value_node, path + (key,), out, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            _duplicate_keys(child, path + (i,), out, visited)


# Constructs that run on until their closing bracket or quote: when one is left open the parser notices a
# line (or a file) later, so the line where it started is where the mistake is.
_UNCLOSED = ("while parsing a flow", "while scanning a quoted scalar")


def _yaml_error(exc: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    """The line and message of a YAML syntax error. When the parser names the construct it was reading
    (``context``) and where that started (``context_mark``), both lines are in the message."""
    ctx, problem = exc.context, exc.problem
    c_line = exc.context_mark.line + 1 if exc.context_mark else None
    p_line = exc.problem_mark.line + 1 if exc.problem_mark else None
    if not ctx or c_line is None or p_line is None or c_line == p_line:
        return p_line or c_line, " ".join(str(x) for x in (ctx, problem) if x)
    if str(ctx).startswith(_UNCLOSED):  # an unclosed [ { or quote: point at where it was opened
        return c_line, f"{ctx} started at line {c_line}: {problem} at line {p_line}"
    return p_line, f"{ctx} started at line {c_line}: {problem}"


_STR_TAG = "tag:yaml.org,2002:str"


def _prepare_composed(node: yaml.Node) -> tuple[yaml.Node, Loc] | None:
    """Make every scalar key a string, as written (YAML 1.1 reads an unquoted ``yes``, ``off``, ``null`` or ``1``
    key as a bool, None or int, which no manifest field is, and an error would then name ``True``), and return
    the first node nested more than ``MAX_DEPTH`` levels deep with where it is, if any. Iterative: Python's
    recursion limit is what such input would exhaust."""
    stack: list[tuple[yaml.Node, Loc]] = [(node, ())]
    seen: set[int] = set()
    while stack:
        cur, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return cur, loc
        if id(cur) in seen:  # an alias of a node already walked
            continue
        seen.add(id(cur))
        if isinstance(cur, yaml.MappingNode):
            for key, value in cur.value:
                if isinstance(key, yaml.ScalarNode) and key.tag not in (_STR_TAG, _MERGE_TAG):
                    key.tag = _STR_TAG
                stack.append((value, loc + (getattr(key, "value", "?"),)))
        elif isinstance(cur, yaml.SequenceNode):
            stack += [(v, loc + (i,)) for i, v in enumerate(cur.value)]
    return None


def read_yaml(path: Path, display: str) -> tuple[Document | None, list[Problem]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Problem(display, None, "", f"cannot read file: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return None, [Problem(display, line, "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded "
                                                 f"(save the file as UTF-8)")]
    loader = _Loader(text)
    dups: list[tuple[Loc, int, str]] = []
    try:
        node = loader.get_single_node()
        deep = _prepare_composed(node) if node is not None else None
        if deep is not None:
            return None, [Problem(display, deep[0].start_mark.line + 1, format_loc(deep[1][:2]) + "...",
                                  f"nested more than {MAX_DEPTH} levels deep; a manifest needs only a few")]
        if node is not None:  # on the composed node: construction flattens merge keys into it
            _duplicate_keys(node, (), dups)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        line, msg = _yaml_error(exc)
        return None, [Problem(display, line, "", f"invalid YAML: {msg}")]
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a control character, NUL)
        line = text[:exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        return None, [Problem(display, line, "", f"invalid YAML: control character {char!r} is not allowed")]
    except yaml.YAMLError as exc:
        return None, [Problem(display, None, "", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    doc = Document(path=path, data=data, node=node)
    problems = [Problem(display, line, format_loc(loc), msg) for loc, line, msg in dups]
    if not isinstance(data, dict):
        problems.append(Problem(display, doc.line_of(()), "", "a manifest must be a YAML mapping (key: value pairs)"))
    return doc, problems


# --------------------------------------------------------------------------- checks


def _pydantic_problems(exc: ValidationError, doc: Document, display: str, prefix: Loc = ()) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not in the schema)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("model_type", "dict_type") and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        out.append(Problem(display, doc.line_of(loc), format_loc(loc), msg))
    return out


_BAD: Any = type("_Bad", (), {"__repr__": lambda self: "<schema error>"})()  # a field that failed its own check


@dataclass(frozen=True)
class _Parts:
    """The manifest's fields that are well-formed on their own, so that the cross-field checks (claims against
    metrics and profiles, the method config) run even when another field has a schema error. A field that
    failed its own schema check is ``_BAD``; in ``profiles`` and ``claims`` a malformed entry is ``None``."""

    status: Any
    status_reason: Any
    method: Any
    data: Any  # Section
    model: Any  # Section
    train: Any  # Train | None
    profiles: Any  # dict[name, Profile | None]
    metric_names: Any  # list[(index, name)]: names of the declared metrics, also of malformed entries
    claims: Any  # list[Claim | None]

    @classmethod
    def of(cls, m: Manifest) -> "_Parts":
        return cls(status=m.status, status_reason=m.status_reason, method=m.method, data=m.data, model=m.model,
                   train=m.train, profiles=dict(m.profiles), metric_names=[(i, x.name) for i, x in enumerate(m.metrics)],
                   claims=list(m.claims))

    @classmethod
    def from_raw(cls, raw: dict[str, Any], errors: list[dict[str, Any]]) -> "_Parts":
        bad = {e["loc"][0] for e in errors if e["loc"]}

        def scalar(name: str) -> Any:
            return _BAD if name in bad else raw.get(name)

        def model(cls_: Any, value: Any) -> Any:
            try:
                return cls_.model_validate(value)
            except ValidationError:
                return _BAD

        data = _BAD if "data" in bad else model(Section, raw.get("data", {}))
        mdl = _BAD if "model" in bad else model(Section, raw.get("model", {}))
        train_raw = raw.get("train")
        if "train" not in bad:
            train = None if train_raw is None else model(Train, train_raw)
        elif isinstance(train_raw, dict) and all(tuple(e["loc"][:2]) == ("train", "seeds") for e in errors
                                                 if e["loc"] and e["loc"][0] == "train"):
            # only the seeds are wrong (reported already): the method parameters can still be checked
            train = model(Train, {**train_raw, "seeds": [0]})
        else:
            train = _BAD

        def entry(cls_: Any, value: Any) -> Any:  # one entry of a list or mapping: None when malformed
            found = model(cls_, value)
            return None if found is _BAD else found

        profiles: Any = raw.get("profiles", {})
        if isinstance(profiles, dict):
            profiles = {name: entry(Profile, v) if isinstance(name, str) and re.match(PROFILE_NAME, name) else None
                        for name, v in profiles.items()}
        else:
            profiles = _BAD
        metrics = raw.get("metrics", [])
        names: Any = _BAD
        if isinstance(metrics, list) and all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in metrics):
            names = [(i, x["name"]) for i, x in enumerate(metrics)]
        # else: with a malformed entry the declared names are unknown, so claims are not told "not declared"
        claims: Any = raw.get("claims", [])
        claims = [entry(Claim, c) for c in claims] if isinstance(claims, list) else _BAD
        return cls(status=scalar("status"), status_reason=scalar("status_reason"), method=scalar("method"),
                   data=data, model=mdl, train=train, profiles=profiles, metric_names=names, claims=claims)


def _semantic_problems(m: "Manifest | _Parts") -> list[tuple[Loc, str]]:
    """Checks across fields; on ``_Parts`` only those whose fields are well-formed."""
    parts = m if isinstance(m, _Parts) else _Parts.of(m)
    out: list[tuple[Loc, str]] = []
    all_claims = [] if parts.claims is _BAD else parts.claims
    claims = [(i, c) for i, c in enumerate(all_claims) if c is not None]
    for i, c in claims:
        at = ("claims", i)
        if c.kind == "paper" and c.target is not None:
            out.append((at + ("target",), "a 'paper' claim is checked against reported.value (the paper's number); "
                        "do not set 'target' (state a separate 'scaled' claim instead)"))
        if c.kind != "paper" and c.rationale is None:
            out.append((at + ("rationale",), f"a '{c.kind}' claim needs a 'rationale' for its threshold"))
        if c.kind == "setup" and c.reported is not None and c.reported.value is not None:
            out.append((at + ("reported",), "a 'setup' check tests our experiment, not a number of the paper; "
                        "do not set reported.value"))
        checkable = c.metric is not None or c.compare is not None or bool(c.profiles)
        if not checkable:
            continue
        for f in ("metric", "compare", "tolerance"):
            if getattr(c, f) is None:
                out.append((at + (f,), "required for a checked claim"))
        if c.kind == "paper" and (c.reported is None or c.reported.value is None):
            out.append((at + ("reported",), "a checked 'paper' claim needs reported.value (the paper's number)"))
        if c.kind != "paper" and c.target is None:
            out.append((at + ("target",), f"a checked '{c.kind}' claim needs 'target'"))
        if not c.profiles:
            out.append((at + ("profiles",), "a checked claim needs the profiles it is checked at"))

    seen_ids: set[str] = set()
    for i, c in claims:
        if c.id in seen_ids:
            out.append((("claims", i, "id"), f"duplicate claim id {c.id!r}"))
        seen_ids.add(c.id)

    if parts.status == "catalogued":
        if parts.status_reason is not _BAD and not parts.status_reason:
            out.append((("status_reason",), "a catalogued paper needs 'status_reason' (why it is not implemented)"))
        for i, c in claims:
            if c.checked:
                out.append((("claims", i, "metric"), "a catalogued paper has no method to produce metrics; "
                            "drop the check or implement the paper"))
        return out
    if parts.status != "implemented":  # a schema error: which checks apply is unknown
        return out

    profiles = {} if parts.profiles is _BAD else parts.profiles
    for name, prof in profiles.items():
        if prof is not None and "seeds" in prof.train:
            try:
                SEEDS.validate_python(prof.train["seeds"])
            except ValidationError:
                out.append((("profiles", name, "train", "seeds"),
                            "must be a non-empty list of distinct non-negative integers below 2**32"))
    if parts.method is None:
        out.append((("method",), "an implemented paper needs 'method' (a key in the method registry)"))
    if parts.train is None:
        out.append((("train",), "an implemented paper needs a 'train' section (at least 'seeds')"))
    if parts.profiles is not _BAD:
        for p in REQUIRED_PROFILES:
            if p not in profiles:
                out.append((("profiles",), f"missing profile {p!r} (every implemented paper has smoke, cpu and paper)"))
    names: list[str] = []
    if parts.metric_names is not _BAD:
        for i, n in parts.metric_names:
            if n in names:
                out.append((("metrics", i, "name"), f"duplicate metric {n!r}"))
            names.append(n)
    for i, c in claims:
        if parts.metric_names is not _BAD:
            for f in ("metric", "baseline"):
                v = getattr(c, f)
                if v is not None and v not in names:
                    out.append((("claims", i, f), f"metric {v!r} is not declared in 'metrics'"))
            if c.seeds_where and c.seeds_where.metric not in names:
                out.append((("claims", i, "seeds_where", "metric"),
                            f"metric {c.seeds_where.metric!r} is not declared in 'metrics'"))
        if parts.profiles is not _BAD:
            for j, p in enumerate(c.profiles):
                if p not in profiles:
                    out.append((("claims", i, "profiles", j), f"profile {p!r} is not defined in 'profiles'"))
    if parts.claims is not _BAD and None not in parts.claims and not any(c.checked for _, c in claims):
        out.append((("claims",), "an implemented paper needs at least one checked claim"))
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# scripts/paper_check.py's short GPU check of `paper` is `paper-check`, of `paper-<name>` `paper-<name>-check`
CHECK_SUFFIX = "-check"


def is_paper_level(profile: str) -> bool:
    """Whether a profile is paper-level (the paper's own setup, meant for a GPU): `paper` or a supplementary
    `paper-<name>`, but not a derived `<profile>-check` (that setup with a few steps; scripts/paper_check.py)."""
    return profile == "paper" or (profile.startswith("paper-") and not profile.endswith(CHECK_SUFFIX))


@dataclass(frozen=True)
class Resolved:
    """A manifest at one profile: the method config sections, seeds and device."""

    manifest: Manifest
    profile: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    seeds: list[int]
    device: str
    jobs: int | None = None  # the profile's CPU worker processes (None: one process)

    def method_sections(self) -> dict[str, dict[str, Any]]:
        return {"data": self.data, "model": self.model, "train": self.train}

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "seeds": self.seeds, "device": self.device, **self.method_sections()}


def resolve(m: Manifest, profile: str) -> Resolved:
    if profile not in m.profiles:
        known = ", ".join(m.profiles) or "(none)"
        raise KeyError(f"{m.id}: no profile {profile!r}; defined: {known}")
    if m.train is None:
        raise KeyError(f"{m.id}: no 'train' section")
    p = m.profiles[profile]
    sections, seeds = _merge_profile(m.data, m.model, m.train, p)
    return Resolved(
        manifest=m,
        profile=profile,
        **sections,
        seeds=list(seeds),
        device=p.device or m.hardware.device,
        jobs=p.jobs,
    )


def _merge_profile(data: Section, model: Section, train: Train, p: Profile) -> tuple[dict[str, dict[str, Any]], Any]:
    """The method sections (data, model, train) at profile ``p``, and its seeds (as given)."""
    merged_train = deep_merge(train.params() | {"seeds": train.seeds}, p.train)
    seeds = merged_train.pop("seeds")
    return ({"data": deep_merge(data.params(), p.data), "model": deep_merge(model.params(), p.model),
             "train": merged_train}, seeds)


def _lookup_method(key: str, doc: Document, display: str):
    """The registered method for ``key``, or a located 'unknown method' problem."""
    from . import methods

    try:
        return methods.get(key)
    except methods.UnknownMethodError as exc:
        return Problem(display, doc.line_of(("method",)), "method", str(exc))


def method_import_problems(root: Path | None = None) -> list[Problem]:
    """One problem per module under ``methods/`` that failed to import (file and line of the error)."""
    from . import methods

    out = []
    for f in methods.import_failures():
        out.append(Problem(display_path(f.file or f.path, root), f.line, "",
                           f"method module {f.module} failed to import: {f.error}"))
    return out


def _method_problems(parts: _Parts, doc: Document, display: str) -> list[Problem]:
    """The method lookup and its typed config at every well-formed profile, on the sections that are
    well-formed (nothing is checked for a section with a schema error: that error is reported already)."""
    if parts.status != "implemented" or not isinstance(parts.method, str):
        return []
    method = _lookup_method(parts.method, doc, display)
    if isinstance(method, Problem):
        return [method]
    if _BAD in (parts.data, parts.model, parts.train, parts.profiles) or parts.train is None:
        return []
    key = parts.method
    out: list[Problem] = []
    for name, prof in parts.profiles.items():
        if prof is None:
            continue
        sections, _ = _merge_profile(parts.data, parts.model, parts.train, prof)
        try:
            method.config.model_validate(sections)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc = tuple(err["loc"])
                # Point at the override when the profile sets this field, else at the base section.
                candidates = [("profiles", name) + loc, loc, ("profiles", name) + loc[:1], loc[:1]]
                where = next((c for c in candidates if doc.has(c)), loc)
                msg = "unknown parameter for method " + repr(key) if err["type"] == "extra_forbidden" else err["msg"]
                if err["type"] == "missing":
                    msg = f"required by method {key!r} but not given"
                elif "input" in err and not isinstance(err["input"], (dict, list)) and err["type"] != "extra_forbidden":
                    msg = f"{msg} (got {err['input']!r})"
                out.append(Problem(display, doc.line_of(where), format_loc(where),
                                   f"{msg} [profile {name}]"))
    # one message per (field, text), not one per profile that inherits the same base value
    seen: set[tuple[str, str]] = set()
    unique = []
    for p in out:
        k = (p.field, p.message.rsplit(" [profile", 1)[0])
        if k not in seen:
            seen.add(k)
            unique.append(p)
    return unique


def display_path(path: Path, root: Path | None = None) -> str:
    try:
        return str(path.resolve().relative_to((root or Path.cwd()).resolve()))
    except ValueError:
        return str(path)


def check_file(path: Path, *, with_methods: bool = True, root: Path | None = None) -> tuple[Manifest | None, list[Problem]]:
    """Validate one manifest file; return the model (if it has no problem) and every problem found.

    Everything is checked in one pass: a schema error in one field does not hide the cross-field checks
    (claims against metrics and profiles) or the method-config check of the fields that are well-formed."""
    display = display_path(path, root)
    doc, problems = read_yaml(path, display)
    if doc is None or not isinstance(doc.data, dict):
        return None, problems
    try:
        m = Manifest.model_validate(doc.data)
        parts = _Parts.of(m)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, doc, display)
        m = None
        parts = _Parts.from_raw(doc.data, exc.errors(include_url=False))
    pid = m.id if m is not None else doc.data.get("id")
    id_ok = m is not None or not any(p.field == "id" for p in problems)
    if id_ok and isinstance(pid, str) and path.suffix in (".yaml", ".yml") and path.stem != pid:
        problems.append(Problem(display, doc.line_of(("id",)), "id",
                                f"id {pid!r} must match the file name ({path.stem!r})"))
    problems += [Problem(display, doc.line_of(loc), format_loc(loc), msg) for loc, msg in _semantic_problems(parts)]
    if with_methods:
        problems += _method_problems(parts, doc, display)
    return (m if not problems else None), problems


def manifest_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "manifests").glob("*.yaml") if not p.name.startswith("_"))


def load(path: Path, **kw: Any) -> Manifest:
    m, problems = check_file(path, **kw)
    if problems or m is None:
        raise ManifestError(problems)
    return m


def load_all(root: Path, *, with_methods: bool = True) -> tuple[dict[str, Manifest], list[Problem]]:
    manifests: dict[str, Manifest] = {}
    problems: list[Problem] = []
    for path in manifest_files(root):
        m, probs = check_file(path, with_methods=with_methods, root=root)
        problems += probs
        if m is not None:
            manifests[m.id] = m
    return manifests, problems


def find(root: Path, paper_id: str) -> Path:
    path = root / "manifests" / f"{paper_id}.yaml"
    known = [p.stem for p in manifest_files(root)]
    if paper_id not in known:  # looked up by name, not by path: an id such as ../x or 300 characters is unknown
        import difflib

        close = difflib.get_close_matches(paper_id, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ManifestError([Problem(f"manifests/{paper_id}.yaml", None, "", f"no such paper {paper_id!r}.{hint}")])
    return path


def content_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()

