"""MLflow logging (registry.tracking, `registry sync`) when things go wrong or the setup is unusual: the default
store's artifacts land in <root>/mlartifacts whatever the current directory; logging cut short (an error,
Ctrl-C, a kill) leaves no run RUNNING; sync gives experiments their paper title; a seed's final metrics are
not a spurious first curve point; a stale verification.json is never attached to a newer run.

Most tests log a hand-written run/ (no training) into a temporary store; one trains a smoke profile."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from registry import tracking
from registry.cli import cli
from e2e_support import ROOT, make_root

BIN = Path(sys.executable).parent
PAPER = "transformers-learn-icl-by-gd"  # a real manifest (its title is known); smoke trains in seconds


def fake_run(root: Path, paper: str, profile: str = "smoke", *, seeds=(0, 1), finished_at: str = "2026-01-01T00:00:00Z",
             run_id: str = "r" * 64, curves: bool = True, peaks: dict | None = None) -> Path:
    """A finished run/ as the runner writes it: seed s has curve `loss` at steps 0, 10, 20 (+ s) and final `loss`
    (and peak memory ``peaks[s]`` when given)."""
    rdir = root / "results" / paper / profile / "run"
    rdir.mkdir(parents=True, exist_ok=True)
    per_seed = [{"seed": s, "seconds": 1.0 + s, "metrics": {"loss": 0.125 + s, "acc": 0.5}} for s in seeds]
    for entry in per_seed if peaks else []:
        entry["peak_memory_mb"] = peaks[entry["seed"]]
    record = {"paper": paper, "profile": profile, "method": "fake", "run_id": run_id, "device": "cpu",
              "seeds": list(seeds), "per_seed": per_seed, "seconds": 3.0, "finished_at": finished_at,
              "config": {"data": {"n": 4}, "model": {"d": 8}, "train": {"steps": 20 + max(seeds)}}}
    (rdir / "metrics.json").write_text(json.dumps(record))
    rows = ["seed,step,metric,value"]
    if curves:
        for s in seeds:
            rows += [f"{s},0,loss,9.0", f"{s},10,loss,5.0", f"{s},{20 + s},loss,{0.125 + s}", f"{s},10,other,1.0"]
    (rdir / "curves.csv").write_text("\n".join(rows) + "\n")
    (rdir / "environment.json").write_text(json.dumps({"git_sha": None}))
    return rdir


def write_verification(root: Path, paper: str, profile: str = "smoke", *, run_finished_at: str | None = None,
                       digest: str = "d1") -> dict:
    result = {"verdict": "pass", "passed": 1, "total": 1, "claims": [{"id": "c1", "verdict": "pass"}],
              "run_id": "r" * 64, "digest": digest}
    if run_finished_at is not None:
        result["run_finished_at"] = run_finished_at
    (root / "results" / paper / profile / "verification.json").write_text(json.dumps(result))
    return result


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A temporary registry root with its default store (<root>/mlflow.db, <root>/mlartifacts); the environment
    and the current directory are restored afterwards."""
    root = make_root(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("REGISTRY_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    return root


def client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking.tracking_uri(root))


def runs(root: Path, paper: str):
    c = client(root)
    exp = c.get_experiment_by_name(paper)
    assert exp is not None, f"no experiment {paper}"
    rs = c.search_runs([exp.experiment_id])
    parents = [r for r in rs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in rs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def sync(root: Path):
    return CliRunner().invoke(cli, ["sync"])


# --- 1. default store: artifacts under <root>/mlartifacts, whatever the cwd; os.environ untouched -----------------

def test_default_store_in_process_keeps_environment_and_artifacts_under_root(tmp_path, monkeypatch):
    root = make_root(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(elsewhere)
    for paper in ("paper-a", "paper-b"):  # the second call once saw the URI the first had put in os.environ
        fake_run(root, paper)
        tracking.log_run(root, paper, "smoke")
        assert "MLFLOW_TRACKING_URI" not in os.environ
    c = client(root)
    for paper in ("paper-a", "paper-b"):
        exp = c.get_experiment_by_name(paper)
        assert exp.artifact_location == (root / "mlartifacts" / paper).resolve().as_uri()
        (parent,), _ = runs(root, paper)
        assert (root / "mlartifacts" / paper / parent.info.run_id / "artifacts" / "metrics.json").is_file()
    assert not (elsewhere / "mlruns").exists() and not (root / "mlruns").exists()


@pytest.mark.slow
def test_default_store_cli_smoke_run_from_another_directory(tmp_path):
    root = make_root(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "REGISTRY_ROOT": str(root), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "registry.cli", "run", PAPER, "--profile", "smoke", "--quiet"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"sqlite:///{(root / 'mlflow.db').resolve()}" in proc.stdout
    assert not (elsewhere / "mlruns").exists() and not (root / "mlruns").exists()
    assert (root / "mlflow.db").is_file()
    (parent,), children = runs(root, PAPER)
    art = root / "mlartifacts" / PAPER / parent.info.run_id / "artifacts"
    for name in ("metrics.json", "curves.csv", "verification.json"):
        assert (art / name).is_file(), name
    assert parent.data.tags["verdict"] in ("pass", "no-claims")
    assert client(root).get_experiment_by_name(PAPER).tags.get("paper.title")
    assert all(r.info.status == "FINISHED" for r in [parent, *children])


# --- 2./3. logging cut short: nothing left RUNNING --------------------------------------------------------------

def test_ctrl_c_while_logging_marks_parent_killed_and_relog_is_clean(store, monkeypatch):
    fake_run(store, "p")
    from mlflow.tracking import MlflowClient

    def interrupt(self, *a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "log_artifact", interrupt)
        with pytest.raises(KeyboardInterrupt):
            tracking.log_run(store, "p", "smoke")
    (parent,), children = runs(store, "p")
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert tracking.pending(store) == [("p", "smoke", False)]

    pid = tracking.log_run(store, "p", "smoke")
    parents, children = runs(store, "p")
    assert {p.info.run_id: p.info.status for p in parents} == {parent.info.run_id: "KILLED", pid: "FINISHED"}
    assert not [r for r in parents + children if r.info.status == "RUNNING"]
    assert tracking.pending(store) == []


def fail_log_batch(monkeypatch, *, call: int, exc: BaseException) -> None:
    """Make the call-th tracking.log_batch (1-based) raise exc; the others log as usual."""
    real = tracking.log_batch
    calls = []

    def flaky(client, run_id, **kw):
        calls.append(run_id)
        if len(calls) == call:
            raise exc
        return real(client, run_id, **kw)

    monkeypatch.setattr(tracking, "log_batch", flaky)


def test_ctrl_c_in_a_seed_marks_child_and_parent_killed(store, monkeypatch):
    fake_run(store, "p")
    fail_log_batch(monkeypatch, call=3, exc=KeyboardInterrupt())  # parent summary, seed 0, then seed 1
    with pytest.raises(KeyboardInterrupt):
        tracking.log_run(store, "p", "smoke")
    (parent,), children = runs(store, "p")
    assert parent.info.status == "KILLED"
    assert sorted((c.data.tags["seed"], c.info.status) for c in children) == [("0", "FINISHED"), ("1", "KILLED")]


def test_error_in_a_seed_marks_child_and_parent_failed(store, monkeypatch):
    fake_run(store, "p")
    fail_log_batch(monkeypatch, call=2, exc=RuntimeError("store went away"))  # seed 0's batch
    with pytest.raises(RuntimeError):
        tracking.log_run(store, "p", "smoke")
    (parent,), (child,) = runs(store, "p")
    assert (parent.info.status, child.info.status) == ("FAILED", "FAILED")


def test_run_left_running_by_a_killed_process_is_closed_by_the_next_log(store, monkeypatch):
    fake_run(store, "p")
    from mlflow.tracking import MlflowClient

    def die(self, *a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # as if SIGKILLed: no chance to mark anything
        m.setattr(MlflowClient, "log_artifact", die)
        m.setattr(tracking, "_terminate_quietly", lambda *a: None)
        with pytest.raises(KeyboardInterrupt):
            tracking.log_run(store, "p", "smoke")
    (orphan,), _ = runs(store, "p")
    assert orphan.info.status == "RUNNING"
    pid = tracking.log_run(store, "p", "smoke")
    parents, children = runs(store, "p")
    assert {p.info.run_id: p.info.status for p in parents} == {orphan.info.run_id: "KILLED", pid: "FINISHED"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert "incomplete_mlflow_run_id" not in tracking.read_ledger(store, "p", "smoke")


# --- 4. sync titles experiments; a missing or broken manifest does not stop it ---------------------------------

def test_sync_sets_paper_title_and_survives_missing_or_broken_manifests(store):
    import yaml

    title = yaml.safe_load((store / "manifests" / f"{PAPER}.yaml").read_text())["paper"]["title"]
    fake_run(store, PAPER)
    fake_run(store, "no-manifest")
    fake_run(store, "broken")
    (store / "manifests" / "broken.yaml").write_text("id: broken\npaper: [unclosed\n")
    r = sync(store)
    assert r.exit_code == 0, r.output
    for p in (PAPER, "no-manifest", "broken"):
        assert f"synced {p}@smoke" in r.output
    c = client(store)
    assert c.get_experiment_by_name(PAPER).tags.get("paper.title") == title
    assert "paper.title" not in c.get_experiment_by_name("no-manifest").tags
    assert "paper.title" not in c.get_experiment_by_name("broken").tags


def test_existing_untitled_experiment_gets_its_title(store):
    fake_run(store, "p")
    tracking.log_run(store, "p", "smoke")  # no title, as sync used to log
    fake_run(store, "p", profile="cpu")
    tracking.log_run(store, "p", "cpu", "A Title")
    assert client(store).get_experiment_by_name("p").tags.get("paper.title") == "A Title"


# --- 5. a seed's final metrics sit at the last step of its curves -----------------------------------------------

def test_seed_final_metrics_logged_at_last_curve_step(store):
    fake_run(store, "p", seeds=(0, 1))
    fake_run(store, "q", seeds=(0,), curves=False)
    tracking.log_run(store, "p", "smoke")
    tracking.log_run(store, "q", "smoke")
    c = client(store)
    _, children = runs(store, "p")
    for child in children:
        s = int(child.data.tags["seed"])
        hist = sorted((m.step, m.value) for m in c.get_metric_history(child.info.run_id, "loss"))
        assert hist[0] == (0, 9.0), "the curve's first point is its own, not the final metric"
        assert [h for h in hist if h[0] == 0] == [(0, 9.0)]
        assert max(h[0] for h in hist) == 20 + s
        assert child.data.metrics["loss"] == 0.125 + s  # the reported value is the final one
        assert [m.step for m in c.get_metric_history(child.info.run_id, "acc")] == [20 + s]
    (child,) = runs(store, "q")[1]
    assert [(m.step, m.value) for m in c.get_metric_history(child.info.run_id, "loss")] == [(0, 0.125)]


# --- 6. stale verifications ------------------------------------------------------------------------------------

def test_sync_skips_a_stale_verification_but_logs_the_run(store):
    fake_run(store, "p", finished_at="2026-02-02T00:00:00Z")  # a newer run than the verification judged
    write_verification(store, "p", run_finished_at="2026-01-01T00:00:00Z")
    assert tracking.pending(store) == [("p", "smoke", False)]
    assert tracking.stale_verifications(store) == [("p", "smoke")]
    r = sync(store)
    assert r.exit_code == 0, r.output
    assert "synced p@smoke" in r.output
    assert "stale verification, run `registry verify p --profile smoke`" in r.output
    (parent,), _ = runs(store, "p")
    assert parent.data.tags["verdict"] == "unverified" and "claims_passed" not in parent.data.metrics
    assert tracking.read_ledger(store, "p", "smoke")["verification_logged"] is None

    r = sync(store)  # the run is in; the stale verdict is still reported, never logged
    assert r.exit_code == 0 and "nothing to sync" in r.output
    assert "p@smoke: stale verification, run `registry verify p --profile smoke`" in r.output
    with pytest.raises(tracking.TrackingError):
        tracking.log_verification(store, "p", "smoke", json.loads(
            (store / "results" / "p" / "smoke" / "verification.json").read_text()))

    write_verification(store, "p", run_finished_at="2026-02-02T00:00:00Z", digest="d2")  # `registry verify` again
    assert tracking.pending(store) == [("p", "smoke", True)] and tracking.stale_verifications(store) == []
    r = sync(store)
    assert r.exit_code == 0 and "synced p@smoke" in r.output and "stale" not in r.output
    (parent,), _ = runs(store, "p")
    assert parent.data.tags["verdict"] == "pass"
    assert sync(store).output.strip() == "nothing to sync"


def test_verification_without_run_finished_at_is_logged_as_before(store):
    fake_run(store, "p")
    write_verification(store, "p")  # an older file: no run_finished_at
    assert tracking.pending(store) == [("p", "smoke", True)]
    r = sync(store)
    assert r.exit_code == 0 and "synced p@smoke" in r.output and "stale" not in r.output
    (parent,), _ = runs(store, "p")
    assert parent.data.tags["verdict"] == "pass"
    assert parent.data.metrics["claims_passed"] == 1.0 and "setup_checks_passed" not in parent.data.tags


def test_setup_checks_are_logged_apart_from_the_claims(store):
    fake_run(store, "p")
    result = write_verification(store, "p")
    result["setup_checks"] = {"passed": 0, "total": 1}
    result["verdict"] = "fail"
    result["claims"].append({"id": "s1", "kind": "setup", "verdict": "fail"})
    (store / "results" / "p" / "smoke" / "verification.json").write_text(json.dumps(result))
    r = sync(store)
    assert r.exit_code == 0 and "synced p@smoke" in r.output
    (parent,), _ = runs(store, "p")
    tags, metrics = parent.data.tags, parent.data.metrics
    assert (tags["verdict"], tags["claims_passed"], tags["setup_checks_passed"]) == ("fail", "1/1", "0/1")
    assert (metrics["claims_total"], metrics["setup_checks_passed"], metrics["setup_checks_total"]) == (1.0, 0.0, 1.0)
    assert tags["claim.s1"] == "fail"
    assert metrics["claims_within_noise"] == 0.0 and "claims_within_noise" not in tags


def test_verdicts_within_seed_noise_are_counted_and_named(store):
    fake_run(store, "p")
    result = write_verification(store, "p")
    result["claims"][0]["within_noise"] = True
    result["claims"].append({"id": "c2", "kind": "scaled", "verdict": "fail", "within_noise": True})
    result["claims"].append({"id": "c3", "kind": "scaled", "verdict": "pass", "within_noise": False})
    (store / "results" / "p" / "smoke" / "verification.json").write_text(json.dumps(result))
    assert sync(store).exit_code == 0
    (parent,), _ = runs(store, "p")
    assert parent.data.metrics["claims_within_noise"] == 2.0
    assert parent.data.tags["claims_within_noise"] == f"{result['claims'][0]['id']},c2"
    assert parent.data.tags["claim.c2"] == "fail" and parent.data.tags["claim.c3"] == "pass"  # verdicts as judged


# --- importing registry.tracking stays cheap -------------------------------------------------------------------

def test_importing_tracking_imports_neither_mlflow_nor_torch():
    code = "import sys, registry.tracking, registry.cli; print(sorted(m for m in ('mlflow', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- peak memory: the parent run has the largest of its seeds', each seed run its own --------------------------

def test_peak_memory_is_logged_when_recorded(store):
    fake_run(store, "p", seeds=(0, 1), peaks={0: 512.5, 1: 768.0})
    fake_run(store, "q", seeds=(0,))  # results of a version that did not record memory
    tracking.log_run(store, "p", "smoke")
    tracking.log_run(store, "q", "smoke")
    (parent,), children = runs(store, "p")
    assert parent.data.metrics["peak_memory_mb"] == 768.0
    assert {int(c.data.tags["seed"]): c.data.metrics["peak_memory_mb"] for c in children} == {0: 512.5, 1: 768.0}
    (parent,), (child,) = runs(store, "q")
    assert "peak_memory_mb" not in parent.data.metrics and "peak_memory_mb" not in child.data.metrics
