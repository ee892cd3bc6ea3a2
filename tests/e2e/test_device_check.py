"""scripts/device_check.py, the prepared GPU check, exercised on CPU so that it cannot rot unnoticed: a run
against its own CPU reference must agree bit for bit (same threads), a paper that cannot run must make the
check fail, and the metric comparison must name the largest difference."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import ROOT, make_root

SCRIPT = ROOT / "scripts" / "device_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_check(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    root = make_root(tmp)
    out = tmp / "out"
    env = {**os.environ, "REGISTRY_ROOT": str(root)}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--threads", "1", "--out", str(out),
                           *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    return proc, out


@pytest.mark.slow
def test_cpu_run_matches_its_cpu_reference(tmp_path: Path) -> None:
    proc, out = run_check(tmp_path, "--papers", "position-coupling")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "device_check.json").read_text())
    (row,) = report["runs"]
    assert row["ok"] and row["device"] == "cpu" and row["rc"] == 0
    assert row["vs_cpu"]["compared"] > 10
    assert row["vs_cpu"]["max_abs"] == 0.0 and row["vs_cpu"]["same_verdict"]
    assert "position-coupling" in (out / "device_check.md").read_text()
    assert "CPU reference (rc 0)" in (out / "device_check.log").read_text()


@pytest.mark.slow
def test_a_run_that_fails_fails_the_check(tmp_path: Path) -> None:
    proc, out = run_check(tmp_path, "--papers", "no-such-paper", "--no-reference")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (row,) = json.loads((out / "device_check.json").read_text())["runs"]
    assert not row["ok"] and row["rc"] == 2 and "no-such-paper" in row["error"]


def test_compare_names_the_largest_difference() -> None:
    dc = load_script()
    run = {"per_seed": [{"seed": 0, "metrics": {"a": 1.0, "b": 0.5, "train_seconds": 9.0}}],
           "claims": {"c": "pass"}}
    ref = {"per_seed": [{"seed": 0, "metrics": {"a": 1.0, "b": 0.25, "train_seconds": 1.0}}],
           "claims": {"c": "fail"}}
    c = dc.compare(run, ref)
    assert c["compared"] == 2  # timings are not compared
    assert c["max_abs"] == 0.25 and c["max_abs_metric"] == "b[seed 0]" and c["max_rel"] == 1.0
    assert c["same_verdict"] is False


def test_gpu_papers_are_the_implemented_auto_device_ones() -> None:
    from registry import manifest as mf

    dc = load_script()
    papers = dc.gpu_papers(ROOT)
    manifests, _ = mf.load_all(ROOT, with_methods=False)
    assert papers and "position-coupling" in papers
    assert all(manifests[p].status == "implemented" and manifests[p].hardware.device == "auto" for p in papers)
    assert not any(manifests[p].hardware.device == "cpu" for p in papers)


def test_results_of_an_earlier_run_do_not_count(tmp_path: Path) -> None:
    """A run that breaks (here: CUDA asked for on a machine without it, exit 1 like a failing claim) must
    not be read as finished from results an earlier run left behind."""
    dc = load_script()
    root = make_root(tmp_path)
    rdir = root / "results" / "parity-cot-transformer" / "smoke"
    (rdir / "run").mkdir(parents=True)
    (rdir / "run" / "metrics.json").write_text(json.dumps(
        {"device": "cuda", "seconds": 1.0, "per_seed": [{"seed": 0, "metrics": {"a": 1.0}}]}))
    (rdir / "run" / "environment.json").write_text("{}")
    (rdir / "verification.json").write_text(json.dumps({"verdict": "fail", "claims": []}))
    for p in [rdir / "run" / "metrics.json", rdir / "run" / "environment.json", rdir / "verification.json"]:
        os.utime(p, (1e9, 1e9))
    if __import__("torch").cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    r = dc.run_one(root, "parity-cot-transformer", "smoke", "cuda", None, 120)
    assert r["rc"] == 1 and "error" in r and "no CUDA device" in r["error"]


@pytest.mark.slow
def test_a_run_past_the_budget_is_stopped_and_fails_the_check(tmp_path: Path) -> None:
    proc, out = run_check(tmp_path, "--papers", "parity-cot-transformer", "--profiles", "cpu,smoke",
                          "--budget-s", "8", "--no-reference")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cpu, smoke = json.loads((out / "device_check.json").read_text())["runs"]
    assert cpu["rc"] == "timeout" and not cpu["ok"] and "budget" in cpu["error"] and cpu["wall_s"] < 30
    assert smoke["rc"] == "skipped" and not smoke["ok"]
