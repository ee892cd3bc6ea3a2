"""`registry show` reports what `registry validate` reports for the manifest (method config included) and checks
--profile before printing; `registry new` refuses input that would not validate, writing nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import zz_support as S

# CLI commands in-process (CliRunner) in a fresh interpreter (that registers zz-test-method unless told not to);
# prints a JSON report.
DRIVER = r"""
import inspect, json, sys
if sys.argv[2]:
    sys.path.insert(0, sys.argv[2])
    import zz_support
from click.testing import CliRunner
from registry.cli import cli
# stdout apart from stderr (click 8.1 mixes them unless told not to; 8.2+ keeps both and output has both)
kw = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner(**kw).invoke(cli, args)
    out.append({"args": args, "code": r.exit_code, "stdout": r.stdout, "output": r.stdout + r.stderr,
                "exc": None if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception)})
print(json.dumps({"results": out, "heavy": sorted(m for m in ("torch", "mlflow") if m in sys.modules)}))
"""


def drive(root: Path, calls: list[list[str]], *, test_method: bool = True, cwd: Path | None = None) -> dict:
    env = {**os.environ, "REGISTRY_ROOT": str(root)}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(calls), str(S.HERE) if test_method else ""],
                          capture_output=True,
                          text=True, env=env, cwd=cwd or root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in rep["results"]:
        assert r["exc"] is None and "Traceback" not in r["output"], r
    return rep


def make_root(tmp: Path) -> Path:
    root = tmp / "reg"
    (root / "manifests").mkdir(parents=True)
    (root / "methods").mkdir()
    (root / "methods" / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text("[project]\nname = 'zz-temp-registry'\nversion = '0'\n")
    return root


# --------------------------------------------------------------------------- show


def test_show_reports_method_config_problems_like_validate(tmp_path):
    root = make_root(tmp_path)
    text = S.manifest_text("zz-bad-param").replace("      steps: 2\n", "      steps: 2\n      momentum: 0.9\n")
    (root / "manifests" / "zz-bad-param.yaml").write_text(text)
    line = text.splitlines().index("      momentum: 0.9") + 1
    rep = drive(root, [["show", "zz-bad-param"], ["show", "zz-bad-param", "--profile", "smoke"],
                       ["validate", "manifests/zz-bad-param.yaml"]])
    show, show_prof, val = rep["results"]
    expected = f"manifests/zz-bad-param.yaml:{line}: profiles.smoke.train.momentum: unknown parameter for method"
    for r in (show, show_prof, val):
        assert r["code"] == 2 and expected in r["output"], r["output"]
        assert "resolved config" not in r["output"] and "A tiny test paper" not in r["output"]
    assert rep["heavy"] == []


def test_show_checks_the_profile_before_printing(tmp_path):
    root = make_root(tmp_path)
    S.write_manifest(root / "manifests", "zz-ok")
    rep = drive(root, [["show", "zz-ok", "--profile", "bogus"], ["show", "zz-ok", "--profile", "smoke"]])
    bogus, smoke = rep["results"]
    assert bogus["code"] == 2 and "no profile 'bogus'; defined: smoke, cpu, paper" in bogus["output"]
    assert "A tiny test paper" not in bogus["output"] and "claims (" not in bogus["output"]
    assert bogus["stdout"] == ""
    assert smoke["code"] == 0 and "A tiny test paper" in smoke["output"]
    resolved = json.loads(smoke["stdout"].split("resolved config at smoke:", 1)[1])
    assert resolved["seeds"] == [0] and resolved["train"]["steps"] == 2


def test_show_of_real_papers_imports_no_torch():
    """show now imports the method packages (for the config check): they must stay free of torch/mlflow."""
    checkout = S.HERE.parents[1]
    ids = sorted(p.stem for p in (checkout / "manifests").glob("*.yaml"))
    env = {**os.environ, "REGISTRY_ROOT": str(checkout)}
    code = ("import json, sys\nfrom click.testing import CliRunner\nfrom registry.cli import cli\n"
            "from registry import manifest as mf\n"
            "impl = [p for p in json.loads(sys.argv[1]) if 'status: implemented' in "
            "open(f'manifests/{p}.yaml').read()]\n"
            "codes = {p: CliRunner().invoke(cli, ['show', p, '--profile', 'smoke']).exit_code for p in impl[:3]}\n"
            "print(json.dumps({'codes': codes, 'heavy': sorted(m for m in ('torch', 'mlflow') if m in sys.modules)}))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True, env=env,
                          cwd=checkout, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rep["codes"] and set(rep["codes"].values()) == {0}, rep
    assert rep["heavy"] == []


# --------------------------------------------------------------------------- new


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts)


def test_new_refuses_bad_input_and_writes_nothing(tmp_path):
    root = make_root(tmp_path)
    before = _files(root)
    bad = [
        (["--title", "T", "--year", "2024", "--arxiv", "foo"], "--arxiv: not an arXiv id"),
        (["--title", "T", "--year", "1800"], "--year: Input should be greater than or equal to 1950 (got 1800)"),
        (["--title", "T", "--year", "2024", "--arxiv", "it's"], "--arxiv: not an arXiv id"),
        (["--title", "  ", "--year", "2024"], "--title: String should have at least 1 character"),
        (["--title", "T", "--year", "2024", "--venue", ""], "--venue: String should have at least 1 character"),
    ]
    refused = drive(root, [["new", "zz-new-paper", *args] for args, _ in bad])["results"]
    for r, (_, msg) in zip(refused, bad):
        assert r["code"] == 2 and msg in r["output"] and "created" not in r["output"], r
    assert _files(root) == before
    created, idx, val = drive(root, test_method=False, calls=[
        ["new", "zz-new-paper", "--title", "It's \"quoted\": a #title", "--year", "2024", "--arxiv", "2401.01234",
         "--authors", "O'Brien, Smith: Jr., - Dash"], ["index"], ["validate"]])["results"]
    assert created["code"] == 0, created["output"]  # the retry is not blocked by leftovers
    assert "created manifests/zz-new-paper.yaml" in created["output"]
    assert "created methods/zz_new_paper/__init__.py" in created["output"]
    assert idx["code"] == 0 and val["code"] == 0, val["output"]
    from registry import manifest as mf

    m = mf.load(root / "manifests" / "zz-new-paper.yaml", with_methods=False, root=root)
    assert m.paper.title == "It's \"quoted\": a #title" and m.paper.arxiv == "2401.01234"
    assert m.paper.authors == ["O'Brien", "Smith: Jr.", "- Dash"]


def test_new_help_names_the_method_folder_with_underscores(tmp_path):
    root = make_root(tmp_path)
    out = drive(root, [["new", "--help"]])["results"][0]["output"]
    assert "methods/PAPER/" not in out
    assert "hyphens turned into underscores" in out and "methods/my_paper/" in out


def test_scaffold_yaml_scalars_round_trip():
    import yaml

    from registry.scaffold import yaml_scalar

    for v in ["it's", 'a "b" c', "x: y", "- z", "#c", "tab\there", "back\\slash", "{a}", "[b]", "*alias", "&a",
              "2401.01234", "yes", "null", "~", "line\nbreak", "é ü ∑ 😀", " padded "]:
        out = yaml_scalar(v)
        assert "\n" not in out and yaml.safe_load(f"k: {out}") == {"k": v}, (v, out)


# --------------------------------------------------------------------------- odd input


def test_ids_that_are_no_paper_and_a_root_that_is_no_registry_are_clear_errors(tmp_path):
    """An id is looked up among the manifests, never used as a path first (300 characters used to end in
    OSError 'File name too long'); a REGISTRY_ROOT that does not exist used to read as an empty registry."""
    root = make_root(tmp_path)
    S.write_manifest(root / "manifests", "zz-ok")
    long_id = "a" * 300
    rep = drive(root, [["show", long_id], ["verify", long_id, "--no-track"], ["show", "../pyproject"],
                       ["show", "zz-ok/../zz-ok"], ["new", long_id, "--title", "T", "--year", "2024"]])
    for r in rep["results"][:4]:
        assert r["code"] == 2 and "no such paper" in r["output"], r
    assert rep["results"][4]["code"] == 2 and "at most 80 characters" in rep["results"][4]["output"]
    missing = tmp_path / "no-such-root"
    for args in (["list"], ["validate"], ["index"], ["new", "zz-x", "--title", "T", "--year", "2024"]):
        (r,) = drive(missing, [args], cwd=tmp_path)["results"]
        assert r["code"] == 2 and f"REGISTRY_ROOT={missing} is not a directory" in r["output"], r
    assert not missing.exists()  # `new` did not create it


def test_a_results_file_edited_by_hand_is_named_not_a_traceback(tmp_path):
    root = make_root(tmp_path)
    S.write_manifest(root / "manifests", "zz-ok")
    folder = root / "results" / "zz-ok" / "cpu"
    (folder / "run").mkdir(parents=True)
    for text in ("{}", "[]", "null", "garbage", '{"verdict": "pass", "passed": 1, "total": 1, "claims": [3]}'):
        (folder / "verification.json").write_text(text)
        lst, show, rpt = drive(root, [["list"], ["show", "zz-ok"], ["report", "--out", str(tmp_path / "r")]])["results"]
        assert lst["code"] == 0 and "unreadable (re-verify)" in lst["output"], lst
        assert show["code"] == 0 and "verification.json of cpu (edited or cut short)" in show["output"], show
        assert rpt["code"] == 0, rpt
    (folder / "verification.json").unlink()
    for text in ("[]", "garbage", "{}", '{"per_seed": []}', '{"per_seed": [], "run_id": "x"}'):
        (folder / "run" / "metrics.json").write_text(text)
        ver, sync = drive(root, [["verify", "zz-ok", "--profile", "cpu", "--no-track"], ["sync"]])["results"]
        assert ver["code"] == 1 and "is not a run record the registry wrote" in ver["output"], ver
        assert sync["code"] == 0 and "skipped results/zz-ok/cpu/run/metrics.json: not a run record" in sync["output"]
