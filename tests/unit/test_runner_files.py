"""The runner's file primitives and per-seed assembly, tested directly: atomic writes, swapping run/ in,
merging a seed's parts, checking what a method returns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry import runner


def test_a_failed_atomic_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    real_write = Path.write_text

    def write_half_then_fail(self: Path, text: str, *a, **kw):
        real_write(self, text[: len(text) // 2], *a, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_half_then_fail)
    with pytest.raises(OSError):
        runner.atomic_write_text(target, "new content")
    monkeypatch.undo()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    runner.atomic_write_text(target, "new content")
    assert target.read_text() == "new content" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_replace_dir_swaps_the_new_run_in_and_restores_the_old_one_if_that_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final, tmp = tmp_path / "run", tmp_path / ".run.tmp-1"
    final.mkdir()
    (final / "metrics.json").write_text("old")
    tmp.mkdir()
    (tmp / "metrics.json").write_text("new")
    real_replace = os.replace

    def fail_moving_tmp(src, dst):
        if Path(src) == tmp:
            raise OSError(18, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(runner.os, "replace", fail_moving_tmp)
    with pytest.raises(OSError):
        runner.replace_dir(tmp, final)
    monkeypatch.undo()
    assert (final / "metrics.json").read_text() == "old" and (tmp / "metrics.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.tmp-1", "run"]
    runner.replace_dir(tmp, final)
    assert (final / "metrics.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_seed_made_of_parts_sums_their_seconds_and_keeps_every_parts_curves() -> None:
    outs = [{"part": "a", "seconds": 1.5, "peak_memory_mb": 300.5, "metrics": {"x": 1.0},
             "curves": [(3, 0, "a_loss", 2.0)]},
            {"part": "b", "seconds": 2.25, "peak_memory_mb": 120.0, "metrics": {"y": 2.0},
             "curves": [(3, 0, "b_loss", 1.0), (3, 5, "b_loss", 0.5)]}]
    per_seed: list = []
    curves: list = []
    runner._add_seed("k", 3, outs, per_seed, curves)
    assert per_seed == [{"seed": 3, "seconds": 3.75, "peak_memory_mb": 300.5, "metrics": {"x": 1.0, "y": 2.0}}]
    assert curves == [(3, 0, "a_loss", 2.0), (3, 0, "b_loss", 1.0), (3, 5, "b_loss", 0.5)]
    del outs[1]["peak_memory_mb"]  # a part kept by a version that did not record memory: the seed's is unknown
    runner._add_seed("k", 4, outs, per_seed, [])
    assert per_seed[1]["peak_memory_mb"] is None


def test_peak_memory_is_the_processes_resident_peak_on_cpu() -> None:
    """In a fresh process: touching 256 MiB raises the recorded peak by about that much, freeing it does not
    lower it, and a reset (the start of each seed or part) does."""
    code = ("from registry import runner; runner.reset_peak_memory('cpu'); a = runner.peak_memory_mb('cpu'); "
            "b = bytearray(256 * 2**20); b[::4096] = b'x' * len(b[::4096]); del b; c = runner.peak_memory_mb('cpu'); "
            "runner.reset_peak_memory('cpu'); print(a, c, runner.peak_memory_mb('cpu'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    before, after, reset = map(float, proc.stdout.split())
    assert 0 < before and 240 <= after - before <= 280
    assert reset < after - 200


@pytest.mark.parametrize("bad", ["high", None, [1.0], {"v": 1}])
def test_a_metric_that_is_not_a_number_is_an_error_naming_it(bad) -> None:
    with pytest.raises(runner.RunError, match="non-numeric metric 'acc'"):
        runner._check_metrics("m", 0, {"loss": 0.5, "acc": bad})
    assert runner._check_metrics("m", 0, {"acc": 1, "n": True}) == {"acc": 1.0, "n": 1.0}
    with pytest.raises(runner.RunError, match="expected a mapping"):
        runner._check_metrics("m", 0, [("acc", 1.0)])


def test_an_unreadable_kept_seed_is_skipped_so_the_rerun_trains_it_again(tmp_path: Path) -> None:
    good = {"seed": 1, "part": None, "seconds": 0.5, "metrics": {"acc": 1.0}, "curves": [[1, 0, "loss", 2.0]],
            "files": [], "threads": 1}
    (tmp_path / "seed-1.json").write_text(json.dumps(good))
    (tmp_path / "seed-0.json").write_text('{"seed": 0, "part": null, "metr')  # cut short by a full disk
    (tmp_path / "seed-2.json").write_text(json.dumps({"seed": 2}))  # no curves
    units = runner._load_units(tmp_path)
    assert list(units) == [(1, None)] and units[(1, None)]["curves"] == [(1, 0, "loss", 2.0)]
