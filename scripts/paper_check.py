#!/usr/bin/env python3
"""Run every paper-level profile at the paper's shapes for a few steps, to catch what would break it.

A `paper` profile is the paper's own setup, meant for a GPU, and can train for hours before its evaluation
runs; so can the supplementary paper-level profiles some papers add (`paper-<name>`, e.g. position-coupling's
`paper-multiplication`). This check trains each implemented paper (or those named with --papers) once per
paper-level profile (or those named with --profiles), at a derived profile `<profile>-check` (`paper-check`,
`paper-multiplication-check`, ...): that profile with only its *budget* changed (step counts, batch sizes,
numbers of evaluation samples, logging intervals, the first seed only), every width, depth, head count,
vocabulary, sequence and evaluation length kept. It runs `registry train <id> --profile <profile>-check` in a
scratch copy of the checkout and reports per paper and profile whether the run finished, on which device, in
how long, and whether every metric that a claim of that profile checks (its metric, baseline and
`seeds_where` metric) came out, finite, and its peak memory. It says nothing about whether the claims would
pass. With --full-batch the profile's batch sizes stay too: on a GPU, whether its training and evaluation
steps fit in memory.

The budget of a paper is its entry in BUDGETS below, else the budget keys (BUDGET_KEYS) of its `smoke`
profile. Writes DIR/paper_check.md, DIR/paper_check.json and DIR/paper_check.log (DIR: --out, else $OUT,
else ./paper_check). Exit code 0 when every checked paper passed, 1 otherwise, 2 on bad arguments.

    .venv/bin/python scripts/paper_check.py --jobs 2      # here (CPU; fire-relative-positions alone ~27 min)
    scripts/device_check.sh paper-check --device cuda --full-batch   # on the GPU machine (see device_check.py)
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (REPO, HERE):  # the registry, and device_check (run_registry)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from device_check import _tail, run_registry  # noqa: E402
from registry import manifest as mf  # noqa: E402  (no torch: the registry's own merge)
from registry.runner import largest_peak  # noqa: E402

PROFILE = "paper" + mf.CHECK_SUFFIX  # the derived profile of `paper`; `paper-<name>` gets `paper-<name>-check`

# Config keys that set how much work a run does, never what is computed: the only keys the check changes.
BUDGET_KEYS = frozenset({
    "seeds", "steps", "epochs", "batch_size", "eval_batch_size", "log_every", "eval_every",
    "eval_samples", "eval_samples_curve", "eval_tasks", "eval_sequences", "linesearch_tasks", "ilwd_tasks",
    "n_probes", "train_size", "select_every", "select_samples", "multilayer_steps", "multilayer_batch_size",
    "teacher_steps", "student_steps", "ckpt_every", "pretrain_steps", "sft_steps", "linear_steps",
    "limit_steps", "u_probe_steps", "grad_probe", "n_students", "n_trials", "n_fit", "n_holdout", "n_pairs",
    "n_pairs_ridge", "n_groups", "n_group_bases",
})

# Budgets chosen for the large models (a few steps at the paper's widths and lengths; a few minutes on
# 2 CPU cores for all papers but fire-relative-positions). A paper without an entry gets its smoke budget.
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "arithmetic-multioperand-length-generalization": {
        "data": {"train_size": 64},
        "train": {"steps": 2, "batch_size": 2, "eval_samples": 2, "eval_batch_size": 2, "log_every": 1}},
    "fire-relative-positions": {
        "data": {"eval_sequences": 1}, "train": {"steps": 2, "batch_size": 1, "log_every": 1}},
    "formal-length-generalization-framework": {
        "data": {"eval_samples": 4},
        "train": {"steps": 2, "batch_size": 2, "eval_every": 1, "log_every": 1, "eval_batch_size": 4}},
    "icl-what-learning-algorithm": {
        "train": {"steps": 2, "batch_size": 2, "eval_tasks": 8, "n_probes": 2, "ilwd_tasks": 4,
                  "linesearch_tasks": 8, "log_every": 1}},
    "parity-cot-transformer": {"train": {"epochs": 1, "log_every": 1}},
    "position-coupling": {
        "data": {"train_size": 64},
        "train": {"steps": 2, "batch_size": 4, "eval_samples": 4, "select_samples": 4, "select_every": 1,
                  "eval_every": 1, "log_every": 1}},
    "rasp-l-length-generalization": {"train": {"steps": 2, "batch_size": 2, "eval_samples": 4, "log_every": 1}},
}


def budget_of(raw: dict[str, Any], full_batch: bool = False) -> dict[str, dict[str, Any]]:
    """The budget overrides of one manifest (its parsed YAML): its BUDGETS entry, else the budget keys of its
    smoke profile; with ``full_batch``, none of its batch sizes (the paper's stay)."""
    if raw["id"] in BUDGETS:
        budget = copy.deepcopy(BUDGETS[raw["id"]])
    else:
        smoke = (raw.get("profiles") or {}).get("smoke") or {}
        budget = {sec: {k: v for k, v in (smoke.get(sec) or {}).items() if k in BUDGET_KEYS}
                  for sec in ("data", "model", "train")}
    keep = (lambda k: not k.endswith("batch_size")) if full_batch else (lambda k: True)
    return {sec: {k: v for k, v in vals.items() if keep(k)} for sec, vals in budget.items()}


def paper_profiles(raw: dict[str, Any]) -> list[str]:
    """A manifest's paper-level profiles in file order."""
    return [n for n in (raw.get("profiles") or {}) if mf.is_paper_level(n)]


def check_name(source: str) -> str:
    """The derived profile that checks ``source``: `paper` -> `paper-check`."""
    return source + mf.CHECK_SUFFIX


def derive_profile(raw: dict[str, Any], full_batch: bool = False, source: str = "paper") -> dict[str, Any]:
    """The `<source>-check` profile: the ``source`` profile with the budget overrides and its first seed only."""
    base = raw["profiles"][source]
    prof = mf.deep_merge(base, {sec: vals for sec, vals in budget_of(raw, full_batch).items() if vals})
    seeds = (base.get("train") or {}).get("seeds") or (raw.get("train") or {}).get("seeds") or [0]
    prof.setdefault("train", {})["seeds"] = [seeds[0]]
    prof["description"] = (f"Derived by scripts/paper_check.py: the {source} profile at a few steps, its widths, "
                           "depths and lengths kept.")
    prof.pop("jobs", None)
    return prof


def differing_paths(a: Any, b: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the leaves where two resolved configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b), key=str)
                for p in differing_paths(a.get(k), b.get(k), path + (str(k),))]
    return [] if a == b else [path]


def required_metrics(manifest, profile: str = "paper") -> dict[str, list[str]]:
    """Metric -> the claims of ``profile`` that need it (as metric, baseline or seeds_where metric)."""
    need: dict[str, list[str]] = {}
    for c in manifest.claims:
        if not c.checked or profile not in c.profiles:
            continue
        for name in (c.metric, c.baseline, c.seeds_where.metric if c.seeds_where else None):
            if name:
                need.setdefault(name, []).append(c.id)
    return need


def metric_problems(need: dict[str, list[str]], metrics: dict[str, Any]) -> list[str]:
    out = []
    for name, claims in sorted(need.items()):
        v = metrics.get(name)
        if v is None:
            out.append(f"{name} missing (claims {', '.join(claims)})")
        elif not isinstance(v, (int, float)) or not math.isfinite(v):
            out.append(f"{name} = {v} (claims {', '.join(claims)})")
    return out


def prepare(root: Path, papers: list[str], dest: Path, full_batch: bool = False,
            sources: list[str] | None = None) -> dict[str, list[str]]:
    """A scratch registry at ``dest``: the checkout's manifests and methods, with a `<profile>-check` profile
    added to each paper checked for each of its paper-level profiles (only those in ``sources`` when given).
    Returns paper -> the paper-level profiles it got a check profile for."""
    import yaml

    shutil.copy(root / "pyproject.toml", dest)
    shutil.copytree(root / "manifests", dest / "manifests")
    if (root / "methods").is_dir():
        shutil.copytree(root / "methods", dest / "methods", ignore=shutil.ignore_patterns("__pycache__"))
    checked: dict[str, list[str]] = {}
    for paper in papers:
        path = dest / "manifests" / f"{paper}.yaml"
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        checked[paper] = [s for s in paper_profiles(raw) if sources is None or s in sources]
        for source in checked[paper]:
            raw["profiles"][check_name(source)] = derive_profile(raw, full_batch, source)
        path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    return checked


def check_one(root: Path, paper: str, device: str, threads: int | None, timeout: float,
              need: dict[str, list[str]], source: str = "paper") -> dict[str, Any]:
    """Train ``paper`` at ``<source>-check`` in the prepared registry ``root`` and check what came out."""
    profile = check_name(source)
    cmd = [sys.executable, "-m", "registry.cli", "train", paper, "--profile", profile, "--device", device,
           "--no-track", "--quiet", "--fresh"] + (["--threads", str(threads)] if threads else [])
    out: dict[str, Any] = {"paper": paper, "profile": source, "device_requested": device}
    out["rc"], text, out["wall_s"] = run_registry(root, cmd, timeout)
    out["log"] = text
    problems: list[str] = []
    try:
        record = json.loads((root / "results" / paper / profile / "run" / "metrics.json").read_text())
    except (OSError, ValueError):
        record = None
    if out["rc"] != 0 or record is None:
        problems.append(f"the run did not finish (rc {out['rc']}): {_tail(text)}")
    else:
        out.update(device=record["device"], train_s=record["seconds"],
                   peak_memory_mb=largest_peak([s.get("peak_memory_mb") for s in record["per_seed"]]))
        if record["device"] != device:
            problems.append(f"ran on {record['device']}, not {device}")
        for s in record["per_seed"]:
            problems += [f"seed {s['seed']}: {p}" for p in metric_problems(need, s["metrics"])]
    out["claim_metrics"] = len(need)
    out["problems"] = problems
    out["ok"] = not problems
    return out


def render(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    batches = "the paper profile's" if header["full_batch"] else "reduced"
    lines = [f"# Paper-profile check ({header['device']})", "",
             f"{header['when']} · torch {header['torch']} · {header['device_name']} · "
             f"{header['wall_s']:.0f} s in all", "",
             "Each paper-level profile (`paper`, `paper-<name>`) of each paper at a few steps (widths, depths "
             "and lengths kept): whether it runs and produces every metric its claims check. Not a "
             "reproduction.", "",
             f"Batch sizes: {batches}. Peak memory: "
             "CUDA memory torch allocated, or on CPU the training process's peak resident set.", "",
             "| paper | profile | finished | device | claim metrics | wall s | peak MiB | problems |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        probs = "; ".join(r.get("problems") or []) or "-"
        lines.append(f"| {r['paper']} | {r['profile']} | {'yes' if r.get('ok') else 'NO'} | {r.get('device', '-')} | "
                     f"{r.get('claim_metrics', '-')} | {r.get('wall_s', '-')} | {r.get('peak_memory_mb') or '-'} | "
                     f"{probs.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="Device of papers whose manifest says device: auto (the others run on CPU).")
    ap.add_argument("--papers", help="Comma-separated paper ids (default: every implemented paper).")
    ap.add_argument("--exclude", default="", help="Comma-separated paper ids to leave out.")
    ap.add_argument("--profiles", help="Comma-separated paper-level profiles to check, e.g. `paper` "
                    "(default: `paper` and every `paper-<name>` profile of each paper).")
    ap.add_argument("--jobs", type=int, default=1, help="Runs (paper and profile) checked at once (default 1).")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: 1 on CPU with --jobs > 1).")
    ap.add_argument("--budget-s", type=float, default=3600.0,
                    help="Start no run after this many seconds and stop a running one then (default 3600).")
    ap.add_argument("--out", help="Report folder (default: $OUT, else ./paper_check).")
    ap.add_argument("--full-batch", action="store_true",
                    help="Keep the paper profile's batch sizes (on a GPU: does a training step fit in memory?).")
    ap.add_argument("--keep", action="store_true", help="Keep the scratch registry (its path is printed).")
    args = ap.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        print("error: --jobs and --threads must be at least 1", file=sys.stderr)
        return 2

    from registry.cli import find_root

    root = find_root()
    manifests, problems = mf.load_all(root)
    if problems:
        print("\n".join(map(str, problems)), file=sys.stderr)
        return 2
    implemented = sorted(k for k, m in manifests.items() if m.status == "implemented")
    papers = [p for p in (args.papers or "").split(",") if p] or implemented
    excluded = {p for p in args.exclude.split(",") if p}
    unknown = [p for p in papers + sorted(excluded) if p not in implemented]
    if unknown:
        print(f"error: not an implemented paper: {', '.join(unknown)}", file=sys.stderr)
        return 2
    papers = [p for p in papers if p not in excluded]
    sources = [s for s in (args.profiles or "").split(",") if s] or None
    if sources and not all(map(mf.is_paper_level, sources)):
        print("error: --profiles takes paper-level profiles (paper, paper-<name>)", file=sys.stderr)
        return 2
    missing = [s for s in sources or [] if not any(s in manifests[p].profiles for p in papers)]
    if missing:
        print(f"error: no paper checked has the profile(s) {', '.join(missing)}", file=sys.stderr)
        return 2

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.jobs > 1 and args.device == "cpu" else None)
    out_dir = Path(args.out or os.environ.get("OUT") or "paper_check").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="paper-check-"))
    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    try:
        checked = prepare(root, papers, scratch, args.full_batch, sources)
        units = [(paper, source) for paper in papers for source in checked[paper]]

        def job(unit: tuple[str, str]) -> dict[str, Any]:
            paper, source = unit
            left = deadline - time.perf_counter()
            if left <= 0:
                return {"paper": paper, "profile": source, "ok": False,
                        "problems": ["not run: the check's budget was spent"]}
            m = manifests[paper]
            wanted = mf.resolve(m, source).device
            device = args.device if wanted == "auto" else "cpu"
            print(f"[paper-check] {paper} {source} on {device} ...", flush=True)
            r = check_one(scratch, paper, device, threads, left, required_metrics(m, source), source)
            print(f"[paper-check] {paper} {source}: {'ok' if r['ok'] else 'FAILED'} in {r['wall_s']} s",
                  flush=True)
            return r

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(job, units))
    finally:
        if args.keep:
            print(f"scratch registry kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    header = {"device": args.device, "full_batch": args.full_batch, "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": time.perf_counter() - t0}
    log = "\n".join(f"===== {r['paper']} {r['profile']} (rc {r.get('rc')})\n{r.pop('log', '')}" for r in rows)
    (out_dir / "paper_check.log").write_text(log, encoding="utf-8")
    (out_dir / "paper_check.json").write_text(json.dumps({"header": header, "runs": rows}, indent=2) + "\n")
    report = render(rows, header)
    (out_dir / "paper_check.md").write_text(report, encoding="utf-8")
    print(report)
    return 0 if rows and all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
