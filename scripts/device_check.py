#!/usr/bin/env python3
"""Check the CUDA path of every paper that trains on a GPU when one is present, in one short run.

For each implemented paper whose manifest says ``hardware.device: auto`` (or the papers named with
--papers), train the given profiles (default: smoke) through the real CLI on the requested device
(``registry run <id> --profile P --device cuda --no-track``), and, unless --no-reference, the same profile on
CPU in a scratch copy of the checkout, alongside the device runs. Then report per run: whether it finished,
on which device, its verdict, its wall time, and how far its final metrics are from the CPU run's (the data
and initial weights come from CPU generators, so a device bug shows up as a large difference, while float
rounding gives small ones). Writes DIR/device_check.md, DIR/device_check.json and DIR/device_check.log (every
run's output; DIR: --out, else $OUT, else ./device_check). Exit code 0 when every device run finished with
its results on the requested device, 1 otherwise, 2 on bad arguments.

On this workplace's GPU machine python3 already has torch, click, pyyaml, numpy, matplotlib and tqdm, but
not pydantic. Fetch it here once (wheels for that machine's Python 3.12, into the git-ignored .whl/):

    .venv/bin/python scripts/device_check.py --fetch-wheels

then run ``scripts/device_check.sh`` there with ``.whl`` carried (it installs the wheels when needed and
passes its arguments on). The smoke profiles of the nine GPU-capable papers take a few minutes in all.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# What the GPU machine lacks (see the module docstring); typing-extensions is there already.
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")


def fetch_wheels(dest: Path, python_version: str) -> int:
    """Download the installed versions of WHEELS for the GPU machine (x86-64 Linux, CPython)."""
    from importlib import metadata

    dest.mkdir(exist_ok=True)
    platforms = [f"manylinux_2_{n}_x86_64" for n in (28, 27, 17)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for p in platforms:
        cmd += ["--platform", p]
    cmd += [f"{name}=={metadata.version(name)}" for name in WHEELS]
    print(" ".join(cmd))
    return subprocess.call(cmd)


def gpu_papers(root: Path) -> list[str]:
    from registry import manifest as mf

    manifests, problems = mf.load_all(root, with_methods=False)
    if problems:
        raise SystemExit("\n".join(map(str, problems)))
    return sorted(k for k, m in manifests.items() if m.status == "implemented" and m.hardware.device == "auto")


def registry_cmd(paper: str, profile: str, device: str, threads: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "registry.cli", "run", paper, "--profile", profile, "--device", device,
           "--no-track", "--quiet"]
    return cmd + (["--threads", str(threads)] if threads else [])


def _tail(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-n:])[-400:] or "(no output)"


def run_registry(root: Path, cmd: list[str], timeout: float) -> tuple[int | str, str, float]:
    """Run a registry command in the registry ``root`` without MLflow tracking: its exit code ("timeout"
    when stopped at ``timeout`` seconds), its output and its wall time."""
    env = {**os.environ, "REGISTRY_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    # its own process group, so that a run stopped at the budget takes its worker processes with it
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=max(1.0, timeout))
        rc: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        rc = "timeout"
        text += f"\n(stopped at the check's budget after {time.perf_counter() - t0:.0f} s)"
    return rc, text, round(time.perf_counter() - t0, 1)


def run_one(root: Path, paper: str, profile: str, device: str, threads: int | None,
            timeout: float) -> dict[str, Any]:
    """One `registry run` in ``root``; its outcome, read back from the results it wrote (its output under
    "log")."""
    out: dict[str, Any] = {"paper": paper, "profile": profile, "device_requested": device}
    started = time.time() - 1.0  # results older than this are an earlier run's (file times are coarse)
    out["rc"], text, out["wall_s"] = run_registry(root, registry_cmd(paper, profile, device, threads), timeout)
    out["log"] = text
    rdir = root / "results" / paper / profile

    def fresh(path: Path) -> bool:
        return path.is_file() and path.stat().st_mtime >= started

    try:
        if not fresh(rdir / "run" / "metrics.json"):
            raise OSError("no results from this run")
        record = json.loads((rdir / "run" / "metrics.json").read_text())
        env_rec = json.loads((rdir / "run" / "environment.json").read_text())
    except (OSError, ValueError):
        out["error"] = _tail(text)
        return out
    out.update(device=record["device"], train_s=record["seconds"], device_name=env_rec.get("device_name"),
               torch=env_rec.get("torch"), per_seed=[{"seed": s["seed"], "metrics": s["metrics"]}
                                                      for s in record["per_seed"]])
    out["verdict"] = None
    if fresh(rdir / "verification.json"):
        try:
            ver = json.loads((rdir / "verification.json").read_text())
            out["verdict"] = ver["verdict"]
            out["claims"] = {c["id"]: c["verdict"] for c in ver.get("claims", [])}
        except (OSError, ValueError, KeyError):
            pass
    # exit 1 is a failing claim only when this run wrote a failing verdict; otherwise the run broke
    if not (out["rc"] == 0 or (out["rc"] == 1 and out["verdict"] == "fail")):
        out["error"] = _tail(text)
    return out


def compare(run: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Largest absolute and relative differences of the final metrics, seed by seed."""
    ref_seeds = {s["seed"]: s["metrics"] for s in ref.get("per_seed", [])}
    diffs = []
    for s in run.get("per_seed", []):
        base = ref_seeds.get(s["seed"], {})
        for name, v in s["metrics"].items():
            r = base.get(name)
            if name.endswith("seconds"):  # timings, not results
                continue
            if not isinstance(v, (int, float)) or not isinstance(r, (int, float)):
                continue
            if math.isnan(v) and math.isnan(r):
                continue
            d = abs(v - r)
            rel = d / max(abs(r), 1e-12) if d else 0.0
            diffs.append((d if not math.isnan(d) else math.inf, rel, f"{name}[seed {s['seed']}]", v, r))
    if not diffs:
        return {"compared": 0}
    worst_abs = max(diffs, key=lambda x: x[0])
    worst_rel = max(diffs, key=lambda x: (x[1] if x[0] > 1e-6 else 0.0))
    return {"compared": len(diffs), "max_abs": worst_abs[0], "max_abs_metric": worst_abs[2],
            "max_abs_values": [worst_abs[3], worst_abs[4]], "max_rel": worst_rel[1],
            "max_rel_metric": worst_rel[2], "max_rel_values": [worst_rel[3], worst_rel[4]],
            "same_verdict": run.get("claims") == ref.get("claims")}


def render(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [f"# Device check ({header['device']})", "",
             f"{header['when']} · torch {header['torch']} · {header['device_name']} · "
             f"{header['wall_s']:.0f} s in all", "",
             "| paper | profile | finished | device | verdict (CPU ref) | wall s | train s | "
             "max abs diff vs CPU | max rel diff (abs > 1e-6) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("vs_cpu", {})
        ref_verdict = r.get("ref_verdict")
        verdict = f"{r.get('verdict')}" + (f" ({ref_verdict})" if "ref_verdict" in r else "")
        abs_d = rel_d = "-"
        if c.get("compared"):
            abs_d = f"{c['max_abs']:.3g}" + (f" ({c['max_abs_metric']})" if c["max_abs"] else "")
            rel_d = f"{c['max_rel']:.3g}" + (f" ({c['max_rel_metric']})" if c["max_rel"] else "")
        done = "yes" if r.get("ok") else f"NO: {r.get('error') or r.get('rc')}"
        lines.append(f"| {r['paper']} | {r['profile']} | {done} | {r.get('device', '-')} | {verdict} | "
                     f"{r['wall_s']} | {r.get('train_s', '-')} | {abs_d} | {rel_d} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--papers", help="Comma-separated paper ids (default: every implemented paper with "
                                     "hardware.device: auto).")
    ap.add_argument("--profiles", default="smoke", help="Comma-separated profiles to run (default: smoke).")
    ap.add_argument("--out", help="Report folder (default: $OUT, else ./device_check).")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="Start no run after this many seconds and stop a running one then (default 480).")
    ap.add_argument("--threads", type=int, help="torch threads of every run (default: torch's choice for the "
                                                "device runs, 2 for the CPU references).")
    ap.add_argument("--ref-jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="CPU reference runs at once (default: half the cores).")
    ap.add_argument("--no-reference", action="store_true", help="Skip the CPU reference runs.")
    ap.add_argument("--fetch-wheels", action="store_true",
                    help="Download the wheels the GPU machine lacks into .whl/ and exit.")
    ap.add_argument("--python-version", default="3.12", help="Python of the GPU machine (for --fetch-wheels).")
    args = ap.parse_args(argv)

    if args.fetch_wheels:
        return fetch_wheels(REPO / ".whl", args.python_version)

    from registry.cli import find_root

    root = find_root()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    papers = [p for p in (args.papers or "").split(",") if p] or gpu_papers(root)
    profiles = [p for p in args.profiles.split(",") if p]
    out_dir = Path(args.out or os.environ.get("OUT") or "device_check").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    todo = [(p, prof) for prof in profiles for p in papers]

    refs: dict[tuple[str, str], Any] = {}
    pool = None
    scratch = None
    if not args.no_reference:
        scratch = Path(tempfile.mkdtemp(prefix="device-check-ref-"))
        ref_root = scratch / "reg"
        ref_root.mkdir()
        shutil.copy(root / "pyproject.toml", ref_root)
        shutil.copytree(root / "manifests", ref_root / "manifests")
        if (root / "methods").is_dir():
            shutil.copytree(root / "methods", ref_root / "methods",
                            ignore=shutil.ignore_patterns("__pycache__"))
        pool = ThreadPoolExecutor(max_workers=max(1, args.ref_jobs))

        def ref_job(paper: str, profile: str) -> dict[str, Any]:
            left = deadline - time.perf_counter()
            if left <= 0:
                return {"rc": "skipped"}
            return run_one(ref_root, paper, profile, "cpu", args.threads or 2, left)

        for key in todo:
            refs[key] = pool.submit(ref_job, *key)

    rows = []
    for paper, profile in todo:
        left = deadline - time.perf_counter()
        if left <= 0:
            rows.append({"paper": paper, "profile": profile, "rc": "skipped", "wall_s": 0.0,
                         "error": "budget spent", "ok": False})
            continue
        print(f"[device-check] {paper}@{profile} on {args.device} ...", flush=True)
        r = run_one(root, paper, profile, args.device, args.threads, left)
        r["ok"] = "error" not in r and r.get("device") == args.device
        print(f"[device-check] {paper}@{profile}: rc {r.get('rc')}, {r['wall_s']} s, verdict "
              f"{r.get('verdict')}", flush=True)
        rows.append(r)
    log_parts = []
    for r in rows:
        log_parts.append(f"===== {r['paper']}@{r['profile']} on {args.device} (rc {r.get('rc')})\n{r.pop('log', '')}")
    if pool is not None:
        for r in rows:
            ref = refs[(r["paper"], r["profile"])].result()
            log_parts.append(f"===== {r['paper']}@{r['profile']} CPU reference (rc {ref.get('rc')})\n"
                             f"{ref.get('log', '')}")
            r["ref_verdict"] = ref.get("verdict")
            r["ref_wall_s"] = ref.get("wall_s")
            if "per_seed" in ref and "per_seed" in r:
                r["vs_cpu"] = compare(r, ref)
        pool.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    header = {"device": args.device, "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": time.perf_counter() - t0}
    for r in rows:  # the per-seed metrics stay in the results folders; the report keeps the summary
        r.pop("per_seed", None)
    (out_dir / "device_check.log").write_text("\n".join(log_parts), encoding="utf-8")
    (out_dir / "device_check.json").write_text(json.dumps({"header": header, "runs": rows}, indent=2) + "\n")
    report = render(rows, header)
    (out_dir / "device_check.md").write_text(report)
    print(report)
    return 0 if rows and all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
