"""End to end through the real CLI: smoke profiles of every implemented paper, MLflow logging and
re-logging, atomic results, verification exit codes, and a real `dvc repro` in a copy of the repo."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry import manifest as mf
from e2e_support import ROOT, make_root

BIN = Path(sys.executable).parent


def implemented() -> list[str]:
    manifests, problems = mf.load_all(ROOT, with_methods=False)
    assert not problems, "\n".join(map(str, problems))
    return sorted(k for k, m in manifests.items() if m.status == "implemented")


PAPERS = implemented()


def cli(root: Path, *args: str, uri: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "REGISTRY_ROOT": str(root), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if uri is not None:
        env["MLFLOW_TRACKING_URI"] = uri
    return subprocess.run([sys.executable, "-m", "registry.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


def mlflow_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id])


@pytest.mark.slow
@pytest.mark.parametrize("paper", PAPERS)
def test_smoke_profile_runs_logs_and_verifies(paper: str, tmp_path: Path) -> None:
    root = make_root(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli(root, "run", paper, "--profile", "smoke", "--quiet", uri=uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "verdict:" in proc.stdout

    rdir = root / "results" / paper / "smoke"
    for name in ("metrics.json", "curves.csv", "curves.png", "environment.json", "manifest.yaml"):
        assert (rdir / "run" / name).is_file(), name
    record = json.loads((rdir / "run" / "metrics.json").read_text())
    env = json.loads((rdir / "run" / "environment.json").read_text())
    assert env["device"] == "cpu" and env["torch"] and env["manifest_sha256"]
    assert record["per_seed"] and all(s["metrics"] for s in record["per_seed"])
    ver = json.loads((rdir / "verification.json").read_text())
    assert ver["verdict"] in ("pass", "no-claims"), ver
    assert (rdir / "verification.md").is_file()
    assert not list(rdir.parent.glob(".*tmp*")), "temporary files left behind"

    runs = mlflow_runs(uri, paper)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == len(record["seeds"])
    assert parents[0].data.tags["verdict"] == ver["verdict"]
    assert parents[0].data.params["profile"] == "smoke"
    assert parents[0].data.metrics  # seed-averaged final metrics
    curve_names = {line.split(",")[2] for line in (rdir / "run" / "curves.csv").read_text().splitlines()[1:]}
    assert curve_names <= set(children[0].data.metrics)


@pytest.mark.slow
def test_cpu_runs_are_deterministic(tmp_path: Path) -> None:
    paper = PAPERS[0]
    root = make_root(tmp_path)
    out = []
    for _ in range(2):
        proc = cli(root, "train", paper, "--profile", "smoke", "--quiet", "--no-track")
        assert proc.returncode == 0, proc.stderr
        out.append(json.loads((root / "results" / paper / "smoke" / "run" / "metrics.json").read_text()))
    def results(rec):  # wall-clock timings (metrics named *seconds) legitimately differ between runs
        return [{k: v for k, v in s["metrics"].items() if not k.endswith("seconds")} for s in rec["per_seed"]]

    assert results(out[0]) == results(out[1])
    assert out[0]["run_id"] == out[1]["run_id"]


@pytest.mark.slow
def test_tracking_outage_keeps_results_and_sync_relogs(tmp_path: Path) -> None:
    paper = PAPERS[0]
    root = make_root(tmp_path)
    (tmp_path / "a-file").write_text("not a directory")
    broken = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"  # the store cannot be created under a file
    proc = cli(root, "run", paper, "--profile", "smoke", "--quiet", uri=broken)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "registry sync" in proc.stderr and "Traceback" not in proc.stderr
    rdir = root / "results" / paper / "smoke"
    assert (rdir / "run" / "metrics.json").is_file() and (rdir / "verification.json").is_file()
    ledger = json.loads((rdir / "tracking.json").read_text())
    assert ledger.get("pending_error") and not ledger.get("logged")

    good = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli(root, "sync", uri=good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"synced {paper}@smoke" in proc.stdout
    runs = mlflow_runs(good, paper)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].data.tags["verdict"] != "unverified"
    assert cli(root, "sync", uri=good).stdout.strip() == "nothing to sync"


def _copy_repo(dst: Path) -> Path:
    skip = {".venv", "results", "reports", "mlflow.db", "mlartifacts", "mlruns", "dvc.lock", ".pytest_cache"}

    def ignore(d: str, names: list[str]) -> set[str]:
        out = {n for n in names if n in skip or n == "__pycache__" or n.endswith(".egg-info")}
        if Path(d).name == ".dvc":
            out |= {"cache", "tmp"}
        return out

    shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)
    return dst


@pytest.mark.slow
def test_dvc_repro_of_a_smoke_stage(tmp_path: Path) -> None:
    if shutil.which("dvc", path=str(BIN)) is None:
        pytest.fail("dvc is not installed in the test environment")
    repo = _copy_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text("profile: smoke\n")
    paper = PAPERS[0]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("REGISTRY_ROOT", None)

    def dvc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=900)

    proc = dvc("repro", f"verify@{paper}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo / "results" / paper / "smoke" / "run" / "metrics.json").is_file()
    assert (repo / "results" / paper / "smoke" / "verification.json").is_file()
    assert "verdict:" in proc.stdout
    lock = (repo / "dvc.lock").read_text()
    assert f"train@{paper}" in lock and f"manifests/{paper}.yaml" in lock
    assert "supplement" not in lock  # the supplementary stages are not upstream of a paper's own stages
    stages = dvc("stage", "list").stdout
    assert "verify-supplement@position-coupling--cpu-multisummand" in stages

    t0 = time.perf_counter()
    proc = dvc("repro", f"verify@{paper}")
    assert proc.returncode == 0, proc.stderr
    assert "didn't change" in proc.stdout
    assert time.perf_counter() - t0 < 20

    # Changing a value in the manifest (DVC tracks it whole, as params) makes the paper's stages stale;
    # a comment alone does not.
    m = repo / "manifests" / f"{paper}.yaml"
    m.write_text(m.read_text() + "\n# a comment\n")
    assert f"train@{paper}" not in dvc("status").stdout
    m.write_text(m.read_text() + "touched_by_test: 1\n")  # dvc status compares values only, it does not validate
    proc = dvc("status")
    assert f"train@{paper}" in proc.stdout
