"""What a method sees while it trains: seeds, device, a curve logger and a progress bar.

Methods never talk to MLflow; they call ``ctx.log(step, **metrics)`` and return final
metrics. The runner buffers the curves, writes them to disk and ships them in batches.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunContext:
    paper: str
    profile: str
    seed: int
    device: str  # "cpu" or "cuda"
    out_dir: Path
    show_progress: bool = True
    part: str | None = None  # the declared part of the seed to compute (the runner always sets it for such methods)
    curves: list[tuple[int, int, str, float]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # names written by write_json: kept with a resumed seed/part

    def seed_for(self, purpose: str) -> int:
        """A seed derived from the run seed and a purpose, e.g. ``"train-data"``.

        ``"eval"`` is special: evaluation data uses one fixed seed shared by every
        training seed (``seed_for("eval")`` does not depend on ``self.seed``), so that
        seeds differ in training only and are compared on the same test set.
        """
        base = "eval" if purpose == "eval" else f"{self.seed}:{purpose}"
        digest = hashlib.sha256(f"{self.paper}:{base}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def runs(self, part: str) -> bool:
        """Whether this call computes ``part`` (every part when the runner did not split the seed)."""
        return self.part is None or self.part == part

    def write_json(self, name: str, obj) -> None:
        """Write ``obj`` as ``out_dir/name`` (a small artifact of this seed, e.g. decoded samples).
        Parts of one seed share ``out_dir``, so each part must use its own file names. The runner keeps a
        finished seed's (or part's) files with its numbers when a run is resumed, and only files written here
        are known to be its own: write every file of a seed through this method."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / name).write_text(json.dumps(obj, indent=1), encoding="utf-8")
        if name not in self.files:
            self.files.append(name)

    def log(self, step: int, **metrics: float) -> None:
        """Record per-step values (loss curves, eval curves). Non-finite values are kept as NaN."""
        for name, value in metrics.items():
            v = float(value)
            self.curves.append((self.seed, int(step), name, v if math.isfinite(v) else float("nan")))

    def progress(self, total: int, desc: str) -> "Progress":
        return Progress(total=total, desc=f"{self.paper}[seed {self.seed}] {desc}", enabled=self.show_progress)


class Progress:
    """A thin tqdm wrapper that disappears when disabled or when stderr is not a terminal."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, **postfix: float) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
