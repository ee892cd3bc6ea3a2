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

from .report import read_json_object
from .runner import atomic_write_text, is_run_record, largest_peak, read_curves_csv, results_dir, run_dir

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
    """True when the user chose no store (then artifacts go to ``<root>/mlartifacts/<paper>``).

    Nothing here may set MLFLOW_TRACKING_URI (``mlflow.set_tracking_uri`` does): this would turn every
    later call in the process into a "user-chosen" store.
    """
    return not os.environ.get("MLFLOW_TRACKING_URI")


def ledger_path(root: Path, paper: str, profile: str) -> Path:
    return results_dir(root, paper, profile) / "tracking.json"


def read_ledger(root: Path, paper: str, profile: str) -> dict[str, Any]:
    return read_json_object(ledger_path(root, paper, profile)) or {}


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
    import mlflow  # noqa: F401  (first: importing it configures its loggers, quietened below)

    for name in ("mlflow", "alembic"):  # schema-migration chatter on a new store
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    # The client gets its URI explicitly; no mlflow.set_tracking_uri(), which writes MLFLOW_TRACKING_URI into
    # os.environ (see _default_store). The client resolves run artifact stores with its own URI.
    return MlflowClient(tracking_uri=tracking_uri(root))


def _experiment(client, root: Path, paper: str, title: str | None) -> str:
    exp = client.get_experiment_by_name(paper)
    if exp is not None:
        if title and not (exp.tags or {}).get("paper.title"):  # e.g. created by an older `registry sync`
            try:
                client.set_experiment_tag(exp.experiment_id, "paper.title", title)
            except Exception:
                pass
        return exp.experiment_id
    kwargs = {}
    if _default_store(root):
        kwargs["artifact_location"] = (root / "mlartifacts" / paper).resolve().as_uri()
    tags = {"paper.title": title} if title else None
    return client.create_experiment(paper, tags=tags, **kwargs)


def log_batch(client, run_id: str, metrics: Iterable[tuple] = (), params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None) -> None:
    """Metrics are ``(name, value, step)``, or ``(name, value, step, ms_after)`` to stamp a point ``ms_after``
    milliseconds after the others (MLflow reports, per metric, the point with the highest (step, timestamp))."""
    from mlflow.entities import Metric, Param, RunTag

    ts = int(time.time() * 1000)
    ms = [Metric(m[0], m[1] if math.isfinite(m[1]) else float("nan"), ts + (m[3] if len(m) > 3 else 0), m[2])
          for m in metrics]
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
    uri = tracking_uri(root)
    _close_incomplete(client, root, paper, profile, exp_id, uri)
    parent = client.create_run(exp_id, run_name=f"{profile}-{record['run_id'][:8]}", tags=tags)
    pid = parent.info.run_id
    try:
        # Noted before anything is logged, so that a run cut short even by SIGKILL is closed by the next log_run.
        ledger = read_ledger(root, paper, profile)
        ledger.update(incomplete_mlflow_run_id=pid, incomplete_tracking_uri=uri)
        write_ledger(root, paper, profile, ledger)
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
        peak = largest_peak([e.get("peak_memory_mb") for e in record["per_seed"]])
        if peak is not None:
            summary.append(("peak_memory_mb", float(peak), 0))
        log_batch(client, pid, metrics=summary, params=params)
        for entry in record["per_seed"]:
            seed = entry["seed"]
            child = client.create_run(exp_id, run_name=f"seed-{seed}",
                                      tags={"mlflow.parentRunId": pid, "paper": paper, "profile": profile,
                                            "seed": str(seed)})
            cid = child.info.run_id
            try:
                points = [(name, value, step) for s, step, name, value in curves if s == seed]
                # A seed's final metrics share names with its curves: log them at the curves' last step (and
                # stamped after them), not at step 0 where they would be a spurious first point of the curve.
                last = max((p[2] for p in points), default=0)
                ms: list[tuple] = downsample(points)
                ms += [(k, v, last, 1) for k, v in entry["metrics"].items()]
                ms.append(("wall_seconds", float(entry["seconds"]), last, 1))
                if entry.get("peak_memory_mb") is not None:
                    ms.append(("peak_memory_mb", float(entry["peak_memory_mb"]), last, 1))
                log_batch(client, cid, metrics=ms, params={"seed": seed})
                client.set_terminated(cid, "FINISHED")
            except BaseException as exc:
                _terminate_quietly(client, cid, exc)
                raise
        for name in ("curves.png", "metrics.json", "environment.json", "manifest.yaml", "curves.csv"):
            if (rdir / name).exists():
                client.log_artifact(pid, str(rdir / name))
        client.set_terminated(pid, "FINISHED")
    except BaseException as exc:  # KeyboardInterrupt too: never leave a half-logged parent RUNNING
        _terminate_quietly(client, pid, exc)
        raise
    write_ledger(root, paper, profile, {
        "run_id": record["run_id"], "finished_at": record["finished_at"], "mlflow_run_id": pid,
        "tracking_uri": uri, "logged": True, "verification_logged": None,
    })
    return pid


def _terminate_quietly(client, run_id: str, exc: BaseException) -> None:
    """Best effort: mark a run cut short FAILED (an error) or KILLED (Ctrl-C, SystemExit); never raise."""
    status = "FAILED" if isinstance(exc, Exception) else "KILLED"
    try:
        client.set_terminated(run_id, status)
    except Exception:
        pass


def _close_incomplete(client, root: Path, paper: str, profile: str, exp_id: str, uri: str) -> None:
    """Mark KILLED a parent run (and its children) that an earlier log_run left RUNNING (e.g. killed outright)."""
    ledger = read_ledger(root, paper, profile)
    old = ledger.get("incomplete_mlflow_run_id")
    if not old or ledger.get("incomplete_tracking_uri") != uri:
        return
    try:
        runs = [client.get_run(old)]
        runs += client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{old}'")
        for r in runs:
            if r.info.status == "RUNNING":
                client.set_terminated(r.info.run_id, "KILLED")
    except Exception:
        pass


def log_verification(root: Path, paper: str, profile: str, result: dict[str, Any], title: str | None = None) -> str:
    """Attach a verification to the run's MLflow parent run (logging the run first if needed)."""
    if verification_is_stale(root, paper, profile, result):
        raise TrackingError(f"stale verification of {paper}@{profile}: it judged an earlier run; "
                            f"run `registry verify {paper} --profile {profile}`")
    pid = log_run(root, paper, profile, title)
    client = _client(root)
    rdir = results_dir(root, paper, profile)
    tags = {"verdict": result["verdict"], "claims_passed": f"{result['passed']}/{result['total']}"}
    metrics = [("claims_passed", float(result["passed"]), 0), ("claims_total", float(result["total"]), 0)]
    setup = result.get("setup_checks")
    if setup:
        tags["setup_checks_passed"] = f"{setup['passed']}/{setup['total']}"
        metrics += [("setup_checks_passed", float(setup["passed"]), 0), ("setup_checks_total", float(setup["total"]), 0)]
    noisy = [row["id"] for row in result["claims"] if row.get("within_noise")]
    metrics.append(("claims_within_noise", float(len(noisy)), 0))
    if noisy:
        tags["claims_within_noise"] = ",".join(noisy)[:5000]
    for row in result["claims"]:
        tags[f"claim.{row['id']}"] = row["verdict"]
    log_batch(client, pid, tags=tags, metrics=metrics)
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


def verification_is_stale(root: Path, paper: str, profile: str, result: dict[str, Any] | None = None) -> bool:
    """True when the verification (``result``, else verification.json) judged another run than run/ holds now:
    its ``run_finished_at`` differs from run/metrics.json's ``finished_at``. A verification without that key
    (written before it existed) is not stale."""
    from .report import judged_run_on_disk

    if result is None:
        result = read_json_object(results_dir(root, paper, profile) / "verification.json")
    if not isinstance(result, dict):  # unreadable: not judged stale
        return False
    return judged_run_on_disk(result, results_dir(root, paper, profile)) is False  # None (no run): not stale


def stale_verifications(root: Path) -> list[tuple[str, str]]:
    """(paper, profile) for every result whose verification.json judged an earlier run (never logged)."""
    base = root / "results"
    if not base.is_dir():
        return []
    return [(m.parent.parent.parent.name, m.parent.parent.name) for m in sorted(base.glob("*/*/run/metrics.json"))
            if (m.parent.parent / "verification.json").exists()
            and verification_is_stale(root, m.parent.parent.parent.name, m.parent.parent.name)]


def unreadable_records(root: Path) -> list[Path]:
    """run/metrics.json files that are not a record the registry wrote (edited by hand): never logged."""
    base = root / "results"
    return sorted(m for m in base.glob("*/*/run/metrics.json") if not is_run_record(read_json_object(m)))


def pending(root: Path) -> list[tuple[str, str, bool]]:
    """(paper, profile, log_verification) for every result on disk whose run or verification is not in MLflow.

    A stale verification (see ``verification_is_stale``) is never logged: its run is, without it."""
    out = []
    base = root / "results"
    if not base.is_dir():
        return out
    uri = tracking_uri(root)
    for mfile in sorted(base.glob("*/*/run/metrics.json")):
        paper, profile = mfile.parent.parent.parent.name, mfile.parent.parent.name
        record = read_json_object(mfile)
        if not is_run_record(record):
            continue  # not a record the registry wrote (edited by hand): see unreadable_records
        ledger = read_ledger(root, paper, profile)
        run_ok = (ledger.get("logged") and ledger.get("run_id") == record["run_id"]
                  and ledger.get("finished_at") == record["finished_at"] and ledger.get("tracking_uri") == uri)
        vfile = mfile.parent.parent / "verification.json"
        has_ver = ver_needed = False
        if vfile.exists():
            ver = read_json_object(vfile)  # None when unreadable: log the run, the verdict on a later sync
            if ver is not None and not verification_is_stale(root, paper, profile, ver):
                has_ver = True
                ver_needed = not run_ok or ledger.get("verification_logged") != ver.get("digest")
        if not run_ok or ver_needed:
            out.append((paper, profile, has_ver))
    return out
