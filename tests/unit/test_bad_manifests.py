"""The broken-manifest corpus: every problem is reported at once, each with its line, field and message.

Each file in tests/bad_manifests/ starts with ``# expect: <line> <field> <substring>`` lines ("-" for no
line / no field; an empty substring matches any message). The file must report exactly those problems.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry import manifest as mf
from registry import methods

import zz_support as S

BAD = sorted(S.BAD_DIR.glob("*.yaml"))

# Known bugs in registry/: the test states the correct behaviour and is expected to fail until fixed.
XFAIL: dict[str, str] = {}  # stem -> reason, for known bugs (strict xfail)


def parse_expect(path: Path) -> list[tuple[int | None, str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# expect:"):
            break
        parts = line[len("# expect:"):].strip().split(" ", 2)
        ln, fld = parts[0], parts[1]
        msg = parts[2] if len(parts) > 2 else ""
        out.append((None if ln == "-" else int(ln), "" if fld == "-" else fld, msg))
    return out


def test_corpus_is_large_and_annotated():
    assert len(BAD) >= 24
    for p in BAD:
        assert parse_expect(p), f"{p.name} has no '# expect:' line"


def test_base_manifests_are_valid(tmp_path):
    """Guard: the corpus is a variation of these, so they must pass every check (methods included)."""
    for pid, base in (("zz-valid-base", S.BASE_IMPLEMENTED), ("zz-valid-catalogued", S.BASE_CATALOGUED)):
        m, problems = mf.check_file(S.write_manifest(tmp_path, pid, base), root=tmp_path)
        assert problems == [] and m is not None and m.id == pid


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[p.stem])]
                                               if p.stem in XFAIL else []) for p in BAD])
def test_bad_manifest(path: Path, capfd):
    expected = parse_expect(path)
    m, problems = mf.check_file(path, root=S.BAD_DIR)
    assert m is None
    got = [(p.line, p.field, p.message) for p in problems]
    assert all(p.file == path.name for p in problems), problems
    unmatched = list(got)
    for line, fld, sub in expected:
        hit = next((g for g in unmatched if g[0] == line and g[1] == fld and sub in g[2]), None)
        assert hit is not None, f"expected {(line, fld, sub)} in:\n" + "\n".join(map(str, got))
        unmatched.remove(hit)
    assert not unmatched, "unexpected extra problems:\n" + "\n".join(map(str, unmatched))
    out, err = capfd.readouterr()
    assert "hi" not in out  # the python-tag file must not have run `echo hi`


def test_python_tag_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f'id: !!python/object/apply:os.system ["touch {marker}"]\n'
                    f'status: !!python/object/new:subprocess.Popen [["touch", "{marker}"]]\n', encoding="utf-8")
    m, problems = mf.check_file(path)
    assert m is None and len(problems) == 1 and "invalid YAML" in problems[0].message
    assert problems[0].line == 1
    assert not marker.exists()


def test_problem_str_has_file_line_field():
    p = mf.Problem("manifests/x.yaml", 7, "claims[0].metric", "boom")
    assert str(p) == "manifests/x.yaml:7: claims[0].metric: boom"
    assert str(mf.Problem("x.yaml", None, "", "boom")) == "x.yaml: boom"
    assert mf.format_loc(("claims", 0, "profiles", 2)) == "claims[0].profiles[2]"


def test_load_raises_with_every_problem():
    with pytest.raises(mf.ManifestError) as exc:
        mf.load(S.BAD_DIR / "missing-cpu-profile.yaml", root=S.BAD_DIR)
    assert len(exc.value.problems) == 3
    assert str(exc.value).count("missing-cpu-profile.yaml:") == 3


def test_discover_still_finds_real_methods():
    import pkgutil

    import methods as methods_pkg

    reg = methods.discover()
    assert reg[S.TEST_METHOD].module == "zz_support"
    for info in pkgutil.iter_modules(methods_pkg.__path__):
        if not info.name.startswith("_"):
            assert f"methods.{info.name}" in sys.modules
    real = {k for k, v in reg.items() if v.module.startswith("methods.")}
    assert real, "discover() registered no method from methods/"
    assert set(methods.all_methods()) == set(reg)


# --------------------------------------------------------------------------- through the real CLI

CLI_CASES = {
    "yaml-syntax-error": "invalid YAML",
    "unknown-nested-field": "claims[0].foo: unknown field",
    "missing-cpu-profile": "missing profile 'cpu'",
    "unknown-method": "Did you mean 'zz-test-method'?",
    "method-unknown-param-in-profile": "profiles.smoke.train.momentum: unknown parameter",
    "python-tag": "invalid YAML",
    "empty-file": "must be a YAML mapping",
}

# The real entry point (registry.cli.main), in a fresh interpreter that first registers the test method.
WRAPPER = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import zz_support; "
           "from registry.cli import main; sys.argv[0] = 'registry'; main()")


def run_cli(args: list[str], root: Path, *, plain: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "registry.cli"] if plain else [sys.executable, "-c", WRAPPER, str(S.HERE)]
    env = {**os.environ, "REGISTRY_ROOT": str(root)}
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=root, timeout=60)


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_validate_bad_file(name, tmp_path):
    path = S.BAD_DIR / f"{name}.yaml"
    proc = run_cli(["validate", str(path)], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert CLI_CASES[name] in out
    for line, fld, _ in parse_expect(path):
        where = f"{path.name}:{line}" if line else path.name
        assert where in out, out
    n = len(parse_expect(path))
    assert f"{n} problem{'s' if n != 1 else ''} found" in out
    assert "hi\n" not in proc.stdout


@pytest.mark.parametrize("name", ["python-tag", "empty-file", "duplicate-key"])
def test_plain_python_m_registry_cli(name, tmp_path):
    path = S.BAD_DIR / f"{name}.yaml"
    proc = run_cli(["validate", str(path)], tmp_path, plain=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    line = parse_expect(path)[0][0]
    assert (f"{path.name}:{line}:" if line else f"{path.name}:") in out


def test_cli_validate_good_file_exits_0(tmp_path):
    path = S.write_manifest(tmp_path, "zz-valid-base")
    proc = run_cli(["validate", str(path)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: 1 manifest(s) valid" in proc.stdout
