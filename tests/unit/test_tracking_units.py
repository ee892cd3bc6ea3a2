"""registry.tracking without an MLflow server: what sync thinks is pending, curve downsampling, batch values."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from registry import tracking


def _record(root: Path, **fields) -> Path:
    run = root / "results" / "p" / "smoke" / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps({"per_seed": [], "run_id": "r1", "finished_at": "t1"} | fields))
    return run


def test_pending_follows_the_run_identity_its_finish_time_and_the_store(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _record(tmp_path)
    assert tracking.pending(tmp_path) == [("p", "smoke", False)]  # never logged
    tracking.write_ledger(tmp_path, "p", "smoke", {"logged": True, "run_id": "r1", "finished_at": "t1",
                                                   "tracking_uri": tracking.tracking_uri(tmp_path)})
    assert tracking.pending(tmp_path) == []
    _record(tmp_path, finished_at="t2")  # the same config trained again (e.g. while tracking was down)
    assert tracking.pending(tmp_path) == [("p", "smoke", False)]
    _record(tmp_path, run_id="r2")
    assert tracking.pending(tmp_path) == [("p", "smoke", False)]
    _record(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # logged to another store
    assert tracking.pending(tmp_path) == [("p", "smoke", False)]


def test_downsample_keeps_at_most_the_limit_per_metric_with_both_ends() -> None:
    points = [(name, float(i), i) for i in range(1001) for name in ("a", "b")] + [("c", 1.0, 0), ("c", 2.0, 7)]
    out = tracking.downsample(points, limit=500)
    for name in ("a", "b"):
        steps = [p[2] for p in out if p[0] == name]
        assert len(steps) == 500 and steps[0] == 0 and steps[-1] == 1000 and steps == sorted(steps)
        assert max(b - a for a, b in zip(steps, steps[1:])) <= 3  # evenly spread: 1000 / 499 rounds to 2 or 3
    assert [p for p in out if p[0] == "c"] == [("c", 1.0, 0), ("c", 2.0, 7)]  # short series unchanged


def test_log_batch_sends_non_finite_values_as_nan_in_chunks() -> None:
    calls = []

    class Client:
        def log_batch(self, run_id, metrics=(), params=(), tags=()):
            calls.append((run_id, list(metrics), list(params), list(tags)))

    n = tracking.BATCH_METRICS + 1
    metrics = [("m", float("inf"), 0), ("m", -float("inf"), 1)] + [("m", 1.0, s) for s in range(2, n)]
    tracking.log_batch(Client(), "rid", metrics=metrics, params={"lr": 0.1}, tags={"verdict": "pass"})
    sent = [m for c in calls for m in c[1]]
    assert len(sent) == n and all(len(c[1]) <= tracking.BATCH_METRICS for c in calls)
    assert math.isnan(sent[0].value) and math.isnan(sent[1].value) and sent[2].value == 1.0
    assert [m.step for m in sent] == list(range(n))
    assert [p.value for c in calls for p in c[2]] == ["0.1"] and [t.value for c in calls for t in c[3]] == ["pass"]
