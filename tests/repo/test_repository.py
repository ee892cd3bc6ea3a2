"""The repository itself: every manifest valid, index fresh, catalogue covered, fast commands fast."""
from __future__ import annotations

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
