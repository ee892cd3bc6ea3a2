"""The repository itself: every manifest valid, index fresh, catalogue covered, fast commands fast."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from registry import manifest as mf

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT.parent / "shared" / "catalogue.yaml"


def cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY_ROOT"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "registry.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    return proc, time.perf_counter() - t0


def test_every_manifest_validates_and_index_is_fresh() -> None:
    proc, _ = cli("validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "index up to date" in proc.stdout


def test_fast_commands_do_not_import_torch_or_mlflow() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from registry.cli import cli\n"
        "r = CliRunner()\n"
        "for args in (['list'], ['validate'], ['show', 'position-coupling', '--profile', 'cpu'], ['schema'],\n"
        "             ['index', '--check'], ['report']):\n"
        "    res = r.invoke(cli, args)\n"
        "    assert res.exit_code == 0, (args, res.output)\n"
        "bad = [m for m in ('torch', 'mlflow', 'matplotlib', 'dvc') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_validate_and_list_are_quick() -> None:
    # The bars are 1 s (validate) and 0.5 s (list) of command time; a subprocess adds interpreter start-up,
    # and CI machines are noisy, so this guards against regressions by an order of magnitude only.
    cli("list")  # warm the file cache
    _, t_validate = cli("validate")
    _, t_list = cli("list")
    assert t_validate < 3.0 and t_list < 2.0, (t_validate, t_list)


def test_manifests_start_with_the_command_that_reproduces_them() -> None:
    for path in mf.manifest_files(ROOT):
        first = path.read_text().splitlines()[0]
        assert first.startswith("#") and "registry" in first, path.name


def test_implemented_papers_have_method_modules_citing_the_paper() -> None:
    manifests, problems = mf.load_all(ROOT)
    assert not problems
    from registry import methods

    for m in manifests.values():
        if m.status != "implemented":
            continue
        method = methods.get(m.method)
        src = method.source_dir
        doc = (src / "__init__.py" if src.is_dir() else src).read_text()
        assert m.paper.arxiv in doc, f"{src} should open with the paper's title and arXiv id"
        assert m.hardware.estimated_minutes.get("cpu", 99) <= 10, m.id


@pytest.mark.skipif(not CATALOGUE.exists(), reason="shared catalogue not present beside the checkout")
def test_every_catalogued_paper_has_a_manifest() -> None:
    entries = yaml.safe_load(CATALOGUE.read_text())
    have = {p.stem for p in mf.manifest_files(ROOT)}
    missing = sorted(e["id"] for e in entries if e["id"] not in have)
    assert not missing, missing


@pytest.mark.skipif(not CATALOGUE.exists(), reason="shared catalogue not present beside the checkout")
def test_catalogued_manifests_are_in_sync_with_the_catalogue() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_catalogue.py"), "--check",
                           "--catalogue", str(CATALOGUE)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _registry_imports(path: Path) -> set[str]:
    """Names of the registry modules ``path`` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and path.parent.name == "registry":
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.level == 0 and node.module and node.module.split(".")[0] == "registry":
                parts = node.module.split(".")
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("registry.")}
    return {m for m in found if (ROOT / "registry" / f"{m}.py").exists()}


def _closure(entries: set[str]) -> set[str]:
    todo, seen = set(entries), set()
    while todo:
        mod = todo.pop()
        seen.add(mod)
        todo |= _registry_imports(ROOT / "registry" / f"{mod}.py") - seen
    return seen


def test_dvc_stage_deps_cover_the_registry_code_each_command_runs() -> None:
    """DVC reruns a stage only when a dep changes: each stage must list every registry module its command's
    code path imports (cli.py only dispatches and is left out, so that editing it does not retrain)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    method_side = set().union(*(_registry_imports(f) for f in (ROOT / "methods").rglob("*.py")))
    entries = {
        "train": {"runner"} | method_side,          # cli.do_train -> runner.train -> the method's run
        "train-supplement": {"runner"} | method_side,
        "verify": {"verify", "runner", "manifest"},  # cli.do_verify: manifest.load, runner.load_record
        "verify-supplement": {"verify", "runner", "manifest"},
        "report": {"report", "manifest", "runner"},  # cli.report: manifest.load_all, runner.atomic_write_text
    }
    for stage, entry in entries.items():
        spec = stages[stage].get("do", stages[stage])
        deps = set(spec["deps"])
        missing = sorted(f"registry/{m}.py" for m in _closure(entry) if f"registry/{m}.py" not in deps)
        assert not missing, f"dvc.yaml stage {stage} does not depend on {missing}"
        assert "registry/cli.py" not in deps, stage


def test_method_code_imports_only_its_own_package_and_the_shared_library() -> None:
    """The train stages depend on ${item.code} and methods/_lib only: a method importing another paper's
    package would train on code DVC does not watch."""
    for f in (ROOT / "methods").rglob("*.py"):
        own = f.relative_to(ROOT / "methods").parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "methods":
                    assert len(parts) > 1 and parts[1] in {"_lib", own}, f"{f.relative_to(ROOT)} imports {name}"
            if isinstance(node, ast.ImportFrom) and node.level > 0:  # resolve a relative import to its folder
                base = f.parent
                for _ in range(node.level - 1):
                    base = base.parent
                target = base.joinpath(*(node.module or "").split("."))
                assert any(target.is_relative_to(ROOT / "methods" / d) for d in {own, "_lib"}), \
                    f"{f.relative_to(ROOT)} imports from outside its package: {'.' * node.level}{node.module or ''}"


def test_quick_start_is_two_make_targets_and_ci_runs_the_test_one() -> None:
    """The README's quick start is exactly two commands (reproduce a paper, run the tests), both Makefile
    targets, the reproduce default is an implemented paper, and .ci/run calls the README's test command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]
    assert commands == ["make reproduce", "make test"], commands
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("reproduce", "test"):
        assert f"\n{target}: " in makefile, f"Makefile has no target {target!r}"
    paper = next(line.split("?=", 1)[1].strip() for line in makefile.splitlines() if line.startswith("PAPER"))
    assert mf.load(ROOT / "manifests" / f"{paper}.yaml").status == "implemented"
    assert "dvc repro verify@$(PAPER)" in makefile
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert "make test" in ci, ".ci/run must call the README's test command"
