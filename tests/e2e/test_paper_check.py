"""scripts/paper_check.py: every paper's `paper` profile and supplementary `paper-<name>` profiles (the GPU
setups, never trained here) run for a few steps at the paper's shapes on CPU. A derived profile may change only
budget keys; a run that breaks or a claim metric that does not come out fails the check."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e_support import ROOT, make_root
from registry import manifest as mf

SCRIPT = ROOT / "scripts" / "paper_check.py"
# 12 layers x 768 wide at 2048 training tokens and evaluations up to 8192 tokens, six encodings: about 11 min
# on 2 CPU cores (lengths up to 4096), too long for CI; the check covers it on a GPU and by hand.
CI_EXCLUDE = ["fire-relative-positions"]


def load_script():
    spec = importlib.util.spec_from_file_location("paper_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pc = load_script()


def implemented() -> dict[str, mf.Manifest]:
    manifests, problems = mf.load_all(ROOT)
    assert not problems
    return {k: m for k, m in manifests.items() if m.status == "implemented"}


def test_budgets_name_implemented_papers_and_only_budget_keys() -> None:
    papers = implemented()
    for paper, budget in pc.BUDGETS.items():
        assert paper in papers, f"BUDGETS names {paper}, which is not an implemented paper"
        for section, values in budget.items():
            assert section in ("data", "model", "train")
            assert set(values) <= pc.BUDGET_KEYS, f"{paper}.{section}: {set(values) - pc.BUDGET_KEYS}"


def test_derived_profiles_validate_and_differ_from_paper_only_in_budget(tmp_path: Path) -> None:
    """Resolved through the registry (method configs included), the `<profile>-check` profile of every
    paper-level profile of every implemented paper changes nothing but budget keys, and trains one seed."""
    papers = sorted(implemented())
    dest = tmp_path / "reg"
    dest.mkdir()
    checked = pc.prepare(ROOT, papers, dest)
    manifests, problems = mf.load_all(dest)
    assert not problems, "\n".join(map(str, problems))
    assert len(checked["position-coupling"]) == 7 and "paper-addition" in checked["rasp-l-length-generalization"]
    for paper in papers:
        m = manifests[paper]
        assert checked[paper][0] == "paper"
        for source in checked[paper]:
            src_cfg, check_cfg = mf.resolve(m, source), mf.resolve(m, pc.check_name(source))
            assert check_cfg.seeds == src_cfg.seeds[:1]
            assert check_cfg.device == src_cfg.device
            changed = pc.differing_paths(src_cfg.method_sections(), check_cfg.method_sections())
            assert changed, f"{paper} {source}: the check would train the full paper budget"
            assert all(p[-1] in pc.BUDGET_KEYS for p in changed), f"{paper} {source}: {changed}"


def test_paper_level_profiles_are_paper_and_paper_dash_names_only() -> None:
    raw = {"profiles": {"smoke": {}, "cpu": {}, "cpu-paper": {}, "paper-b": {}, "paper": {}, "paper-a": {},
                        "paper-check": {}, "paper-a-check": {}, "papers": {}}}
    assert pc.paper_profiles(raw) == ["paper-b", "paper", "paper-a"]
    assert pc.check_name("paper") == pc.PROFILE and pc.check_name("paper-a") == "paper-a-check"
    dest_raw = pc.derive_profile({"id": "x", "train": {"seeds": [5, 6]},
                                  "profiles": {"smoke": {"train": {"steps": 2}},
                                               "paper-a": {"train": {"steps": 900, "lr": 0.1}}}}, source="paper-a")
    assert dest_raw["train"] == {"steps": 2, "lr": 0.1, "seeds": [5]}


def test_full_batch_keeps_the_papers_batch_sizes(tmp_path: Path) -> None:
    papers = ["position-coupling", "transformers-learn-icl-by-gd"]  # one with a BUDGETS entry, one without
    dest = tmp_path / "reg"
    dest.mkdir()
    pc.prepare(ROOT, papers, dest, full_batch=True)
    manifests, problems = mf.load_all(dest)
    assert not problems
    for paper in papers:
        m = manifests[paper]
        paper_cfg = mf.resolve(m, "paper").method_sections()
        changed = pc.differing_paths(paper_cfg, mf.resolve(m, pc.PROFILE).method_sections())
        assert changed and not [p for p in changed if p[-1].endswith("batch_size")], (paper, changed)
        reduced = pc.differing_paths(paper_cfg, mf.resolve(m, "smoke").method_sections())
        assert [p for p in reduced if p[-1].endswith("batch_size")], "the smoke profile reduces a batch size"


def test_smoke_budget_is_the_default() -> None:
    raw = yaml.safe_load((ROOT / "manifests" / "transformers-learn-icl-by-gd.yaml").read_text())
    assert raw["id"] not in pc.BUDGETS
    prof = pc.derive_profile(raw)
    smoke = raw["profiles"]["smoke"]["train"]
    assert prof["train"]["steps"] == smoke["steps"] and prof["train"]["eval_tasks"] == smoke["eval_tasks"]
    assert "multilayer" not in prof.get("model", {})  # smoke's shapes never come along
    # a shape key in a smoke profile is not taken
    raw["profiles"]["smoke"]["model"] = {"n_layers": 7}
    assert "n_layers" not in pc.derive_profile(raw).get("model", {})


def test_required_metrics_and_their_problems() -> None:
    m = implemented()["position-coupling"]
    for profile in ("paper", "paper-multiplication-baselines"):
        need = pc.required_metrics(m, profile)
        claims = [c for c in m.claims if c.checked and profile in c.profiles]
        assert claims and set(need) == {n for c in claims for n in (c.metric, c.baseline,
                                                                   c.seeds_where.metric if c.seeds_where else None)
                                        if n}
    assert pc.required_metrics(m) == pc.required_metrics(m, "paper")
    assert set(pc.required_metrics(m, "paper-multiplication")).isdisjoint(pc.required_metrics(m))
    need = pc.required_metrics(m)
    name = next(iter(need))
    assert pc.metric_problems(need, {name: 0.5}) == []
    assert "missing" in pc.metric_problems(need, {})[0]
    assert "nan" in pc.metric_problems(need, {name: float("nan")})[0]


@pytest.mark.slow
def test_check_fails_on_a_missing_metric_and_on_a_run_that_breaks(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    root.mkdir()
    pc.prepare(ROOT, ["transformers-learn-icl-by-gd"], root)
    r = pc.check_one(root, "transformers-learn-icl-by-gd", "cpu", 1, 300, {"no_such_metric": ["some-claim"]})
    assert r["rc"] == 0 and not r["ok"]
    assert r["problems"] == ["seed 0: no_such_metric missing (claims some-claim)"]
    # position-coupling has no paper-check profile in this root: `registry train` refuses it
    r = pc.check_one(root, "position-coupling", "cpu", 1, 300, {})
    assert not r["ok"] and "did not finish (rc 2)" in r["problems"][0]


@pytest.mark.slow
def test_every_paper_profile_runs_at_its_shapes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "REGISTRY_ROOT": str(make_root(tmp_path))}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--jobs", "2", "--exclude", ",".join(CI_EXCLUDE),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "paper_check.json").read_text())
    expected = {(p, s) for p, m in implemented().items() if p not in CI_EXCLUDE
                for s in m.profiles if s == "paper" or s.startswith("paper-")}
    assert len(expected) > len(implemented()) - len(CI_EXCLUDE)  # the paper-<name> profiles are in
    assert {(r["paper"], r["profile"]) for r in report["runs"]} == expected
    assert all(r["ok"] and r["device"] == "cpu" and r["claim_metrics"] > 0 for r in report["runs"])
    assert all(r["peak_memory_mb"] > 50 for r in report["runs"])  # the training process's resident peak
    assert (out / "paper_check.md").read_text().count("| yes |") == len(report["runs"])


@pytest.mark.parametrize("profiles, message", [("cpu", "paper-level profiles"),
                                               ("paper-nothing", "no paper checked has the profile")])
def test_profiles_option_refuses_what_it_cannot_check(profiles: str, message: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--profiles", profiles], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
