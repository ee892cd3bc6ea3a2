"""Tolerance maths, statistics, paired baselines, error verdicts and the t-interval of registry.verify."""
from __future__ import annotations

import math

import pytest

from registry import verify as V
from registry.schema import Claim, Manifest

import zz_support as S


def claim(compare=">=", target=1.0, abs_=0.0, rel=0.0, kind="scaled", statistic="mean", baseline=None,
          profiles=("cpu",), cid="c", metric="m") -> Claim:
    d = {"id": cid, "statement": "s", "source": "Table 1", "kind": kind, "metric": metric, "compare": compare,
         "statistic": statistic, "tolerance": {"abs": abs_, "rel": rel, "rationale": "r"}, "profiles": list(profiles)}
    if baseline:
        d["baseline"] = baseline
    if kind == "paper":
        d["reported"] = {"value": target}
    else:
        d["target"] = target
        d["rationale"] = "r"
    return Claim.model_validate(d)


def seeds(*values, name="m"):
    return [{name: v} for v in values]


# --------------------------------------------------------------------------- compare / width

@pytest.mark.parametrize("value,op,thr,w,ok", [
    (0.75, ">=", 1.0, 0.25, True),      # exactly at T - w (binary-exact numbers)
    (0.7499, ">=", 1.0, 0.25, False),
    (5.0, ">=", 1.0, 0.0, True),
    (1.25, "<=", 1.0, 0.25, True),      # exactly at T + w
    (1.2501, "<=", 1.0, 0.25, False),
    (-9.0, "<=", 1.0, 0.0, True),
    (1.25, "within", 1.0, 0.25, True),  # both edges of the band
    (0.75, "within", 1.0, 0.25, True),
    (1.2501, "within", 1.0, 0.25, False),
    (0.7499, "within", 1.0, 0.25, False),
    (1.0, "within", 1.0, 0.0, True),
    (float("nan"), "<=", 1.0, 10.0, False),
    (float("inf"), ">=", 1.0, 0.0, False),
    (float("-inf"), "<=", 1.0, 0.0, False),
])
def test_compare(value, op, thr, w, ok):
    assert V.compare(value, op, thr, w) is ok


def test_compare_unknown_operator():
    with pytest.raises(ValueError):
        V.compare(1.0, ">", 0.0, 0.0)


def test_tolerance_width_abs_plus_rel_of_abs_target():
    c = claim(target=-2.0, abs_=0.5, rel=0.25)
    assert c.tolerance.width(-2.0) == 1.0
    row = V.judge(c, seeds(-3.0))          # >= -2 - 1 = -3: exactly at the edge
    assert row["tolerance"] == 1.0 and row["threshold"] == -2.0 and row["verdict"] == "pass"
    assert V.judge(c, seeds(-3.0625))["verdict"] == "fail"


@pytest.mark.parametrize("op,measured,verdict", [
    ("within", 110.0, "pass"), ("within", 90.0, "pass"), ("within", 110.5, "fail"), ("within", 89.5, "fail"),
    ("<=", 110.0, "pass"), ("<=", 110.5, "fail"), (">=", 90.0, "pass"), (">=", 89.5, "fail"),
])
def test_relative_tolerance_on_paper_claim(op, measured, verdict):
    c = claim(compare=op, kind="paper", target=100.0, rel=0.1)   # threshold comes from reported.value
    row = V.judge(c, seeds(measured))
    assert row["threshold"] == 100.0 and row["tolerance"] == pytest.approx(10.0)
    assert row["verdict"] == verdict


def test_mean_over_seeds_decides():
    c = claim(">=", target=1.0)
    assert V.judge(c, seeds(0.5, 1.5))["verdict"] == "pass"      # mean 1.0
    assert V.judge(c, seeds(0.5, 1.25))["verdict"] == "fail"     # mean 0.875


@pytest.mark.parametrize("stat,expected", [("mean", 13 / 3), ("median", 2.0), ("min", 1.0), ("max", 10.0)])
def test_statistic(stat, expected):
    c = claim("within", target=expected, statistic=stat)
    row = V.judge(c, seeds(10.0, 1.0, 2.0))
    assert row["value"] == pytest.approx(expected)
    assert row["verdict"] == "pass"
    assert row["measured"]["per_seed"] == [10.0, 1.0, 2.0] and row["measured"]["n"] == 3


def test_median_of_an_even_number_of_seeds_is_the_mean_of_the_middle_two():
    c = claim(">=", 2.6, statistic="median")
    row = V.judge(c, seeds(10.0, 1.0, 3.0, 2.0))
    assert row["value"] == pytest.approx(2.5) and row["verdict"] == "fail"
    assert V.judge(claim(">=", 2.5, statistic="median"), seeds(10.0, 1.0, 3.0, 2.0))["verdict"] == "pass"


def test_statistic_changes_verdict():
    vals = seeds(0.0, 0.0, 3.0)  # mean 1, median 0, min 0, max 3
    assert V.judge(claim(">=", 1.0, statistic="mean"), vals)["verdict"] == "pass"
    assert V.judge(claim(">=", 1.0, statistic="median"), vals)["verdict"] == "fail"
    assert V.judge(claim(">=", 1.0, statistic="max"), vals)["verdict"] == "pass"
    assert V.judge(claim(">=", 1.0, statistic="min"), vals)["verdict"] == "fail"


def test_baseline_difference_is_paired_per_seed():
    per_seed = [{"m": 1.0, "b": 0.0}, {"m": 3.0, "b": 3.0}, {"m": 10.0, "b": 9.0}]
    # per-seed differences 1, 0, 1 -> min 0; unpaired min(m) - min(b) would be 1 - 0 = 1
    row = V.judge(claim(">=", 1.0, statistic="min", baseline="b"), per_seed)
    assert row["measured"]["per_seed"] == [1.0, 0.0, 1.0]
    assert row["value"] == 0.0 and row["verdict"] == "fail"
    # max of differences is 1; unpaired max(m) - max(b) = 1 too, median differs: paired 1, unpaired 3 - 3 = 0
    row = V.judge(claim("within", 1.0, statistic="median", baseline="b"), per_seed)
    assert row["value"] == 1.0 and row["verdict"] == "pass"


def test_missing_metric_or_baseline_is_error():
    row = V.judge(claim(), [{"m": 1.0}, {"other": 1.0}])
    assert row["verdict"] == "error" and row["measured"] is None and "missing in 1 seed" in row["error"]
    row = V.judge(claim(baseline="b"), [{"m": 1.0, "b": 0.0}, {"m": 1.0}])
    assert row["verdict"] == "error" and "b" in row["error"]
    row = V.judge(claim(), [])
    assert row["verdict"] == "error"



def selected_claim(min_seeds=1, compare=">=", value=1.0, **kw) -> Claim:
    c = claim(**kw).model_dump()
    c["seeds_where"] = {"metric": "fit", "compare": compare, "value": value, "min_seeds": min_seeds,
                        "rationale": "the paper averages only the runs that fit"}
    return Claim.model_validate(c)


def test_seeds_where_judges_only_the_selected_seeds():
    per_seed = [{"m": 0.99, "fit": 1.0}, {"m": 0.04, "fit": 0.0}, {"m": 0.97, "fit": 1.0}]
    assert V.judge(claim(">=", 0.8), per_seed)["verdict"] == "fail"  # mean over all three: 0.667
    row = V.judge(selected_claim(min_seeds=2, target=0.8), per_seed)
    assert row["verdict"] == "pass" and row["measured"]["per_seed"] == [0.99, 0.97]
    assert row["value"] == pytest.approx(0.98) and row["selected"]["positions"] == [0, 2] and row["selected"]["of"] == 3
    assert "[n=2 of 3]" in V._cells(row)[5]
    # "<=" conditions select the other way
    c = selected_claim(compare="<=", value=0.0).model_dump()
    row = V.judge(Claim.model_validate({**c, "compare": "<=", "target": 0.05}), per_seed)
    assert row["verdict"] == "pass" and row["measured"]["per_seed"] == [0.04]


def test_seeds_where_uses_its_own_operator_and_no_tolerance():
    """The selection condition is judged with its own comparison and exactly (no tolerance), whatever the claim's
    comparison and tolerance are."""
    per_seed = [{"m": 0.9, "fit": 0.0}, {"m": 0.1, "fit": 1.0}, {"m": 0.2, "fit": 0.5}]
    row = V.judge(selected_claim(compare="<=", value=0.0, target=0.8), per_seed)  # claim >=, selection <=
    assert row["selected"]["positions"] == [0] and row["verdict"] == "pass"
    c = selected_claim(compare=">=", value=1.0).model_dump()
    row = V.judge(Claim.model_validate({**c, "compare": "<=", "target": 0.15}), per_seed)  # claim <=, selection >=
    assert row["selected"]["positions"] == [1] and row["verdict"] == "pass"
    # a wide claim tolerance does not widen the selection: fit 0.5 is not >= 1
    row = V.judge(selected_claim(compare=">=", value=1.0, target=0.8, abs_=0.75), per_seed)
    assert row["selected"]["positions"] == [1] and row["value"] == pytest.approx(0.1)


def test_seeds_where_with_too_few_selected_seeds_fails_with_a_note():
    per_seed = [{"m": 0.99, "fit": 1.0}, {"m": 0.04, "fit": 0.0}, {"m": 0.97, "fit": 0.0}]
    row = V.judge(selected_claim(min_seeds=2, target=0.8), per_seed)
    assert row["verdict"] == "fail" and "only 1 of 3 seeds" in row["note"] and "needs 2" in row["note"]
    assert "value" not in row and row["measured"]["per_seed"] == [0.99]
    row = V.judge(selected_claim(target=0.8), [{"m": 0.5, "fit": 0.0}])
    assert row["verdict"] == "fail" and row["measured"] is None
    m = manifest([selected_claim(min_seeds=2, target=0.8, cid="a")])
    text = V.render_text(V.verify(m, "cpu", per_seed))
    assert "[n=1 of 3]" in text and "a: only 1 of 3 seeds meet fit >= 1; the claim needs 2" in text
    assert "judged on seeds with fit >= 1 (at least 2)" in V.render_markdown(V.verify(m, "cpu", per_seed))


def test_seeds_where_metric_missing_is_error():
    row = V.judge(selected_claim(), [{"m": 1.0, "fit": 1.0}, {"m": 1.0}])
    assert row["verdict"] == "error" and "fit" in row["error"] and "missing in 1 seed" in row["error"]
    assert V.judge(selected_claim(), [])["verdict"] == "error"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_single_seed_is_error(bad):
    row = V.judge(claim("<=", target=100.0, abs_=1e9), seeds(bad))
    assert row["verdict"] == "error" and "non-finite" in row["error"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_is_error_even_if_statistic_would_pass(bad):
    # the median of [1, 2, bad] would pass; any non-finite seed must still be an error verdict, not a crash
    row = V.judge(claim("<=", target=100.0, abs_=1e9, statistic="median"), seeds(1.0, 2.0, bad))
    assert row["verdict"] == "error" and "non-finite" in row["error"]


def test_verify_survives_nan_in_unclaimed_metric():
    m = manifest([claim(">=", 1.0, cid="a")])
    r = V.verify(m, "cpu", [{"m": 2.0, "loss": float("nan")}, {"m": 2.0, "loss": 1.0}])
    assert r["verdict"] == "pass"


# --------------------------------------------------------------------------- summary / t-interval

def test_t95_table():
    assert V.t95(1) == 12.706 and V.t95(4) == 2.776 and V.t95(30) == 2.042
    # beyond the table: the t quantile itself (scipy.stats.t.ppf(0.975, df)), not the normal one
    for df, q in ((31, 2.039513), (40, 2.021075), (60, 2.000298), (120, 1.979930), (1000, 1.962339)):
        assert abs(V.t95(df) - q) < 1e-5, df
    assert math.isnan(V.t95(0))
    vals = [V.t95(df) for df in range(1, 40)]
    assert vals == sorted(vals, reverse=True)  # quantiles shrink with df


def test_ci_n2_by_hand():
    s = V.summarize([1.0, 3.0])
    # mean 2, sample std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2); ci = 12.706 * sqrt(2) / sqrt(2) = 12.706
    assert s.mean == 2.0 and s.std == pytest.approx(math.sqrt(2))
    assert s.ci95 == pytest.approx(12.706)


def test_ci_n5_by_hand():
    s = V.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    # sample variance 10/4 = 2.5; ci = 2.776 * sqrt(2.5) / sqrt(5) = 2.776 * sqrt(0.5) = 1.962928...
    assert s.std == pytest.approx(math.sqrt(2.5))
    assert s.ci95 == pytest.approx(1.9629, abs=1e-4)
    assert (s.median, s.min, s.max, s.n) == (3.0, 1.0, 5.0, 5)


def test_single_seed_summary():
    s = V.summarize([4.0])
    assert s.std == 0.0 and math.isnan(s.ci95) and s.mean == 4.0
    with pytest.raises(ValueError):
        V.summarize([])


# --------------------------------------------------------------------------- whole-manifest verdicts

def manifest(claims) -> Manifest:
    base = Manifest.model_validate({
        "id": "zz-verify", "status": "implemented", "method": S.TEST_METHOD,
        "paper": {"title": "t", "authors": ["a"], "year": 2020, "venue": "v"},
        "train": {"seeds": [0, 1]}, "claims": [c.model_dump() for c in claims]})
    return base


def test_overall_verdicts():
    m = manifest([claim(">=", 1.0, cid="a", profiles=["cpu"]), claim("<=", 5.0, cid="b", profiles=["cpu", "paper"]),
                  claim(">=", 0.0, cid="c", profiles=["smoke"])])
    r = V.verify(m, "cpu", seeds(2.0, 4.0))
    assert (r["verdict"], r["passed"], r["failed"], r["errors"], r["total"]) == ("pass", 2, 0, 0, 2)
    assert r["skipped"] == ["c"] and [c["id"] for c in r["claims"]] == ["a", "b"]
    assert r["metrics"]["m"]["mean"] == 3.0 and r["metrics"]["m"]["n"] == 2

    r = V.verify(m, "cpu", seeds(2.0, 10.0))           # b fails (mean 6 > 5)
    assert (r["verdict"], r["passed"], r["failed"]) == ("fail", 1, 1)

    r = V.verify(m, "cpu", [{"m": 2.0}, {"x": 1.0}])  # missing metric: errors count as failing
    assert r["verdict"] == "fail" and r["errors"] == 2 and r["passed"] == 0

    r = V.verify(m, "nonexistent", seeds(1.0))
    assert r["verdict"] == "no-claims" and r["total"] == 0
    assert "no claims are checked" in V.summary_line(r)


def test_unchecked_claims_are_ignored():
    unchecked = Claim.model_validate({"id": "q", "statement": "s", "source": "x", "kind": "qualitative",
                                      "rationale": "r"})
    m = manifest([unchecked, claim(cid="a")])
    r = V.verify(m, "cpu", seeds(1.0))
    assert [c["id"] for c in r["claims"]] == ["a"] and r["skipped"] == []


def test_renderers_show_verdicts():
    m = manifest([claim(">=", 1.0, cid="a"), claim("<=", 0.0, cid="b")])
    r = V.verify(m, "cpu", [{"m": 2.0}, {"m": 2.5}])
    text = V.render_text(r)
    # two seeds: t(1) = 12.706 makes the interval [-0.93, 5.43], across both thresholds
    assert "PASS" in text and "FAIL" in text and "verdict: FAIL (1/2 claims passed; 2 verdicts within seed noise)" in text
    md = V.render_markdown(r)
    assert md.count("\n| a |") == 1 and "**verdict: FAIL (1/2 claims passed; 2 verdicts within seed noise)**" in md
    r = V.verify(m, "cpu", [{"m": float("nan")}])
    assert "ERROR" in V.render_text(r) and "non-finite" in V.render_text(r)


def test_setup_checks_are_counted_apart_and_a_failing_one_fails_the_verdict():
    """A ``kind: setup`` check (no trained model enters it) is not a reproduced claim: it stays out of
    passed/total, is counted in ``setup_checks``, and the run fails when it fails, with every claim passing."""
    m = manifest([claim(">=", 1.0, cid="a"), claim(">=", 0.0, cid="s", kind="setup", metric="b")])
    r = V.verify(m, "cpu", [{"m": 2.0, "b": 1.0}, {"m": 3.0, "b": 1.0}])
    assert (r["verdict"], r["passed"], r["failed"], r["total"]) == ("pass", 1, 0, 1)
    assert r["setup_checks"] == {"passed": 1, "total": 1} and [c["kind"] for c in r["claims"]] == ["scaled", "setup"]
    assert "verdict: PASS (1/1 claims passed; 1 verdict within seed noise; 1/1 setup checks passed)" in V.render_text(r)

    r = V.verify(m, "cpu", [{"m": 2.0, "b": -1.0}, {"m": 3.0, "b": -1.0}])  # the setup check fails
    assert (r["verdict"], r["passed"], r["failed"], r["total"]) == ("fail", 1, 0, 1)
    assert r["setup_checks"] == {"passed": 0, "total": 1}
    assert "verdict: FAIL (1/1 claims passed; 1 verdict within seed noise; 0/1 setup checks passed)" in V.render_markdown(r)

    r = V.verify(m, "cpu", [{"m": 2.0}, {"m": 3.0}])  # its metric missing: an error, which fails too
    assert r["verdict"] == "fail" and r["errors"] == 0 and r["setup_checks"] == {"passed": 0, "total": 1}

    r = V.verify(manifest([claim(">=", 1.0, cid="a")]), "cpu", seeds(2.0))  # no setup check: no key, no text
    assert "setup_checks" not in r and "setup" not in V.summary_line(r)


def test_setup_check_with_a_reported_value_is_rejected(tmp_path):
    """A setup check states no number of the paper: one carrying reported.value is a located manifest problem."""
    from registry import manifest as mf

    old = "    kind: scaled\n    rationale: Scaled-down run, exact threshold.\n"
    text = S.manifest_text("zz-setup")
    assert old in text
    path = tmp_path / "zz-setup.yaml"
    path.write_text(text.replace(old, old.replace("scaled", "setup")), encoding="utf-8")
    m, problems = mf.check_file(path, root=tmp_path)
    assert m is not None and problems == []  # a setup check as such is valid
    bad = text.replace(old, old.replace("scaled", "setup") + "    reported: {value: 0.0}\n")
    path.write_text(bad, encoding="utf-8")
    line = bad.splitlines().index("    reported: {value: 0.0}") + 1
    m, problems = mf.check_file(path, root=tmp_path)
    assert m is None and [(p.field, p.line) for p in problems] == [("claims[1].reported", line)], problems
    assert "'setup' check" in problems[0].message


def test_report_cell_shows_setup_checks_apart():
    from registry.report import verdict_cell

    assert verdict_cell({"verdict": "pass", "passed": 7, "total": 7}) == "pass 7/7"
    assert verdict_cell({"verdict": "fail", "passed": 7, "total": 7,
                         "setup_checks": {"passed": 0, "total": 1}}) == "fail 7/7 (setup 0/1)"


# --------------------------------------------------------------------------- seed noise

@pytest.mark.parametrize("mean,ci,op,thr,w,crosses", [
    (2.0, 0.5, ">=", 1.0, 0.0, False),     # [1.5, 2.5] all passes
    (2.0, 1.5, ">=", 1.0, 0.0, True),      # [0.5, 3.5]: a pass judged within noise
    (0.5, 1.0, ">=", 1.0, 0.0, True),      # a fail that more seeds could turn over
    (0.0, 0.5, ">=", 1.0, 0.0, False),     # a clear fail
    (1.5, 0.5, ">=", 1.0, 0.0, False),     # lower end exactly at the boundary counts as passing, like compare
    (1.8, 0.2, ">=", 2.0, 0.5, False),     # [1.6, 2.0]: clear of T - w = 1.5 (it would cross T itself)
    (1.8, 0.4, ">=", 2.0, 0.5, True),      # [1.4, 2.2] across T - w
    (1.0, 0.25, "<=", 1.0, 0.5, False),    # [0.75, 1.25] <= 1.5
    (1.25, 0.5, "<=", 1.0, 0.5, True),     # [0.75, 1.75] across 1.5
    (1.0, 0.1, "within", 1.0, 0.2, False), # inside the band
    (1.0, 0.3, "within", 1.0, 0.2, True),  # the interval holds the band: crosses both edges
    (1.5, 0.2, "within", 1.0, 0.2, False), # entirely above the band: a clear fail
    (1.3, 0.2, "within", 1.0, 0.2, True),  # across the upper edge
])
def test_ci_crosses(mean, ci, op, thr, w, crosses):
    assert V.ci_crosses(mean, ci, op, thr, w) is crosses


def test_judge_flags_a_mean_verdict_within_noise_and_leaves_it_standing():
    c = claim(">=", target=1.0)
    row = V.judge(c, seeds(0.9, 1.5, 2.1))           # mean 1.5, ci 2.776 * 0.6 / sqrt(3) = 1.49: reaches below 1
    assert row["verdict"] == "pass" and row["within_noise"] is True
    row = V.judge(c, seeds(1.9, 2.0, 2.1))           # ci 0.25: clear
    assert row["verdict"] == "pass" and row["within_noise"] is False
    row = V.judge(c, seeds(0.0, 0.5, 1.3))           # mean 0.6 fails; ci 1.63 reaches above 1
    assert row["verdict"] == "fail" and row["within_noise"] is True
    row = V.judge(claim(">=", target=0.5, baseline="b"),  # paired differences 1.0, 1.1, 1.2: clear, though
                  [{"m": 1.0, "b": 0.0}, {"m": 5.1, "b": 4.0}, {"m": 9.2, "b": 8.0}])  # m alone varies widely
    assert row["verdict"] == "pass" and row["within_noise"] is False


@pytest.mark.parametrize("statistic", ["median", "min", "max"])
def test_no_noise_flag_off_the_mean_or_for_one_seed(statistic):
    assert "within_noise" not in V.judge(claim(">=", target=1.0, statistic=statistic), seeds(0.9, 1.5, 2.1))
    assert "within_noise" not in V.judge(claim(">=", target=1.0), seeds(1.5))
    assert "within_noise" not in V.judge(claim(">=", target=1.0), seeds(1.5, float("nan")))  # an error verdict


def test_noise_is_counted_and_shown_by_every_renderer():
    from registry.report import verdict_cell

    m = manifest([claim(">=", 1.0, cid="a"), claim("<=", 3.0, cid="b"), claim(">=", 0.0, cid="c", kind="setup")])
    r = V.verify(m, "cpu", seeds(0.9, 1.5, 2.1))     # a: within noise; b: clear pass (ci reaches 2.99); c: clear
    assert [row.get("within_noise") for row in r["claims"]] == [True, False, False] and r["within_noise"] == 1
    text, md = V.render_text(r), V.render_markdown(r)
    assert "verdict: PASS (2/2 claims passed; 1 verdict within seed noise; 1/1 setup checks passed)" in text
    assert "PASS (within noise)" in text and "note: within noise: the 95% interval" in text
    assert "| a | scaled | m | - | >= 1 | 1.5 ± 1.491 [n=3] | PASS (within noise) |" in md
    assert "| b | scaled | m | - | <= 3 | 1.5 ± 1.491 [n=3] | PASS |" in md and md.count("(within noise)") == 1 and "Note: within noise:" in md
    assert verdict_cell(r) == "pass 2/2 (1 within noise) (setup 1/1)"
    clear = V.verify(m, "cpu", seeds(1.9, 2.0, 2.1))
    assert clear["within_noise"] == 0 and "noise" not in V.render_text(clear) + V.render_markdown(clear)
    assert verdict_cell(clear) == "pass 2/2 (setup 1/1)"
    assert verdict_cell({"verdict": "fail", "passed": 1, "total": 2}) == "fail 1/2"  # written before the count existed
