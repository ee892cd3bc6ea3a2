"""seeds_where and non-finite values: a NaN/inf selection metric cannot silently drop its seed, and a NaN among
too few selected seeds is an error (the run diverged), not a plain fail."""
from __future__ import annotations

import pytest

from registry import verify as V
from registry.schema import Claim, Manifest

import zz_support as S

INF, NAN = float("inf"), float("nan")


def selected_claim(min_seeds=1, compare=">=", value=1.0, cid="c") -> Claim:
    return Claim.model_validate({
        "id": cid, "statement": "s", "source": "Table 1", "kind": "scaled", "rationale": "r", "metric": "m",
        "compare": ">=", "target": 0.5, "tolerance": {"abs": 0.0, "rationale": "r"}, "profiles": ["cpu"],
        "seeds_where": {"metric": "fit", "compare": compare, "value": value, "min_seeds": min_seeds,
                        "rationale": "the paper averages only the runs that fit"}})


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("compare", [">=", "<="])
def test_non_finite_selection_metric_is_an_error_not_a_dropped_seed(bad, compare):
    # without the bad seed, the other two pass (selected by either comparison with value 1 / 1.0)
    per_seed = [{"m": 0.9, "fit": 1.0}, {"m": 0.9, "fit": bad}, {"m": 0.9, "fit": 1.0}]
    row = V.judge(selected_claim(compare=compare), per_seed)
    assert row["verdict"] == "error", row
    assert "non-finite metric value" in row["error"] and "fit" in row["error"] and "1 seed" in row["error"]
    text = V.render_text(V.verify(_manifest(selected_claim(compare=compare)), "cpu", per_seed))
    assert "ERROR" in text and "non-finite metric value of fit" in text and "missing" not in text


@pytest.mark.parametrize("bad", [NAN, INF])
def test_too_few_selected_seeds_with_a_non_finite_value_is_an_error(bad):
    per_seed = [{"m": bad, "fit": 1.0}, {"m": 0.9, "fit": 0.0}, {"m": 0.9, "fit": 0.0}]
    row = V.judge(selected_claim(min_seeds=2), per_seed)
    assert row["verdict"] == "error" and "non-finite" in row["error"]
    assert row["selected"]["positions"] == [0]


def test_finite_selection_still_judges_and_fails_as_before():
    per_seed = [{"m": 0.9, "fit": 1.0}, {"m": 0.9, "fit": 0.0}]
    assert V.judge(selected_claim(min_seeds=1), per_seed)["verdict"] == "pass"
    row = V.judge(selected_claim(min_seeds=2), per_seed)
    assert row["verdict"] == "fail" and "only 1 of 2 seeds" in row["note"]
    # a NaN in an unselected seed's claim metric is not judged
    per_seed = [{"m": 0.9, "fit": 1.0}, {"m": NAN, "fit": 0.0}]
    assert V.judge(selected_claim(min_seeds=1), per_seed)["verdict"] == "pass"


def _manifest(c: Claim) -> Manifest:
    import yaml

    data = yaml.safe_load(S.manifest_text("zz-v"))
    data["claims"] = [c.model_dump(exclude_none=True)]
    data["metrics"].append({"name": "m", "description": "m"})
    data["metrics"].append({"name": "fit", "description": "fit"})
    return Manifest.model_validate(data)
