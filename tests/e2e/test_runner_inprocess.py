"""Runner behaviour that needs a controllable method: atomic results, crash handling, verify exit codes."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import Field

from registry import manifest as mf
from registry import runner
from registry.cli import cli
from registry.methods import MethodConfig, Strict, register


class _Data(Strict):
    value: float = 1.0
    crash_on_seed: int = Field(-1)
    slow_seconds: float = 0.0  # the other seeds sleep this long, then write a file
    split: bool = False  # declare two parts per seed: "a" returns score, "b" returns other
    clash: bool = False  # part "b" also returns score (an error)
    clash_curve: bool = False  # part "b" also logs part a's curve a_loss (an error)
    exit_on_seed: int = Field(-1)  # that seed's worker process dies at once (os._exit; only under jobs > 1)


class _Model(Strict):
    pass


class _Train(Strict):
    steps: int = 3


class _Config(MethodConfig):
    data: _Data = _Data()
    model: _Model = _Model()
    train: _Train = _Train()


def _fixture_parts(cfg: _Config) -> dict[str, float]:
    return {"a": 1.0, "b": 3.0} if cfg.data.split else {}


@register("runner-fixture", config=_Config, parts=_fixture_parts)
def _run(cfg: _Config, ctx) -> dict[str, float]:
    # a crash from outside the config (a lost machine, Ctrl-C): the rerun has the same config
    if os.environ.get("ZZ_ATTEMPT"):  # a file per attempt: a rerun must not carry an unfinished attempt's files
        ctx.write_json(f"attempt-{os.environ['ZZ_ATTEMPT']}" + (f"-{ctx.part}" if ctx.part else "") + ".json", {})
    if ctx.seed == int(os.environ.get("ZZ_CRASH_SEED", "-1")) and ctx.part in (None, "b"):
        if ctx.part == "b" and os.environ.get("ZZ_CRASH_AFTER_PART_A"):  # part a of this seed is kept first
            t0 = time.monotonic()
            while not (ctx.out_dir.parent / f"seed-{ctx.seed}.part-a.json").exists() and time.monotonic() - t0 < 60:
                time.sleep(0.05)
        raise RuntimeError("machine lost")
    if ctx.seed == cfg.data.exit_on_seed:
        os._exit(3)
    if cfg.data.split:
        out: dict[str, float] = {}
        if ctx.runs("a"):
            ctx.log(0, a_loss=float(ctx.seed))
            out["score"] = cfg.data.value + 0.01 * ctx.seed
        if ctx.runs("b"):
            ctx.log(0, b_loss=2.0 * ctx.seed)
            ctx.log(1, b_loss=1.0 * ctx.seed)
            out["other"] = 0.5 + ctx.seed
            if cfg.data.clash:
                out["score"] = -1.0
            if cfg.data.clash_curve:
                ctx.log(1, a_loss=0.0)
        return out
    for step in range(cfg.train.steps):
        ctx.log(step, loss=1.0 / (step + 1))
    if ctx.seed == cfg.data.crash_on_seed:
        raise RuntimeError("boom")
    if cfg.data.slow_seconds:
        time.sleep(cfg.data.slow_seconds)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        (ctx.out_dir / "done.txt").write_text("done")
    return {"score": cfg.data.value + 0.01 * ctx.seed, "other": 0.5}


MANIFEST = """\
id: zz-e2e
status: implemented
paper: {{title: Test, authors: [A], year: 2024, venue: test}}
method: runner-fixture
data: {{value: {value}}}
train: {{seeds: [0, 1, 2], steps: 3}}
profiles:
  smoke: {{description: s}}
  cpu: {{description: c}}
  paper: {{description: p}}
metrics:
  - {{name: score, description: s}}
  - {{name: other, description: o}}
claims:
  - id: score-high
    statement: score is at least 1
    source: Table 1
    kind: paper
    reported: {{value: 1.0}}
    metric: score
    compare: ">="
    tolerance: {{abs: 0.0, rationale: exact}}
    profiles: [cpu]
"""


@pytest.fixture()
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("REGISTRY_ROOT", str(tmp_path))
    return tmp_path


def write(root: Path, value: float) -> Path:
    p = root / "manifests" / "zz-e2e.yaml"
    p.write_text(MANIFEST.format(value=value))
    return p


def test_crash_leaves_previous_results_untouched(root: Path) -> None:
    path = write(root, 1.0)
    m = mf.load(path)
    first = runner.train(root, m, path, "cpu", show_progress=False, echo=lambda s: None)
    before = (first.run_dir / "metrics.json").read_text()

    p2 = root / "manifests" / "zz-e2e.yaml"
    p2.write_text(p2.read_text().replace("data: {value: 1.0}", "data: {value: 1.0, crash_on_seed: 1}"))
    m2 = mf.load(p2)
    with pytest.raises(runner.RunError, match="seed 1.*boom"):
        runner.train(root, m2, p2, "cpu", show_progress=False, echo=lambda s: None)
    assert (first.run_dir / "metrics.json").read_text() == before
    leftovers = [p for p in first.run_dir.parent.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    # only the finished seed 0, kept for a rerun of the same config; nothing half-written
    assert [p.name.split("-")[0] for p in leftovers] == [".partial"]
    assert sorted(f.name for f in leftovers[0].iterdir()) == ["seed-0.json"]


def test_unfinished_output_of_a_killed_run_is_removed_but_a_live_ones_is_kept(root: Path) -> None:
    """A run killed with SIGKILL leaves results/<id>/<profile>/.run.tmp-<pid>; the next run removes it once that
    process is gone, and leaves a live process's folder (a concurrent run) and a finished one alone."""
    import os
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parent = root / "results" / "zz-e2e" / "cpu"
        for pid in (dead.pid, live.pid):
            (parent / f".run.tmp-{pid}" / "seed-0").mkdir(parents=True)
        (parent / ".run.tmp-notapid").mkdir()
        dead2 = subprocess.Popen([sys.executable, "-c", "pass"])
        dead2.wait()
        finished = parent / f".run.tmp-{dead2.pid}"  # killed between writing its results and moving them
        finished.mkdir()
        (finished / "metrics.json").write_text("{}")
        path = write(root, 1.0)
        said: list[str] = []
        runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=said.append)
        left = sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.name != ".lock")
        assert left == sorted([f".run.tmp-{live.pid}", ".run.tmp-notapid", finished.name])
        assert any(f".run.tmp-{dead.pid}" in s and "process is gone" in s for s in said)
        assert any(f"kept {finished}" in s and "finished run" in s for s in said)
        assert not (parent / f".run.tmp-{os.getpid()}").exists()
    finally:
        live.kill()
        live.wait()


def test_paper_profile_on_cpu_warns_unless_the_manifest_targets_a_cpu(root: Path) -> None:
    path = write(root, 1.0)
    said: list[str] = []
    runner.train(root, mf.load(path), path, "paper", device="cpu", show_progress=False, echo=said.append)
    assert any("meant for a GPU" in s for s in said)
    path.write_text(path.read_text().replace("profiles:\n", "hardware: {device: cpu}\nprofiles:\n"))
    said.clear()
    runner.train(root, mf.load(path), path, "paper", show_progress=False, echo=said.append)
    assert not any("meant for a GPU" in s for s in said)


def test_supplementary_paper_profiles_on_cpu_warn_but_their_derived_checks_do_not(root: Path) -> None:
    extra = ("  paper-wide: {description: w}\n  paper-wide-check: {description: wc}\n"
             "  paperlike: {description: l}\n")
    path = write(root, 1.0)
    path.write_text(path.read_text().replace("  paper: {description: p}\n", "  paper: {description: p}\n" + extra)
                    .replace("profiles:\n", "hardware: {estimated_minutes: {paper-wide: 90}}\nprofiles:\n", 1))
    warned = {}
    for name in ("paper-wide", "paper-wide-check", "paperlike", "cpu"):
        said: list[str] = []
        runner.train(root, mf.load(path), path, name, device="cpu", show_progress=False, echo=said.append)
        warned[name] = [s for s in said if "meant for a GPU" in s]
    assert warned["paper-wide"] and "'paper-wide'" in warned["paper-wide"][0] and "~90 min" in warned["paper-wide"][0]
    assert not warned["paper-wide-check"] and not warned["paperlike"] and not warned["cpu"]


def test_run_writes_identity_and_curves(root: Path) -> None:
    path = write(root, 1.0)
    out = runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None)
    rec = json.loads((out.run_dir / "metrics.json").read_text())
    assert [s["seed"] for s in rec["per_seed"]] == [0, 1, 2]
    assert len(runner.read_curves_csv(out.run_dir / "curves.csv")) == 9
    assert rec["run_id"] == out.record["run_id"] and len(rec["run_id"]) == 64
    # identity depends on the config, not on the time of the run
    path.write_text(path.read_text().replace("value: 1.0", "value: 2.0"))
    out2 = runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None)
    assert out2.record["run_id"] != rec["run_id"]


@pytest.mark.parametrize("value,code,verdict", [(1.0, 0, "PASS"), (0.5, 1, "FAIL")])
def test_verify_exit_code_follows_claims(root: Path, value: float, code: int, verdict: str) -> None:
    write(root, value)
    runner_ = CliRunner()
    res = runner_.invoke(cli, ["run", "zz-e2e", "--profile", "cpu", "--no-track", "-q"])
    assert res.exit_code == code, res.output
    assert f"verdict: {verdict}" in res.output
    ver = json.loads((root / "results" / "zz-e2e" / "cpu" / "verification.json").read_text())
    assert ver["claims"][0]["verdict"] == verdict.lower()
    # smoke has no claims: a run there verifies nothing and succeeds
    res = runner_.invoke(cli, ["run", "zz-e2e", "--profile", "smoke", "--no-track", "-q"])
    assert res.exit_code == 0 and "no claims are checked" in res.output


def test_verify_exit_zero_records_a_failing_claim(root: Path) -> None:
    """The DVC stage's flag: a failing claim is written and exits 0; a missing run is still an error."""
    write(root, 0.5)
    runner_ = CliRunner()
    res = runner_.invoke(cli, ["verify", "zz-e2e", "--profile", "cpu", "--no-track", "--exit-zero"])
    assert res.exit_code == 1 and "registry train zz-e2e" in res.output  # nothing trained yet
    assert runner_.invoke(cli, ["train", "zz-e2e", "--profile", "cpu", "--no-track", "-q"]).exit_code == 0
    res = runner_.invoke(cli, ["verify", "zz-e2e", "--profile", "cpu", "--no-track", "--exit-zero"])
    assert res.exit_code == 0 and "verdict: FAIL" in res.output, res.output
    ver = json.loads((root / "results" / "zz-e2e" / "cpu" / "verification.json").read_text())
    assert ver["verdict"] == "fail"


def test_verify_refuses_results_trained_with_another_config(root: Path) -> None:
    """Editing a training setting after the run (and not training again) would judge the old numbers as the
    new setup's: verify says which fields changed and writes nothing. Claims may change freely."""
    path = write(root, 1.0)
    runner_ = CliRunner()
    assert runner_.invoke(cli, ["train", "zz-e2e", "--profile", "cpu", "--no-track", "-q"]).exit_code == 0
    path.write_text(path.read_text().replace("steps: 3}", "steps: 4}").replace("rationale: exact}", "rationale: exactly}"))
    res = runner_.invoke(cli, ["verify", "zz-e2e", "--profile", "cpu", "--no-track", "--exit-zero"])
    assert res.exit_code == 1 and "train.steps changed since" in res.output and "registry train zz-e2e" in res.output
    assert not (root / "results" / "zz-e2e" / "cpu" / "verification.json").exists()
    path.write_text(path.read_text().replace("steps: 4}", "steps: 3}"))  # only the claim's rationale differs now
    res = runner_.invoke(cli, ["verify", "zz-e2e", "--profile", "cpu", "--no-track"])
    assert res.exit_code == 0 and "verdict: PASS" in res.output, res.output
    assert "judged on the seeds" not in res.output and "seeds_note" not in json.loads(
        (root / "results" / "zz-e2e" / "cpu" / "verification.json").read_text())


def test_verify_of_a_run_of_some_seeds_says_so(root: Path) -> None:
    write(root, 1.0)
    runner_ = CliRunner()
    res = runner_.invoke(cli, ["run", "zz-e2e", "--profile", "cpu", "--seeds", "2", "--no-track", "-q"])
    note = "judged on the seeds the run trained, [2]; the profile lists [0, 1, 2]"
    assert res.exit_code == 0 and f"note: {note}" in res.output, res.output
    rdir = root / "results" / "zz-e2e" / "cpu"
    assert json.loads((rdir / "verification.json").read_text())["seeds_note"] == note
    assert note in (rdir / "verification.md").read_text()


def test_verify_without_results_is_a_clear_error(root: Path) -> None:
    write(root, 1.0)
    res = CliRunner().invoke(cli, ["verify", "zz-e2e", "--profile", "cpu", "--no-track"])
    assert res.exit_code == 1 and "registry train zz-e2e" in res.output


def test_unknown_paper_and_profile(root: Path) -> None:
    write(root, 1.0)
    res = CliRunner().invoke(cli, ["run", "zz-e2f", "--profile", "cpu"])
    assert res.exit_code == 2 and "Did you mean 'zz-e2e'" in res.output
    res = CliRunner().invoke(cli, ["run", "zz-e2e", "--profile", "gpu"])
    assert res.exit_code == 2 and "no profile 'gpu'" in res.output


@pytest.mark.parametrize("split, jobs", [(False, 2), (True, 4)])
def test_jobs_run_seeds_and_parts_in_processes_like_a_sequential_run(root: Path, split: bool, jobs: int) -> None:
    """Seeds (and, with ``split``, two declared parts per seed) in worker processes: the metrics and
    curves of a one-thread sequential run, seed by seed and parts in their declared order."""
    path = write(root, 1.0)
    if split:
        path.write_text(path.read_text().replace("data: {value: 1.0}", "data: {value: 1.0, split: true}"))
    seq = runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lambda s: None)
    seq_rec = json.loads((seq.run_dir / "metrics.json").read_text())
    seq_curves = runner.read_curves_csv(seq.run_dir / "curves.csv")
    lines: list[str] = []
    par = runner.train(root, mf.load(path), path, "cpu", jobs=jobs, show_progress=False, echo=lines.append)
    rec = json.loads((par.run_dir / "metrics.json").read_text())
    assert [s["seed"] for s in rec["per_seed"]] == [0, 1, 2]
    assert [s["metrics"] for s in rec["per_seed"]] == [s["metrics"] for s in seq_rec["per_seed"]]
    assert list(rec["per_seed"][0]["metrics"]) == ["score", "other"]
    assert runner.read_curves_csv(par.run_dir / "curves.csv") == seq_curves
    if split:  # every part's curves, not only the first part's
        assert seq_curves == [c for s in (0, 1, 2) for c in ((s, 0, "a_loss", s), (s, 0, "b_loss", 2 * s),
                                                               (s, 1, "b_loss", s))]
    env = json.loads((par.run_dir / "environment.json").read_text())
    assert env["jobs"] == jobs and env["torch_threads"] == 1
    # what decides the reduction order besides the thread count: the CPU and the kernels torch picked for it
    assert env["cpu_model"] and env["cpu_model"] == env["device_name"]
    assert env["torch_cpu_capability"] in ("DEFAULT", "NO AVX", "AVX2", "AVX512", "Z VECTOR", "VSX", "SVE256")
    assert any(f"{jobs} processes x 1 thread" in line for line in lines)
    assert any("x parts a, b" in line for line in lines) == split
    assert sum("part" in line and "done" in line for line in lines) == (6 if split else 0)  # 3 seeds x 2 parts


def test_jobs_crash_names_the_seed_and_keeps_previous_results(root: Path) -> None:
    path = write(root, 1.0)
    first = runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None)
    before = (first.run_dir / "metrics.json").read_text()
    # seed 1 crashes at once; seed 0 sleeps 1.5 s, then writes a file (it may still be running when seed 1
    # fails, or, if its worker started first, have finished: then it is kept whole)
    path.write_text(path.read_text().replace("data: {value: 1.0}",
                                             "data: {value: 1.0, crash_on_seed: 1, slow_seconds: 1.5}"))
    with pytest.raises(runner.RunError, match="seed 1.*boom"):
        runner.train(root, mf.load(path), path, "cpu", seeds=[0, 1], jobs=2, show_progress=False,
                     echo=lambda s: None)
    leftovers = [p for p in first.run_dir.parent.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert [p.name.split("-")[0] for p in leftovers] == [".partial"]  # no .run.tmp
    partial = leftovers[0]
    at_failure = sorted(str(p.relative_to(partial)) for p in partial.rglob("*"))
    time.sleep(2.5)  # a surviving worker would have written its file by now
    assert sorted(str(p.relative_to(partial)) for p in partial.rglob("*")) == at_failure  # no writes after
    assert (first.run_dir / "metrics.json").read_text() == before
    kept = sorted(f.name for f in partial.glob("seed-*.json"))
    assert kept in ([], ["seed-0.json"])
    assert not kept or (partial / "seed-0" / "done.txt").is_file()  # a kept seed is whole


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("clash, message", [("clash", "returned metric 'score' from two parts"),
                                            ("clash_curve", "logged curve 'a_loss' from two parts")])
def test_parts_returning_the_same_metric_or_curve_are_an_error(root: Path, jobs: int, clash: str,
                                                               message: str) -> None:
    path = write(root, 1.0)
    data = f"data: {{value: 1.0, split: true, {clash}: true}}"
    path.write_text(path.read_text().replace("data: {value: 1.0}", data))
    with pytest.raises(runner.RunError, match=message):
        runner.train(root, mf.load(path), path, "cpu", seeds=[0], jobs=jobs, threads=1, show_progress=False,
                     echo=lambda s: None)
    # no run/ and nothing half-written: only the two finished parts, kept for a rerun
    assert [p.name.split("-")[0] for p in (root / "results" / "zz-e2e" / "cpu").iterdir()
            if p.name != ".lock"] == [".partial"]


def test_profile_jobs_are_the_default_and_the_option_overrides_them(root: Path) -> None:
    path = write(root, 1.0)
    path.write_text(path.read_text().replace("cpu: {description: c}", "cpu: {description: c, jobs: 2}"))
    lines: list[str] = []
    out = runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lines.append)
    assert json.loads((out.run_dir / "environment.json").read_text())["jobs"] == 2
    assert any("2 processes x 1 thread" in line for line in lines)
    out = runner.train(root, mf.load(path), path, "cpu", jobs=1, show_progress=False, echo=lambda s: None)
    assert json.loads((out.run_dir / "environment.json").read_text())["jobs"] == 1
    res = CliRunner().invoke(cli, ["show", "zz-e2e"])
    assert res.exit_code == 0 and "2 CPU jobs" in res.output


def test_jobs_equal_a_single_thread_run_for_a_torch_method(tmp_path: Path) -> None:
    """A real method (rasp-l smoke, two seeds): 2 worker processes give the same numbers as
    one thread in one process (timing metrics aside)."""
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "manifests").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "manifests" / "rasp-l-length-generalization.yaml"
    path.write_text((repo / "manifests" / "rasp-l-length-generalization.yaml").read_text())
    m = mf.load(path)
    kw = dict(seeds=[0, 1], show_progress=False, echo=lambda s: None)
    seq = runner.train(tmp_path, m, path, "smoke", threads=1, **kw).record
    par = runner.train(tmp_path, m, path, "smoke", jobs=2, **kw).record

    def numbers(rec: dict) -> list[dict]:
        return [{k: v for k, v in s["metrics"].items() if not k.endswith("_seconds")} for s in rec["per_seed"]]

    assert numbers(par) == numbers(seq)
    assert len(numbers(par)[0]) > 10


@pytest.mark.parametrize("paper, parts", [
    ("icl-what-learning-algorithm", "main, noisy, shallow"),
    ("position-coupling", "coupled, absolute, nope, random_offset"),
])
def test_jobs_split_declared_parts_of_real_methods_with_the_same_numbers(tmp_path: Path, paper: str,
                                                                         parts: str) -> None:
    """Methods that declare parts (icl-what's three models, position-coupling's schemes): one seed
    spread over 3 processes gives the numbers and curves of one thread in one process."""
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "manifests").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "manifests" / f"{paper}.yaml"
    path.write_text((repo / "manifests" / f"{paper}.yaml").read_text())
    m = mf.load(path)
    lines: list[str] = []
    kw = dict(seeds=[0], show_progress=False)
    seq = runner.train(tmp_path, m, path, "smoke", threads=1, echo=lambda s: None, **kw)
    seq_curves = runner.read_curves_csv(seq.run_dir / "curves.csv")
    par = runner.train(tmp_path, m, path, "smoke", jobs=3, echo=lines.append, **kw)

    def numbers(rec: dict) -> dict:
        return {k: v for k, v in rec["per_seed"][0]["metrics"].items() if not k.endswith("_seconds")}

    assert any(f"x parts {parts}" in line for line in lines)
    assert numbers(par.record) == numbers(seq.record)
    assert len(numbers(par.record)) > 15
    assert runner.read_curves_csv(par.run_dir / "curves.csv") == seq_curves


def _crash_at_seed_2(root: Path, path: Path, monkeypatch: pytest.MonkeyPatch, **kw) -> None:
    """A run of ``path`` that trains seeds 0 and 1 and then loses its machine at seed 2 (seeds 0, 1 are kept)."""
    monkeypatch.setenv("ZZ_CRASH_SEED", "2")
    with pytest.raises(runner.RunError, match="seed 2.*machine lost"):
        runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None, **kw)
    monkeypatch.delenv("ZZ_CRASH_SEED")


def _done_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " done in " in line]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_broken_off_run_keeps_its_finished_seeds_and_the_rerun_trains_only_the_rest(
        root: Path, jobs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(root, 1.0)
    path.write_text(path.read_text().replace("data: {value: 1.0}", "data: {value: 1.0, slow_seconds: 0.01}"))
    whole = runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lambda s: None)
    want = json.loads((whole.run_dir / "metrics.json").read_text())
    want_curves = runner.read_curves_csv(whole.run_dir / "curves.csv")
    assert not list(whole.run_dir.parent.glob(".partial-*"))  # removed once run/ is written

    _crash_at_seed_2(root, path, monkeypatch, threads=1, jobs=jobs)
    (partial,) = whole.run_dir.parent.glob(".partial-*")
    kept = sorted(f.name for f in partial.glob("seed-*.json"))
    assert "seed-2.json" not in kept and (jobs == 2 or kept == ["seed-0.json", "seed-1.json"])

    lines: list[str] = []
    out = runner.train(root, mf.load(path), path, "cpu", threads=1, jobs=jobs, show_progress=False,
                       echo=lines.append)
    rec = json.loads((out.run_dir / "metrics.json").read_text())
    assert len(_done_lines(lines)) == 3 - len(kept)  # only the missing seeds were trained
    assert rec["reused_seeds"] == [int(k.split("-")[1].split(".")[0]) for k in kept]
    assert (len(kept) > 0) == any("reusing seed(s)" in line for line in lines)
    assert [s["metrics"] for s in rec["per_seed"]] == [s["metrics"] for s in want["per_seed"]]
    assert runner.read_curves_csv(out.run_dir / "curves.csv") == want_curves
    assert all((out.run_dir / f"seed-{s}" / "done.txt").is_file() for s in (0, 1, 2))  # kept seeds' files too
    assert not partial.exists()


def test_kept_seeds_are_not_reused_for_another_config_or_with_fresh(root: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(root, 1.0)
    _crash_at_seed_2(root, path, monkeypatch)
    lines: list[str] = []
    runner.train(root, mf.load(path), path, "cpu", fresh=True, show_progress=False, echo=lines.append)
    assert len(_done_lines(lines)) == 3 and not any("reusing" in line for line in lines)

    _crash_at_seed_2(root, path, monkeypatch)
    path2 = write(root, 2.0)  # another config: the seeds kept for value 1.0 do not apply
    lines = []
    rec = runner.train(root, mf.load(path2), path2, "cpu", show_progress=False, echo=lines.append).record
    assert len(_done_lines(lines)) == 3 and "reused_seeds" not in rec
    assert rec["per_seed"][0]["metrics"]["score"] == 2.0


def test_declared_parts_resume_part_by_part(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(root, 1.0)
    path.write_text(path.read_text().replace("data: {value: 1.0}", "data: {value: 1.0, split: true}"))
    want = runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lambda s: None)
    monkeypatch.setenv("ZZ_CRASH_SEED", "1")  # part b of seed 1 breaks
    with pytest.raises(runner.RunError, match="seed 1.*part 'b'.*machine lost"):
        runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    (partial,) = want.run_dir.parent.glob(".partial-*")
    kept = sorted(f.name for f in partial.glob("seed-*.json"))
    assert "seed-1.part-b.json" not in kept and all(".part-" in k for k in kept)
    monkeypatch.delenv("ZZ_CRASH_SEED")
    lines: list[str] = []
    out = runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lines.append)
    assert len(_done_lines(lines)) == 6 - len(kept)  # 3 seeds x 2 parts, less the kept ones
    assert out.record["per_seed"] == [{**s, "seconds": s2["seconds"], "peak_memory_mb": s2["peak_memory_mb"]}
                                      for s, s2 in zip(want.record["per_seed"], out.record["per_seed"])]
    assert all(s["peak_memory_mb"] > 0 for s in out.record["per_seed"])
    assert runner.read_curves_csv(out.run_dir / "curves.csv") == runner.read_curves_csv(want.run_dir / "curves.csv")
    reported = [(p["seed"], p["part"]) for p in out.record.get("reused_parts", [])]
    reported += [(seed, part) for seed in out.record.get("reused_seeds", []) for part in "ab"]
    assert sorted(reported) == sorted((int(k.split("-")[1].split(".")[0]), k.split("part-")[1][0]) for k in kept)
    assert any("reusing seed(s)" in line for line in lines) == bool(kept)


# --------------------------------------------------------------------------- robustness of runs and resumes


def _with_data(path: Path, extra: str) -> None:
    path.write_text(path.read_text().replace("data: {value: 1.0}", "data: {value: 1.0, " + extra + "}"))


def test_a_worker_process_that_dies_fails_the_run_instead_of_hanging(root: Path) -> None:
    import signal

    path = write(root, 1.0)
    _with_data(path, "exit_on_seed: 1, slow_seconds: 0.5")

    def hung(*_):
        raise AssertionError("the run hangs after a worker process died")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        with pytest.raises(runner.RunError, match="worker process died"):
            runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not (root / "results" / "zz-e2e" / "cpu" / "run").exists()


def test_kept_seeds_of_another_thread_count_are_trained_again(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(root, 1.0)
    _crash_at_seed_2(root, path, monkeypatch, threads=1)
    lines: list[str] = []
    rec = runner.train(root, mf.load(path), path, "cpu", threads=2, show_progress=False, echo=lines.append).record
    assert len(_done_lines(lines)) == 3 and "reused_seeds" not in rec and rec["threads"] == 2
    assert any("not reusing seed(s) 0, 1" in line and "thread count" in line for line in lines)
    _crash_at_seed_2(root, path, monkeypatch, threads=1)
    rec = runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None).record
    assert rec["reused_seeds"] == [0, 1] and rec["threads"] == 1  # jobs run one thread per process


def test_one_seed_of_a_jobs_profile_uses_the_profiles_one_thread(root: Path) -> None:
    import torch

    path = write(root, 1.0)
    path.write_text(path.read_text().replace("cpu: {description: c}", "cpu: {description: c, jobs: 2}"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rec = runner.train(root, mf.load(path), path, "cpu", seeds=[0], show_progress=False,
                           echo=lambda s: None).record
    finally:
        torch.set_num_threads(before)
    assert rec["threads"] == 1


def test_a_run_of_some_seeds_keeps_the_other_kept_seeds(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(root, 1.0)
    _crash_at_seed_2(root, path, monkeypatch, threads=1)
    runner.train(root, mf.load(path), path, "cpu", threads=1, seeds=[2], show_progress=False, echo=lambda s: None)
    (partial,) = (root / "results" / "zz-e2e" / "cpu").glob(".partial-*")
    assert sorted(f.name for f in partial.glob("seed-*.json")) == ["seed-0.json", "seed-1.json"]
    lines: list[str] = []
    rec = runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lines.append).record
    assert rec["reused_seeds"] == [0, 1] and len(_done_lines(lines)) == 1 and not partial.exists()


def test_a_resumed_jobs_run_drops_the_files_of_an_unfinished_attempt(root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(root, 1.0)
    monkeypatch.setenv("ZZ_ATTEMPT", "1")
    monkeypatch.setenv("ZZ_CRASH_SEED", "1")
    with pytest.raises(runner.RunError):
        runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    monkeypatch.setenv("ZZ_ATTEMPT", "2")
    monkeypatch.delenv("ZZ_CRASH_SEED")
    out = runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    assert sorted(f.name for f in (out.run_dir / "seed-1").iterdir()) == ["attempt-2.json"]


def _split(path: Path) -> Path:
    path.write_text(path.read_text().replace("data: {value: 1.0}", "data: {value: 1.0, split: true}"))
    return path


def _attempt(monkeypatch: pytest.MonkeyPatch, n: int, crash_seed: int | None) -> None:
    monkeypatch.setenv("ZZ_ATTEMPT", str(n))
    monkeypatch.setenv("ZZ_CRASH_AFTER_PART_A", "1")
    if crash_seed is None:
        monkeypatch.delenv("ZZ_CRASH_SEED", raising=False)
    else:
        monkeypatch.setenv("ZZ_CRASH_SEED", str(crash_seed))


def test_a_kept_part_keeps_its_files_and_an_unfinished_parts_files_go(root: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = _split(write(root, 1.0))
    _attempt(monkeypatch, 1, crash_seed=1)  # part b of seed 1 breaks; part a of seed 1 is kept
    with pytest.raises(runner.RunError, match="seed 1.*part 'b'.*machine lost"):
        runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    _attempt(monkeypatch, 3, crash_seed=None)
    out = runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    assert {"seed": 1, "part": "a"} in out.record["reused_parts"]
    assert sorted(f.name for f in (out.run_dir / "seed-1").iterdir()) == ["attempt-1-a.json", "attempt-3-b.json"]


def test_a_sequential_attempt_between_two_jobs_runs_keeps_each_part_with_its_own_files(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _split(write(root, 1.0))
    want = runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lambda s: None)
    _attempt(monkeypatch, 1, crash_seed=1)  # --jobs 2: seed 1 keeps part a only
    with pytest.raises(runner.RunError):
        runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    _attempt(monkeypatch, 2, crash_seed=1)  # --jobs 1: reuses seed 1's part a, breaks again in part b
    lines: list[str] = []
    with pytest.raises(runner.RunError, match="seed 1.*part 'b'.*machine lost"):
        runner.train(root, mf.load(path), path, "cpu", jobs=1, threads=1, show_progress=False, echo=lines.append)
    assert not any("seed 1 part a on" in line for line in lines), lines
    _attempt(monkeypatch, 3, crash_seed=None)
    out = runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    assert {"seed": 1, "part": "a"} in out.record["reused_parts"]
    assert sorted(f.name for f in (out.run_dir / "seed-1").iterdir()) == ["attempt-1-a.json", "attempt-3-b.json"]
    timing = ("seconds", "peak_memory_mb")
    assert [{k: v for k, v in s.items() if k not in timing} for s in out.record["per_seed"]] == \
        [{k: v for k, v in s.items() if k not in timing} for s in want.record["per_seed"]]


def test_a_sequential_run_keeps_each_finished_part_and_the_rerun_trains_only_the_rest(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --jobs a method that declares parts is still trained part by part: a run that breaks off in
    seed 1's part b keeps seed 0 and seed 1's part a (with its files), and the rerun trains part b of seed 1
    and seed 2 only, with the numbers and curves of an uninterrupted run."""
    path = _split(write(root, 1.0))
    monkeypatch.setenv("ZZ_ATTEMPT", "0")
    want = runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lambda s: None)
    want_curves = runner.read_curves_csv(want.run_dir / "curves.csv")
    _attempt(monkeypatch, 1, crash_seed=1)
    with pytest.raises(runner.RunError, match="seed 1.*part 'b'.*machine lost"):
        runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lambda s: None)
    (partial,) = want.run_dir.parent.glob(".partial-*")
    assert sorted(f.name for f in partial.glob("seed-*.json")) == [
        "seed-0.part-a.json", "seed-0.part-b.json", "seed-1.part-a.json"]
    assert sorted(f.name for f in (partial / "seed-1").iterdir()) == ["attempt-1-a.json", "attempt-1-b.json"]
    _attempt(monkeypatch, 2, crash_seed=None)
    lines: list[str] = []
    out = runner.train(root, mf.load(path), path, "cpu", threads=1, show_progress=False, echo=lines.append)
    assert [line.split(" done in ")[0] for line in _done_lines(lines)] == [
        "[zz-e2e@cpu] seed 1 part b", "[zz-e2e@cpu] seed 2 part a", "[zz-e2e@cpu] seed 2 part b"]
    assert out.record["reused_seeds"] == [0] and out.record["reused_parts"] == [{"seed": 1, "part": "a"}]
    assert sorted(f.name for f in (out.run_dir / "seed-1").iterdir()) == ["attempt-1-a.json", "attempt-2-b.json"]
    assert [s["metrics"] for s in out.record["per_seed"]] == [s["metrics"] for s in want.record["per_seed"]]
    assert list(out.record["per_seed"][0]["metrics"]) == ["score", "other"]
    assert runner.read_curves_csv(out.run_dir / "curves.csv") == want_curves


def test_a_kept_part_whose_files_are_gone_is_trained_again(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _split(write(root, 1.0))
    _attempt(monkeypatch, 1, crash_seed=1)
    with pytest.raises(runner.RunError):
        runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lambda s: None)
    (partial,) = (root / "results" / "zz-e2e" / "cpu").glob(".partial-*")
    (partial / "seed-1" / "attempt-1-a.json").unlink()
    _attempt(monkeypatch, 3, crash_seed=None)
    lines: list[str] = []
    out = runner.train(root, mf.load(path), path, "cpu", jobs=2, show_progress=False, echo=lines.append)
    assert any("not reusing seed(s) 1 (part a)" in line and "files are gone" in line for line in lines), lines
    assert {"seed": 1, "part": "a"} not in out.record.get("reused_parts", [])
    assert sorted(f.name for f in (out.run_dir / "seed-1").iterdir()) == ["attempt-3-a.json", "attempt-3-b.json"]


def test_a_second_run_of_the_same_paper_and_profile_is_refused_while_one_is_under_way(root: Path) -> None:
    path = write(root, 1.0)
    folder = root / "results" / "zz-e2e" / "cpu"
    folder.mkdir(parents=True)
    with runner.RunLock(folder, "zz-e2e@cpu"):
        with pytest.raises(runner.RunError, match=f"another run of zz-e2e@cpu is under way .process {os.getpid()}"):
            runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None)
        # another profile is not blocked
        runner.train(root, mf.load(path), path, "smoke", show_progress=False, echo=lambda s: None)
    runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None)  # released


def test_run_identity_and_recorded_config_follow_the_seeds_run(root: Path) -> None:
    path = write(root, 1.0)
    full = runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None).record
    one = runner.train(root, mf.load(path), path, "cpu", seeds=[0], show_progress=False, echo=lambda s: None).record
    assert full["run_id"] != one["run_id"]
    assert one["seeds"] == one["config"]["seeds"] == [0] and full["config"]["seeds"] == [0, 1, 2]


def test_training_again_drops_the_old_verification_and_reports_mark_a_stale_one(root: Path) -> None:
    from registry import report

    write(root, 1.0)
    runner_cli = CliRunner()
    assert runner_cli.invoke(cli, ["run", "zz-e2e", "--profile", "cpu", "--no-track", "-q"]).exit_code == 0
    rdir = root / "results" / "zz-e2e" / "cpu"
    ver = json.loads((rdir / "verification.json").read_text())
    meta = json.loads((rdir / "run" / "metrics.json").read_text())
    assert ver["run_finished_at"] == meta["finished_at"]
    # the test method's score 1.01 ± 0.025 over 3 seeds against >= 1: a pass within seed noise
    assert report.verdict_cell(report.latest_verifications(root, "zz-e2e")["cpu"]) == "pass 1/1 (1 within noise)"
    assert runner_cli.invoke(cli, ["train", "zz-e2e", "--profile", "cpu", "--no-track", "-q"]).exit_code == 0
    assert not (rdir / "verification.json").exists() and not (rdir / "verification.md").exists()
    ver["run_finished_at"] = "2000-01-01T00:00:00Z"  # e.g. written by an older registry, or copied in
    (rdir / "verification.json").write_text(json.dumps(ver))
    assert report.verdict_cell(report.latest_verifications(root, "zz-e2e")["cpu"]) == "stale (re-verify)"
    shown = runner_cli.invoke(cli, ["show", "zz-e2e"]).output
    assert "cpu: pass (within seed noise) (stale" in shown


def test_ctrl_c_exits_130_and_usage_errors_keep_their_codes(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    import sys

    from registry import cli as cli_mod

    write(root, 1.0)

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "do_train", interrupted)
    for argv, code in ((["registry", "train", "zz-e2e", "--profile", "cpu"], 130),
                       (["registry", "train", "zz-e2e", "--bogus"], 2), (["registry", "--help"], 0),
                       (["registry", "list"], 0)):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exc:
            cli_mod.main()
        assert exc.value.code == code, argv
    err = capsys.readouterr().err
    assert "interrupted" in err and "No such option" in err and "Aborted" not in err


def test_code_hash_covers_the_method_library_that_runs() -> None:
    import methods

    assert runner._methods_lib() == Path(methods.__file__).resolve().parent / "_lib"


def test_code_hash_counts_where_a_file_sits_in_the_method_package(tmp_path: Path) -> None:
    from types import SimpleNamespace

    pkg = tmp_path / "zz_pkg"
    (pkg / "one").mkdir(parents=True)
    (pkg / "two").mkdir()
    (pkg / "__init__.py").write_text("from .one.steps import step\n")
    (pkg / "one" / "steps.py").write_text("def step(x):\n    return x + 1\n")
    before = runner.code_hash(SimpleNamespace(source_dir=pkg))
    (pkg / "one" / "steps.py").rename(pkg / "two" / "steps.py")  # same files, one moved: another program
    assert runner.code_hash(SimpleNamespace(source_dir=pkg)) != before


def test_a_replaced_run_left_by_a_dead_process_is_removed_once_run_exists(root: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    parent = root / "results" / "zz-e2e" / "cpu"
    old = parent / f".run.old-{dead.pid}"
    (old / "seed-0").mkdir(parents=True)
    said: list[str] = []
    runner.remove_stale_temporaries(parent, said.append)  # no run/: the old run is all there is, kept
    assert old.is_dir() and any(f"kept {old}" in s for s in said)
    (parent / "run").mkdir()
    runner.remove_stale_temporaries(parent, said.append)
    assert not old.exists() and any("replaced run" in s for s in said)


def test_kept_seeds_are_keyed_by_the_device_seeding_code_and_torch_version(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    path = write(root, 1.0)
    m = mf.load(path)
    resolved = mf.resolve(m, "cpu")
    from registry import methods

    meth = methods.get("runner-fixture")
    key = runner.partial_key(resolved, meth, "cpu")
    assert runner.partial_key(resolved, meth, "cuda") != key  # seeds kept on one device are not reused on another
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert runner.partial_key(resolved, meth, "cpu") != key


def test_two_trainings_in_one_second_are_told_apart(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's ledger and the stale-verification check tell runs of one config apart by finished_at, which
    therefore has microseconds (a smoke run can finish within the second of the one before)."""
    import re

    from registry import report, tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write(root, 1.0)
    folder = root / "results" / "zz-e2e" / "cpu"

    def train() -> dict:
        return runner.train(root, mf.load(path), path, "cpu", show_progress=False, echo=lambda s: None).record

    first, second = train(), train()
    assert first["run_id"] == second["run_id"] and first["finished_at"] != second["finished_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", second["finished_at"])
    assert report.judged_run_on_disk({"run_finished_at": first["finished_at"]}, folder) is False
    assert report.judged_run_on_disk({"run_finished_at": second["finished_at"]}, folder) is True
    logged = tracking.log_run(root, "zz-e2e", "cpu")
    train()
    assert tracking.log_run(root, "zz-e2e", "cpu") != logged
