"""The read-only CLI in a temporary registry root (REGISTRY_ROOT): answers without torch/mlflow; `registry new`
scaffolds a paper that validates; the DVC index (papers.yaml) is checked for staleness."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from registry import index, scaffold
from registry import manifest as mf

import zz_support as S

CATALOGUED_TWO = """\
schema_version: 1
id: zz-cat-two
status: catalogued
status_reason: Needs 1000 GPU-days.
paper:
  title: Another catalogued paper
  authors: [Grace Hopper, et al.]
  year: 1952
  venue: ACM
  arxiv: '1201.00001'
  tier: C
claims:
  - id: compilers-work
    statement: A compiler translates programs.
    source: Section 2
    kind: paper
    reported: {value: 1.0, unconfirmed: true}
"""


def make_root(tmp: Path, *, methods_pkg: bool = True) -> Path:
    root = tmp / "reg"
    (root / "manifests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'zz-temp-registry'\nversion = '0'\n")
    if methods_pkg:  # an empty methods package: the CLI must use it, not the checkout's methods/
        (root / "methods").mkdir()
        (root / "methods" / "__init__.py").write_text("")
    S.write_manifest(root / "manifests", "zz-cat-one", S.BASE_CATALOGUED)
    (root / "manifests" / "zz-cat-two.yaml").write_text(CATALOGUED_TWO)
    return root


# Runs CLI commands in-process (CliRunner) inside a fresh interpreter; prints a JSON report.
DRIVER = r"""
import json, os, sys
if os.environ.get("ZZ_TEST_METHOD_DIR"):  # register zz-test-method, which the manifests of S.BASE_IMPLEMENTED use
    sys.path.insert(0, os.environ["ZZ_TEST_METHOD_DIR"])
    import zz_support
from click.testing import CliRunner
from registry.cli import cli
calls = json.loads(sys.argv[1])
out = []
for args in calls:
    r = CliRunner().invoke(cli, args)
    out.append({"args": args, "code": r.exit_code, "output": r.output,
                "exc": None if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception)})
import methods
print(json.dumps({"results": out, "heavy": sorted(m for m in ("torch", "mlflow") if m in sys.modules),
                  "methods_file": getattr(methods, "__file__", None)}))
"""


def drive(root: Path, calls: list[list[str]], *, test_method: bool = False) -> dict:
    env = {**os.environ, "REGISTRY_ROOT": str(root)}
    if test_method:
        env["ZZ_TEST_METHOD_DIR"] = str(S.HERE)
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(calls)], capture_output=True, text=True,
                          env=env, cwd=root.parent, timeout=120)  # not the root: REGISTRY_ROOT must suffice
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_read_only_commands_without_torch_or_mlflow(tmp_path):
    root = make_root(tmp_path)
    rep = drive(root, [["list"], ["list", "--json", "--status", "catalogued"], ["show", "zz-cat-two"],
                       ["show", "zz-cat-tw"], ["validate"], ["index"], ["validate"], ["schema"],
                       ["validate", str(root / "manifests" / "zz-cat-one.yaml")], ["index", "--check"]])
    assert rep["heavy"] == [], f"fast commands imported {rep['heavy']}"
    assert rep["methods_file"] == str(root / "methods" / "__init__.py")
    res = rep["results"]
    for r in res:
        assert r["exc"] is None and "Traceback" not in r["output"], r
    lst, lst_json, show, show_typo, val_stale, idx, val_ok, schema, val_one, idx_check = res

    assert lst["code"] == 0
    assert "zz-cat-one" in lst["output"] and "zz-cat-two" in lst["output"]
    assert "2 papers: 0 implemented, 2 catalogued" in lst["output"]
    rows = json.loads(lst_json["output"])
    assert [r["id"] for r in rows] == ["zz-cat-one", "zz-cat-two"] and rows[1]["tier"] == "C"

    assert show["code"] == 0 and "Another catalogued paper" in show["output"]
    assert "Needs 1000 GPU-days." in show["output"] and "compilers-work" in show["output"]
    assert "reported=1 (unconfirmed)" in show["output"]
    assert show_typo["code"] == 2 and "Did you mean 'zz-cat-two'" in show_typo["output"]

    assert val_stale["code"] == 2 and "papers.yaml" in val_stale["output"] and "missing" in val_stale["output"]
    assert idx["code"] == 0 and "updated: papers.yaml" in idx["output"]
    assert val_ok["code"] == 0 and "ok: 2 manifests valid (0 implemented), index up to date" in val_ok["output"]
    assert schema["code"] == 0 and "Claim" in json.loads(schema["output"])["$defs"]
    assert val_one["code"] == 0 and idx_check["code"] == 0
    assert (root / "papers.yaml").read_text() == index.HEADER + "papers: {}\nsupplements: {}\n"


def test_validate_reports_bad_manifest_in_root(tmp_path):
    root = make_root(tmp_path)
    (root / "manifests" / "zz-cat-two.yaml").write_text(CATALOGUED_TWO.replace("  year: 1952\n", "  year: soon\n"))
    rep = drive(root, [["validate"], ["list"], ["report"]])
    val, lst, report = rep["results"]
    assert val["code"] == 2 and "manifests/zz-cat-two.yaml:8: paper.year:" in val["output"]
    assert lst["code"] == 0 and "warning: 1 manifest problem(s)" in lst["output"]
    assert report["code"] == 2 and "zz-cat-two.yaml:8" in report["output"]
    assert rep["heavy"] == []


# --------------------------------------------------------------------------- registry new


def test_scaffold_files_pass_check_file(tmp_path):
    root = make_root(tmp_path, methods_pkg=False)
    title = 'Attention: "all" you need'
    created = scaffold.create(root, "zz-scaffold-paper", title=title, authors=["A. Author", "B, Jr."],
                              year=2024, venue="NeurIPS 2024", arxiv="2401.01234")
    man, src = created
    assert man == root / "manifests" / "zz-scaffold-paper.yaml"
    assert src == root / "methods" / "zz_scaffold_paper" / "__init__.py"
    m, problems = mf.check_file(man, with_methods=False, root=root)
    assert problems == [], problems
    assert m.paper.title == title and m.paper.arxiv == "2401.01234" and m.method == "zz-scaffold-paper"
    assert m.paper.authors == ["A. Author", "B, Jr."]
    compile(src.read_text(), str(src), "exec")
    with pytest.raises(scaffold.ScaffoldError, match="already exists"):
        scaffold.create(root, "zz-scaffold-paper", title="t", authors=["a"], year=2024, venue="v", arxiv=None)
    for bad in ("Bad_Id", "../escape", "a--b"):
        with pytest.raises(scaffold.ScaffoldError, match="slug"):
            scaffold.create(root, bad, title="t", authors=["a"], year=2024, venue="v", arxiv=None)
    assert not (root / "escape").exists()


def test_scaffold_method_compiles_for_latex_title(tmp_path):
    root = make_root(tmp_path, methods_pkg=False)
    _, src = scaffold.create(root, "zz-latex", title=r"On $\Upsilon$-nets and \N-grams", authors=["a"],
                             year=2024, venue="v", arxiv=None)
    compile(src.read_text(), str(src), "exec")


def test_registry_new_then_full_validate(tmp_path):
    root = make_root(tmp_path)
    rep = drive(root, [["new", "zz-scaffold-paper", "--title", "Scaffolded", "--year", "2024",
                        "--arxiv", "2401.01234"],
                       ["new", "zz-scaffold-paper", "--title", "Again", "--year", "2024"],
                       ["new", "Bad_Id", "--title", "x", "--year", "2024"],
                       ["index"], ["validate"], ["show", "zz-scaffold-paper", "--profile", "smoke"],
                       ["show", "zz-scaffold-paper", "--profile", "gpu"]])
    new, again, bad, idx, val, show, show_bad = rep["results"]
    assert new["code"] == 0 and "created manifests/zz-scaffold-paper.yaml" in new["output"]
    assert again["code"] == 2 and "already exists" in again["output"]
    assert bad["code"] == 2 and "slug" in bad["output"]
    assert idx["code"] == 0
    assert val["code"] == 0, val["output"]
    assert "ok: 3 manifests valid (1 implemented), index up to date" in val["output"]
    profile_lines = show["output"].split("\nprofiles:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [ln[:9] for ln in profile_lines] == ["  smoke  ", "  cpu    ", "  paper  "]  # one aligned column
    resolved = json.loads(show["output"].split("resolved config at smoke:", 1)[1])
    assert resolved["seeds"] == [0] and resolved["train"]["steps"] == 50 and resolved["data"]["dim"] == 20
    assert show_bad["code"] == 2 and "no profile 'gpu'" in show_bad["output"]
    assert rep["heavy"] == [], "scaffolded method imported torch at import time"
    papers = (root / "papers.yaml").read_text()
    assert "zz-scaffold-paper:\n    code: methods/zz_scaffold_paper\n    method: zz-scaffold-paper\n" in papers


# --------------------------------------------------------------------------- DVC index staleness


def test_index_catalogued_only(tmp_path):
    root = make_root(tmp_path, methods_pkg=False)
    manifests, problems = mf.load_all(root, with_methods=False)
    assert problems == [] and set(manifests) == {"zz-cat-one", "zz-cat-two"}
    [p] = index.check(root, manifests)
    assert p.file == "papers.yaml" and "missing" in p.message
    assert index.write(root, manifests) is True
    assert index.check(root, manifests) == []
    assert (root / "papers.yaml").read_text() == index.HEADER + "papers: {}\nsupplements: {}\n"
    assert index.write(root, manifests) is False
    (root / "papers.yaml").write_text(index.HEADER + "papers:\n  ghost: {}\n")
    [p] = index.check(root, manifests)
    assert "out of date" in p.message


def test_index_tracks_implemented_papers(tmp_path):
    root = make_root(tmp_path, methods_pkg=False)
    S.write_manifest(root / "manifests", "zz-impl-a")
    manifests, problems = mf.load_all(root)
    assert problems == [] and manifests["zz-impl-a"].status == "implemented"
    index.write(root, manifests)
    text = (root / "papers.yaml").read_text()
    assert "zz-impl-a:" in text and "method: zz-test-method" in text and "zz-cat-one" not in text
    assert f"code: {S.HERE / 'zz_support.py'}" in text  # method code outside the root: absolute path
    assert index.check(root, manifests) == []

    S.write_manifest(root / "manifests", "zz-impl-b")   # a new implemented paper -> stale
    more, _ = mf.load_all(root)
    assert "out of date" in index.check(root, more)[0].message
    fewer = {k: v for k, v in manifests.items() if k != "zz-impl-a"}   # a removed one -> stale
    assert "out of date" in index.check(root, fewer)[0].message
    cat_only_change = {k: v for k, v in manifests.items() if k != "zz-cat-two"}  # catalogued: not indexed
    assert index.check(root, cat_only_change) == []


def test_index_lists_supplementary_cpu_profiles(tmp_path):
    """A cpu-* profile gets its own train-supplement/verify-supplement stages; other profiles do not."""
    root = make_root(tmp_path, methods_pkg=False)
    base = S.BASE_IMPLEMENTED.replace("  paper:\n    description: Paper run.\n",
                                      "  cpu-extra:\n    description: Extra CPU run.\n"
                                      "  paper-extra:\n    description: Extra paper run.\n"
                                      "  paper:\n    description: Paper run.\n")
    assert base != S.BASE_IMPLEMENTED
    S.write_manifest(root / "manifests", "zz-impl-a", base)
    manifests, problems = mf.load_all(root)
    assert problems == []
    index.write(root, manifests)
    data = yaml.safe_load((root / "papers.yaml").read_text())
    show = drive(root, [["show", "zz-impl-a"]], test_method=True)["results"][0]
    assert show["code"] == 0, show["output"]
    profile_lines = show["output"].split("\nprofiles:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert {ln[:14] for ln in profile_lines} >= {"  cpu-extra   ", "  smoke       "}  # widest name sets the column
    assert data["supplements"] == {"zz-impl-a--cpu-extra": {"paper": "zz-impl-a", "profile": "cpu-extra",
                                                           "code": data["papers"]["zz-impl-a"]["code"]}}
    dvc = yaml.safe_load((S.HERE.parents[1] / "dvc.yaml").read_text())["stages"]
    cmd = dvc["train-supplement"]["do"]["cmd"]
    assert dvc["train-supplement"]["foreach"] == "${supplements}" and "--profile ${item.profile}" in cmd


def test_show_ignores_verdicts_of_profiles_the_manifest_no_longer_defines(tmp_path):
    """A results/<id>/<profile>/ left over from a removed or renamed profile is named as ignored, not shown
    as that claim's verdict."""
    root = make_root(tmp_path, methods_pkg=False)
    S.write_manifest(root / "manifests", "zz-impl-a")
    for prof, verdict in (("cpu", "fail"), ("cpu-gone", "pass")):
        d = root / "results" / "zz-impl-a" / prof
        d.mkdir(parents=True)
        (d / "verification.json").write_text(json.dumps(
            {"verdict": verdict.upper(), "passed": int(verdict == "pass"), "total": 1,
             "claims": [{"id": "acc-high", "verdict": verdict, "within_noise": prof == "cpu"}]}))
    show = drive(root, [["show", "zz-impl-a"]], test_method=True)["results"][0]
    assert show["code"] == 0, show["output"]
    claims = show["output"].split("\nclaims (", 1)[1]
    assert "      cpu: fail (within seed noise)\n" in claims and "cpu-gone: pass" not in claims
    assert "no longer defines: cpu-gone" in show["output"]


def test_report_lists_the_verdicts_of_other_profiles(tmp_path):
    """`registry report` shows smoke / cpu / paper in their columns and every other profile the manifest
    defines (e.g. a supplementary cpu-* one) in one more column; a stale results folder is not listed."""
    root = make_root(tmp_path, methods_pkg=False)
    S.write_manifest(root / "manifests", "zz-impl-a", S.BASE_IMPLEMENTED.replace(
        "  paper:\n    description: Paper run.\n",
        "  cpu-extra:\n    description: Extra CPU run.\n  paper:\n    description: Paper run.\n"))
    for prof, verdict in (("smoke", "pass"), ("cpu", "fail"), ("cpu-extra", "pass"), ("cpu-gone", "pass")):
        d = root / "results" / "zz-impl-a" / prof
        d.mkdir(parents=True)
        (d / "verification.json").write_text(json.dumps(
            {"verdict": verdict, "passed": int(verdict == "pass"), "total": 1,
             "claims": [{"id": "acc-high", "verdict": verdict}]}))
    rep = drive(root, [["report"]])["results"][0]
    assert rep["code"] == 0, rep["output"]
    row = next(ln for ln in rep["output"].splitlines() if ln.startswith("| **zz-impl-a**"))
    assert row.endswith("| pass 1/1 | fail 0/1 | - | cpu-extra: pass 1/1 |") and "cpu-gone" not in row


def test_show_names_the_seed_selection_of_a_claim(tmp_path):
    """A claim judged on selected seeds only (seeds_where) says so in `registry show`'s check line."""
    root = make_root(tmp_path, methods_pkg=False)
    S.write_manifest(root / "manifests", "zz-impl-a", S.BASE_IMPLEMENTED.replace(
        "      rationale: Seed noise.\n    profiles: [cpu, paper]\n",
        "      rationale: Seed noise.\n    seeds_where: {metric: base_acc, compare: '<=', value: 0.5, min_seeds: 2,\n"
        "                  rationale: The paper averages only such runs.}\n    profiles: [cpu, paper]\n"))
    show = drive(root, [["show", "zz-impl-a"]], test_method=True)["results"][0]
    assert show["code"] == 0, show["output"]
    assert "check: mean(acc) >= 0.9 ± 0.05 over seeds with base_acc <= 0.5 (at least 2) at cpu, paper" in show["output"]
