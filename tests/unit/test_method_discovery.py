"""A broken method package (missing import, SyntaxError, an error in a submodule) does not break the other
papers: discover() skips it and remembers where it failed; `registry validate` reports it as a located problem
(exit 2, no traceback); asking for a method it registers names the module and its error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import zz_support as S

GOOD_METHOD = (S.HERE / "zz_support.py").read_text().replace('TEST_METHOD = "zz-test-method"', 'TEST_METHOD = "zz-good"')
assert 'TEST_METHOD = "zz-good"' in GOOD_METHOD

BROKEN = {  # package files under methods/ -> text
    "zz_broken/__init__.py": '"""Needs a module that is not installed."""\nimport zz_missing_dependency\n',
    "zz_syntax/__init__.py": '"""A typo."""\n\ndef run(cfg, ctx:\n    return {}\n',
    "zz_broken_sub/__init__.py": ('"""Registers zz-other-key; its submodule raises."""\n'
                                  'from registry.methods import register\nfrom .model import Net\n\n\n'
                                  '# register("zz-other-key", config=...) follows once the model imports\n'),
    "zz_broken_sub/model.py": 'X = 1\nraise RuntimeError("boom at import")\n',
    "zz_exit/__init__.py": '"""Ends the interpreter at import."""\nraise SystemExit(0)\n',
}

DRIVER = r"""
import json, sys
from click.testing import CliRunner
from registry.cli import cli
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli, args)
    out.append({"args": args, "code": r.exit_code, "output": r.output,
                "exc": None if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception)})
from registry import methods
try:
    methods.get("zz-broken")
except methods.MethodImportError as exc:
    out.append({"get": str(exc), "isinstance_unknown": isinstance(exc, methods.UnknownMethodError)})
print(json.dumps({"results": out, "heavy": sorted(m for m in ("torch", "mlflow") if m in sys.modules)}))
"""


def make_root(tmp: Path) -> Path:
    root = tmp / "reg"
    (root / "methods").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'zz-temp-registry'\nversion = '0'\n")
    (root / "methods" / "__init__.py").write_text("")
    (root / "methods" / "zz_good").mkdir()
    (root / "methods" / "zz_good" / "__init__.py").write_text(GOOD_METHOD)
    for rel, text in BROKEN.items():
        (root / "methods" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "methods" / rel).write_text(text)
    for pid, key in (("zz-good", "zz-good"), ("zz-broken", "zz-broken"), ("zz-other", "zz-other-key")):
        text = S.manifest_text(pid).replace("method: zz-test-method", f"method: {key}")
        (root / "manifests").mkdir(exist_ok=True)
        (root / "manifests" / f"{pid}.yaml").write_text(text)
    return root


def drive(root: Path, calls: list[list[str]]) -> dict:
    env = {**os.environ, "REGISTRY_ROOT": str(root)}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(calls)], capture_output=True, text=True,
                          env=env, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_broken_method_packages_are_located_problems_and_other_papers_still_validate(tmp_path):
    root = make_root(tmp_path)
    method_line = S.manifest_text("x").splitlines().index("method: zz-test-method") + 1
    rep = drive(root, [["validate"], ["validate", "manifests/zz-good.yaml"], ["validate", "manifests/zz-broken.yaml"],
                       ["show", "zz-good"], ["show", "zz-broken"], ["show", "zz-other"]])
    assert rep["heavy"] == []
    *results, get = rep["results"]
    for r in results:
        assert r["exc"] is None and "Traceback" not in r["output"], r
    val_all, val_good, val_broken, show_good, show_broken, show_other = results

    out = val_all["output"]
    assert val_all["code"] == 2, out
    assert ("methods/zz_broken/__init__.py:2: method module methods.zz_broken failed to import: "
            "ModuleNotFoundError: No module named 'zz_missing_dependency'") in out
    assert "methods/zz_syntax/__init__.py:3: method module methods.zz_syntax failed to import: SyntaxError: " in out
    assert ("methods/zz_broken_sub/model.py:2: method module methods.zz_broken_sub failed to import: "
            "RuntimeError: boom at import") in out
    assert (f"manifests/zz-broken.yaml:{method_line}: method: method 'zz-broken' is unavailable: its module "
            "methods.zz_broken failed to import (methods/zz_broken/__init__.py:2: ModuleNotFoundError") in out
    assert (f"manifests/zz-other.yaml:{method_line}: method: method 'zz-other-key' is unavailable: its module "
            "methods.zz_broken_sub failed to import (methods/zz_broken_sub/model.py:2: RuntimeError") in out
    assert "zz-good.yaml" not in out and "unknown method" not in out
    assert "methods/zz_exit/__init__.py:2: method module methods.zz_exit failed to import: SystemExit: 0" in out
    assert "6 problems found" in out

    assert val_good["code"] == 0 and "ok: 1 manifest(s) valid" in val_good["output"]
    assert val_broken["code"] == 2 and "is unavailable: its module methods.zz_broken" in val_broken["output"]
    assert show_good["code"] == 0 and "A tiny test paper" in show_good["output"]
    assert show_broken["code"] == 2 and "methods.zz_broken failed to import" in show_broken["output"]
    assert show_other["code"] == 2 and "methods.zz_broken_sub failed to import" in show_other["output"]
    assert get["isinstance_unknown"] and "zz_missing_dependency" in get["get"]


def test_unknown_key_mentions_modules_that_failed(tmp_path):
    root = make_root(tmp_path)
    text = (root / "manifests" / "zz-good.yaml").read_text().replace("method: zz-good", "method: zz-goood")
    (root / "manifests" / "zz-good.yaml").write_text(text)
    val = drive(root, [["validate", "manifests/zz-good.yaml"]])["results"][0]
    assert val["code"] == 2 and "Traceback" not in val["output"]
    assert "unknown method 'zz-goood'. Did you mean 'zz-good'?" in val["output"]
    assert "may be registered by a method module that failed to import: module methods.zz_broken" in val["output"]
