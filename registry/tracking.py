"""MLflow logging of finished runs. Everything is read back from ``results/``, so nothing is lost
when tracking is down: the ledger ``results/<paper>/<profile>/tracking.json`` records what reached
MLflow, and ``registry sync`` sends whatever did not.

One experiment per paper; one parent run per reproduction (paper x profile x run identity) and a
child run per seed. Metrics go out in batches through ``MlflowClient.log_batch``.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .runner import atomic_write_text, read_curves_csv, results_dir, run_dir

MAX_CURVE_POINTS = 500  # per (seed, metric) series sent to MLflow; curves.csv (an artifact) keeps every point
BATCH_METRICS = 1000  # MLflow's per-call limits
BATCH_PARAMS = 100
BATCH_TAGS = 100
PARAM_MAX = 500


class TrackingError(Exception):
    pass


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def _default_store(root: Path) -> bool:
    return "MLFLOW_TRACKING_URI" not in os.environ


def ledger_path(root: Path, paper: str, profile: str) -> Path:
    return results_dir(root, paper, profile) / "tracking.json"


def read_ledger(root: Path, paper: str, profile: str) -> dict[str, Any]:
    p = ledger_path(root, paper, profile)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_ledger(root: Path, paper: str, profile: str, data: dict[str, Any]) -> None:
    atomic_write_text(ledger_path(root, paper, profile), json.dumps(data, indent=2) + "\n")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _client(root: Path):
    import logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings from an offline lab machine
    import mlflow

    for name in ("mlflow", "alembic"):  # schema-migration chatter on a new store
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment(client, root: Path, paper: str, title: str | None) -> str:
    exp = client.get_experiment_by_name(paper)
    if exp is not None:
        return exp.experiment_id
    kwargs = {}
    if _default_store(root):
        kwargs["artifact_location"] = (root / "mlartifacts" / paper).resolve().as_uri()
    tags = {"paper.title": title} if title else None
    return client.create_experiment(paper, tags=tags, **kwargs)


def log_batch(client, run_id: str, metrics: Iterable[tuple[str, float, int]] = (), params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    ts = int(time.time() * 1000)
    ms = [Metric(k, v if math.isfinite(v) else float("nan"), ts, step) for k, v, step in metrics]
    ps = [Param(k, str(v)[:PARAM_MAX]) for k, v in (params or {}).items()]
    tg = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
    for chunk in _chunks(ms, BATCH_METRICS):
        client.log_batch(run_id, metrics=list(chunk))
    for chunk in _chunks(ps, BATCH_PARAMS):
        client.log_batch(run_id, params=list(chunk))
    for chunk in _chunks(tg, BATCH_TAGS):
        client.log_batch(run_id, tags=list(chunk))


def downsample(points: list[tuple[str, float, int]], limit: int = MAX_CURVE_POINTS) -> list[tuple[str, float, int]]:
    """At most ``limit`` evenly spaced points per metric, always keeping the first and the last."""
    series: dict[str, list[tuple[str, float, int]]] = {}
    for p in points:
        series.setdefault(p[0], []).append(p)
    out = []
    for pts in series.values():
        if len(pts) <= limit:
            out += pts
        else:
            idx = sorted({round(i * (len(pts) - 1) / (limit - 1)) for i in range(limit)})
            out += [pts[i] for i in idx]
    return out


def log_run(root: Path, paper: str, profile: str, title: str | None = None) -> str:
    """Log ``results/<paper>/<profile>/run`` to MLflow; return the parent run id. Idempotent per run identity."""
    rdir = run_dir(root, paper, profile)
    record = json.loads((rdir / "metrics.json").read_text(encoding="utf-8"))
    ledger = read_ledger(root, paper, profile)
    if ledger.get("run_id") == record["run_id"] and ledger.get("finished_at") == record["finished_at"] \
            and ledger.get("logged") and ledger.get("tracking_uri") == tracking_uri(root):
        return ledger["mlflow_run_id"]
    env = json.loads((rdir / "environment.json").read_text(encoding="utf-8"))
    client = _client(root)
    exp_id = _experiment(client, root, paper, title)
    tags = {
        "paper": paper, "profile": profile, "run_identity": record["run_id"], "device": record["device"],
        "git_sha": env.get("git_sha") or "unknown", "seeds": ",".join(str(s) for s in record["seeds"]),
        "verdict": "unverified",
    }
    parent = client.create_run(exp_id, run_name=f"{profile}-{record['run_id'][:8]}", tags=tags)
    pid = parent.info.run_id
    try:
        params = flatten({k: v for k, v in record["config"].items() if k in ("data", "model", "train")})
        params.update(profile=profile, seeds=record["seeds"], device=record["device"], method=record["method"])
        curves = read_curves_csv(rdir / "curves.csv")
        finals: dict[str, list[float]] = {}
        for entry in record["per_seed"]:
            for k, v in entry["metrics"].items():
                finals.setdefault(k, []).append(v)
        summary = []
        for k, vals in finals.items():
            summary.append((k, sum(vals) / len(vals), 0))
            if len(vals) > 1:
                mean = sum(vals) / len(vals)
                summary.append((f"{k}.std", math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)), 0))
        summary.append(("wall_seconds", float(record["seconds"]), 0))
        log_batch(client, pid, metrics=summary, params=params)
        for entry in record["per_seed"]:
            seed = entry["seed"]
            child = client.create_run(exp_id, run_name=f"seed-{seed}",
                                      tags={"mlflow.parentRunId": pid, "paper": paper, "profile": profile,
                                            "seed": str(seed)})
            cid = child.info.run_id
            ms = downsample([(name, value, step) for s, step, name, value in curves if s == seed])
            ms += [(k, v, 0) for k, v in entry["metrics"].items()]
            ms.append(("wall_seconds", float(entry["seconds"]), 0))
            log_batch(client, cid, metrics=ms, params={"seed": seed})
            client.set_terminated(cid, "FINISHED")
        for name in ("curves.png", "metrics.json", "environment.json", "manifest.yaml", "curves.csv"):
            if (rdir / name).exists():
                client.log_artifact(pid, str(rdir / name))
        client.set_terminated(pid, "FINISHED")
    except Exception:
        client.set_terminated(pid, "FAILED")
        raise
    write_ledger(root, paper, profile, {
        "run_id": record["run_id"], "finished_at": record["finished_at"], "mlflow_run_id": pid,
        "tracking_uri": tracking_uri(root), "logged": True, "verification_logged": None,
    })
    return pid


def log_verification(root: Path, paper: str, profile: str, result: dict[str, Any], title: str | None = None) -> str:
    """Attach a verification to the run's MLflow parent run (logging the run first if needed)."""
    pid = log_run(root, paper, profile, title)
    client = _client(root)
    rdir = results_dir(root, paper, profile)
    tags = {"verdict": result["verdict"], "claims_passed": f"{result['passed']}/{result['total']}"}
    for row in result["claims"]:
        tags[f"claim.{row['id']}"] = row["verdict"]
    log_batch(client, pid, tags=tags,
              metrics=[("claims_passed", float(result["passed"]), 0), ("claims_total", float(result["total"]), 0)])
    for name in ("verification.json", "verification.md"):
        if (rdir / name).exists():
            client.log_artifact(pid, str(rdir / name))
    ledger = read_ledger(root, paper, profile)
    ledger["verification_logged"] = result.get("digest")
    write_ledger(root, paper, profile, ledger)
    return pid


def mark_pending(root: Path, paper: str, profile: str, error: str) -> None:
    ledger = read_ledger(root, paper, profile)
    ledger.update(logged=ledger.get("logged", False), pending_error=error[:500],
                  pending_since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_ledger(root, paper, profile, ledger)


def pending(root: Path) -> list[tuple[str, str, bool]]:
    """(paper, profile, needs_verification) for every result on disk whose run or verification is not in MLflow."""
    out = []
    base = root / "results"
    if not base.is_dir():
        return out
    uri = tracking_uri(root)
    for mfile in sorted(base.glob("*/*/run/metrics.json")):
        paper, profile = mfile.parent.parent.parent.name, mfile.parent.parent.name
        record = json.loads(mfile.read_text(encoding="utf-8"))
        ledger = read_ledger(root, paper, profile)
        run_ok = (ledger.get("logged") and ledger.get("run_id") == record["run_id"]
                  and ledger.get("finished_at") == record["finished_at"] and ledger.get("tracking_uri") == uri)
        vfile = mfile.parent.parent / "verification.json"
        ver_needed = False
        if vfile.exists():
            digest = json.loads(vfile.read_text(encoding="utf-8")).get("digest")
            ver_needed = not run_ok or ledger.get("verification_logged") != digest
        if not run_ok or ver_needed:
            out.append((paper, profile, vfile.exists()))
    return out
