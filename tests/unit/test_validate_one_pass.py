"""`registry validate` reports every problem of a file in one pass: a schema error in one field does not hide the
claim/metric cross-checks or the method-config check of the fields that are well-formed (the corpus files
problems-of-every-stage.yaml and problems-next-to-malformed-parts.yaml hold the located expectations)."""
from __future__ import annotations

from registry import manifest as mf

import zz_support as S
from test_bad_manifests import parse_expect, run_cli


def check(tmp_path, text: str, pid: str = "zz-one-pass"):
    path = tmp_path / f"{pid}.yaml"
    path.write_text(text, encoding="utf-8")
    m, problems = mf.check_file(path, root=tmp_path)
    assert m is None
    return {(p.field, p.message.split(" [profile")[0]) for p in problems}, problems


def test_cli_reports_schema_claim_and_method_problems_at_once(tmp_path):
    path = S.BAD_DIR / "problems-of-every-stage.yaml"
    proc = run_cli(["validate", str(path)], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    for line, fld, msg in parse_expect(path):
        assert f"{path.name}:{line}: {fld}: " in out and msg in out
    assert "3 problems found" in out


def test_unknown_method_with_schema_and_claim_errors(tmp_path):
    text = (S.manifest_text("zz-one-pass").replace("method: zz-test-method", "method: zz-test-methd")
            .replace("  year: 2020\n", "  year: soon\n").replace("    metric: acc\n    compare", "    metric: ac\n    compare"))
    got, _ = check(tmp_path, text)
    assert {f for f, _ in got} == {"paper.year", "method", "claims[0].metric"}, got
    assert ("claims[0].metric", "metric 'ac' is not declared in 'metrics'") in got


def test_malformed_claim_does_not_hide_the_others(tmp_path):
    text = (S.manifest_text("zz-one-pass").replace("    source: Table 1\n", "    source: Table 1\n    weight: 2\n")
            .replace("    profiles: [smoke, cpu]\n", "    profiles: [smoke, gpu]\n"))
    got, _ = check(tmp_path, text)
    assert got == {("claims[0].weight", "unknown field (not in the schema)"),
                   ("claims[1].profiles[1]", "profile 'gpu' is not defined in 'profiles'")}, got


def test_method_config_checked_when_only_seeds_are_wrong(tmp_path):
    text = (S.manifest_text("zz-one-pass").replace("  seeds: [0, 1, 2]\n", "  seeds: [0, 0]\n")
            .replace("  lr: 0.1\n", "  lr: 0.1\n  momentum: 0.9\n"))
    got, _ = check(tmp_path, text)
    assert got == {("train.seeds", "Value error, seeds must be unique"),
                   ("train.momentum", "unknown parameter for method 'zz-test-method'")}, got


def test_catalogued_paper_with_schema_error_still_gets_its_claim_checks(tmp_path):
    text = (S.manifest_text("zz-one-pass", S.BASE_CATALOGUED).replace("  year: 1950\n", "  year: 1900\n")
            .replace("    rationale: Catalogued only.\n", "    rationale: Catalogued only.\n    metric: acc\n"))
    got, _ = check(tmp_path, text)
    fields = {f for f, _ in got}
    assert "paper.year" in fields and "claims[0].metric" in fields, got
    assert any(m.startswith("a catalogued paper has no method") for f, m in got if f == "claims[0].metric")


def test_a_bad_status_skips_the_checks_that_depend_on_it(tmp_path):
    text = S.manifest_text("zz-one-pass").replace("status: implemented", "status: done").replace("method: zz-test-method\n", "")
    got, _ = check(tmp_path, text)
    assert {f for f, _ in got} == {"status"}, got  # not also "an implemented paper needs 'method'"


def test_id_mismatch_next_to_a_schema_error(tmp_path):
    text = S.manifest_text("zz-other-id").replace("  year: 2020\n", "  year: soon\n")
    got, _ = check(tmp_path, text)
    assert {f for f, _ in got} == {"paper.year", "id"}, got


def test_a_malformed_metrics_entry_does_not_make_claims_undeclared(tmp_path):
    text = S.manifest_text("zz-one-pass").replace("  - name: acc\n", "  - name: 123\n")
    got, _ = check(tmp_path, text)
    assert not any("is not declared" in msg for _, msg in got), got
    assert any(f.startswith("metrics[0]") for f, _ in got), got
