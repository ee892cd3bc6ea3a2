"""How much does MLflow logging add to a training run?

Trains the same small MLP regression loop (CPU, fixed seeds) twice per repetition:
  * without tracking: curves are only kept in memory by RunContext (what every run does);
  * with tracking: the same, then the registry's MLflow path (`registry.tracking.log_run`):
    a parent run, a child run per seed, every curve point sent with `MlflowClient.log_batch`.
It also times the naive alternative, one `log_metric` call per point, to show why we batch.

    python benchmarks/tracking_overhead.py [--steps 3000] [--repeats 3]

Prints the median overhead in percent and exits 1 when it exceeds --max-overhead (default 5).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_loop(steps: int, seed: int, ctx) -> dict[str, float]:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 32, generator=g)
    y = torch.sin(x @ torch.randn(32, 1, generator=g))
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.GELU(), torch.nn.Linear(256, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        idx = torch.randint(0, 4096, (128,), generator=g)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctx.log(step, train_loss=loss.item(), lr=1e-3)  # every step: the worst case for tracking
    return {"final_loss": float(loss.item())}


def run_once(root: Path, steps: int, seeds: list[int], track: bool) -> tuple[float, float]:
    """Return (training seconds, tracking seconds) for one reproduction written like the runner does."""
    from registry import runner
    from registry.context import RunContext

    rdir = runner.run_dir(root, "bench", "cpu")
    rdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    curves, per_seed = [], []
    for s in seeds:
        ctx = RunContext(paper="bench", profile="cpu", seed=s, device="cpu", out_dir=rdir, show_progress=False)
        per_seed.append({"seed": s, "seconds": 0.0, "metrics": train_loop(steps, s, ctx)})
        curves += ctx.curves
    train_s = time.perf_counter() - t0
    record = {"paper": "bench", "profile": "cpu", "method": "bench", "run_id": f"bench-{time.time_ns()}",
              "device": "cpu", "seeds": seeds, "per_seed": per_seed, "seconds": train_s,
              "config": {"data": {}, "model": {"hidden": 256}, "train": {"steps": steps}},
              "finished_at": str(time.time_ns())}
    (rdir / "metrics.json").write_text(json.dumps(record))
    runner.write_curves_csv(rdir / "curves.csv", curves)
    (rdir / "environment.json").write_text(json.dumps({"git_sha": None}))
    if not track:
        return train_s, 0.0
    from registry import tracking

    t1 = time.perf_counter()
    tracking.log_run(root, "bench", "cpu", "benchmark")
    return train_s, time.perf_counter() - t1


def naive_seconds(root: Path, n_points: int) -> float:
    from registry import tracking

    client = tracking._client(root)
    exp = tracking._experiment(client, root, "bench-naive", None)
    run = client.create_run(exp)
    t0 = time.perf_counter()
    for i in range(n_points):
        client.log_metric(run.info.run_id, "train_loss", 1.0 / (i + 1), step=i)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-overhead", type=float, default=5.0, help="percent")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        import os

        os.environ.pop("MLFLOW_TRACKING_URI", None)
        run_once(root, 50, [0], track=True)  # create the sqlite store and warm imports: a one-off cost
        base, tracked, overhead = [], [], []
        for _ in range(args.repeats):
            t, _ = run_once(root, args.steps, seeds, track=False)
            base.append(t)
            t, log_s = run_once(root, args.steps, seeds, track=True)
            tracked.append(t)
            overhead.append(100.0 * log_s / t)
        n_points = args.steps * 2 * len(seeds)
        naive = naive_seconds(root, 500) / 500 * n_points
    med = statistics.median(overhead)
    print(f"training loop, {len(seeds)} seeds x {args.steps} steps, {n_points} curve points per run")
    print(f"  without tracking: median {statistics.median(base):.2f}s")
    print(f"  with tracking:    median {statistics.median(tracked):.2f}s training "
          f"+ logging overhead {med:.2f}% (runs: {', '.join(f'{o:.2f}%' for o in overhead)})")
    print(f"  one log_metric call per point would take ~{naive:.1f}s ({100 * naive / statistics.median(base):.0f}%)")
    status = "OK" if med < args.max_overhead else "TOO SLOW"
    print(f"{status}: overhead {med:.2f}% (limit {args.max_overhead}%)")
    sys.exit(0 if med < args.max_overhead else 1)


if __name__ == "__main__":
    main()
