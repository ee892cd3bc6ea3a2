"""Aggregate per-seed metrics and judge each claim. The verifier is the only judge: methods report numbers.

Tolerance maths. For a claim with threshold ``T`` (the paper's number for ``paper`` claims,
our own ``target`` for ``scaled``/``qualitative`` ones) and tolerance width
``w = tolerance.abs + tolerance.rel * |T|``, the chosen statistic ``s`` over seeds
(mean by default) passes when

* ``>=``:     s >= T - w
* ``<=``:     s <= T + w
* ``within``: |s - T| <= w

When ``baseline`` is set the checked quantity is the per-seed difference ``metric - baseline``
(paired over seeds). When ``seeds_where`` is set only the seeds whose own metric meets its condition
are judged (a paper protocol such as "mean over the runs that fit the training range"); fewer than its
``min_seeds`` such seeds is a ``fail``. A missing or non-finite metric is an ``error`` verdict, which
counts as failing: this includes a non-finite value of the ``seeds_where`` metric (the seed can be
neither selected nor dropped) and a non-finite value among the selected seeds, however few they are.

Seed noise. For a claim on the mean over two or more seeds the row also says whether the verdict is
``within_noise``: whether the 95% t-interval of the mean holds values on both sides of the decision boundary
(``T - w`` for ``>=``, as above). Such a verdict stands as judged (thresholds never move), but more seeds could
turn it over; the tables mark it and the summary line counts it. Claims on the median, min or max over seeds
carry no such flag.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .schema import Claim, Manifest

# two-sided 95% Student-t quantiles, df = 1..30 (beyond: an expansion, see t95)
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.959964  # beyond the table: the Cornish-Fisher expansion of the t quantile (error < 1e-5 for df > 30)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2) \
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)


@dataclass(frozen=True)
class Summary:
    values: tuple[float, ...]
    mean: float
    std: float
    ci95: float  # half-width of the 95% t-interval of the mean (nan for one seed)
    median: float
    min: float
    max: float

    @property
    def n(self) -> int:
        return len(self.values)

    def stat(self, name: str) -> float:
        return float(getattr(self, name))

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": self.ci95, "median": self.median,
                "min": self.min, "max": self.max, "per_seed": list(self.values)}


def summarize(values: Sequence[float]) -> Summary:
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("no values to summarize")
    n = len(vals)
    if not all(math.isfinite(v) for v in vals):  # a diverged seed: report it, judge nothing on it
        nan = float("nan")
        return Summary(vals, nan, nan, nan, nan, nan, nan)
    mean = math.fsum(vals) / n
    std = statistics.stdev(vals) if n > 1 else 0.0
    ci = t95(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return Summary(vals, mean, std, ci, statistics.median(vals), min(vals), max(vals))


def compare(value: float, compare_op: str, threshold: float, width: float) -> bool:
    if not math.isfinite(value):
        return False
    if compare_op == ">=":
        return value >= threshold - width
    if compare_op == "<=":
        return value <= threshold + width
    if compare_op == "within":
        return abs(value - threshold) <= width
    raise ValueError(f"unknown comparison {compare_op!r}")


def judge(claim: Claim, per_seed: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Judge one checked claim against per-seed metric dicts."""
    assert claim.checked and claim.tolerance is not None and claim.compare is not None
    threshold = claim.threshold
    assert threshold is not None
    width = claim.tolerance.width(threshold)
    row: dict[str, Any] = {
        "id": claim.id, "kind": claim.kind, "statement": claim.statement, "source": claim.source,
        "metric": claim.metric, "baseline": claim.baseline, "compare": claim.compare, "statistic": claim.statistic,
        "reported": claim.reported.model_dump(exclude_none=True) if claim.reported else None,
        "threshold": threshold, "tolerance": width, "tolerance_rationale": claim.tolerance.rationale,
    }
    sel = claim.seeds_where
    values = []
    missing = []
    unselectable = []  # seeds whose selection metric is NaN/inf: neither in nor out, so nothing is judged
    kept = []  # positions in the run's seed list of the seeds that are judged
    for i, metrics in enumerate(per_seed):
        a = metrics.get(claim.metric)  # type: ignore[arg-type]
        b = metrics.get(claim.baseline) if claim.baseline else 0.0
        f = metrics.get(sel.metric) if sel else 0.0
        if a is None or b is None or f is None:
            missing.append(i)
            continue
        if sel and not math.isfinite(float(f)):
            unselectable.append(i)
            continue
        if sel and not compare(float(f), sel.compare, sel.value, 0.0):
            continue
        kept.append(i)
        values.append(float(a) - float(b))
    if missing or not per_seed:
        names = ", ".join(n for n in (claim.metric, claim.baseline, sel and sel.metric) if n)
        row.update(verdict="error", measured=None, error=f"metric(s) {names} missing in {len(missing) or 'all'} seed(s)")
        return row
    if sel and unselectable:
        row.update(verdict="error", measured=None,
                   error=f"non-finite metric value of {sel.metric} (the seeds_where metric) in "
                         f"{len(unselectable)} seed(s), at positions {unselectable}: cannot tell whether they are selected")
        return row
    if sel:
        row["selected"] = {"condition": sel.describe(), "positions": kept, "of": len(per_seed)}
        if not all(math.isfinite(v) for v in values):  # a diverged selected seed is an error, however many there are
            row.update(verdict="error", measured=summarize(values).as_dict(), error="non-finite metric value")
            return row
        if len(values) < sel.min_seeds:
            row.update(verdict="fail", measured=summarize(values).as_dict() if values else None,
                       note=f"only {len(values)} of {len(per_seed)} seeds meet {sel.metric} {sel.compare} "
                            f"{sel.value:g}; the claim needs {sel.min_seeds}")
            return row
    s = summarize(values)
    if not all(math.isfinite(v) for v in values):
        row.update(verdict="error", measured=s.as_dict(), error="non-finite metric value")
        return row
    value = s.stat(claim.statistic)
    row["measured"] = s.as_dict()
    row["value"] = value
    row["verdict"] = "pass" if compare(value, claim.compare, threshold, width) else "fail"
    if claim.statistic == "mean" and math.isfinite(s.ci95):
        row["within_noise"] = ci_crosses(s.mean, s.ci95, claim.compare, threshold, width)
    return row


def ci_crosses(mean: float, ci95: float, compare_op: str, threshold: float, width: float) -> bool:
    """Whether the 95% t-interval of the mean, ``[mean - ci95, mean + ci95]``, holds values that pass and values
    that fail (by ``compare`` with the same threshold and width): the verdict on the mean is then within the
    seeds' noise, and more seeds could turn it over. Boundaries count the way ``compare`` counts them."""
    lo, hi = mean - ci95, mean + ci95
    return compare(lo, compare_op, threshold, width) != compare(hi, compare_op, threshold, width) or (
        compare_op == "within" and lo < threshold - width and hi > threshold + width)


def verify(manifest: Manifest, profile: str, per_seed: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Judge every checked claim of ``profile``. ``passed``/``failed``/``errors``/``total`` count the claims
    about the paper's results; ``kind: setup`` checks (no trained model enters them) are counted apart in
    ``setup_checks``, and the verdict is ``pass`` only when every claim and every setup check passes.
    ``within_noise`` counts the verdicts, setup checks included, that the seeds' noise could turn over."""
    rows = [judge(c, per_seed) for c in manifest.claims if c.checked and profile in c.profiles]
    claims = [r for r in rows if r["kind"] != "setup"]
    setup = [r for r in rows if r["kind"] == "setup"]
    passed = sum(r["verdict"] == "pass" for r in claims)
    noisy = sum(bool(r.get("within_noise")) for r in rows)
    failed = sum(r["verdict"] == "fail" for r in claims)
    errors = sum(r["verdict"] == "error" for r in claims)
    setup_passed = sum(r["verdict"] == "pass" for r in setup)
    verdict = "no-claims" if not rows else (
        "pass" if passed == len(claims) and setup_passed == len(setup) else "fail")
    names = sorted({k for m in per_seed for k in m})
    metrics = {k: summarize([m[k] for m in per_seed if k in m]).as_dict() for k in names}
    out = {
        "paper": manifest.id, "profile": profile, "verdict": verdict,
        "passed": passed, "failed": failed, "errors": errors, "total": len(claims),
        "within_noise": noisy, "claims": rows, "metrics": metrics,
        "skipped": [c.id for c in manifest.claims if c.checked and profile not in c.profiles],
    }
    if setup:
        out["setup_checks"] = {"passed": setup_passed, "total": len(setup)}
    return out


# --------------------------------------------------------------------------- rendering


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e5):
        return f"{x:.3e}"
    return f"{x:.4g}"


def _cells(row: Mapping[str, Any]) -> list[str]:
    rep = row.get("reported") or {}
    reported = _fmt(rep.get("value")) if rep.get("value") is not None else "-"
    if rep.get("unconfirmed"):
        reported += " (unconfirmed)"
    quantity = row["metric"] + (f" - {row['baseline']}" if row.get("baseline") else "")
    op = "≈" if row["compare"] == "within" else row["compare"]
    target = f"{op} {_fmt(row['threshold'])}" + (f" ± {_fmt(row['tolerance'])}" if row["tolerance"] else "")
    m = row.get("measured")
    if m is None:
        if row.get("selected"):
            measured = "no seed selected"
        else:
            measured = "non-finite" if str(row.get("error", "")).startswith("non-finite") else "missing"
    elif "value" not in row and row.get("selected"):  # too few seeds met the selection: not judged
        measured = f"[n={m['n']} of {row['selected']['of']}]"
    else:
        stat = row["statistic"]
        measured = _fmt(row.get("value", m["mean"]))
        if stat == "mean" and m["n"] > 1:
            measured += f" ± {_fmt(m['ci95'])}"
        elif stat != "mean":
            measured += f" ({stat})"
        measured += f" [n={m['n']}" + (f" of {row['selected']['of']}" if row.get("selected") else "") + "]"
    verdict = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}[row["verdict"]]
    if row.get("within_noise"):
        verdict += " (within noise)"
    return [row["id"], row["kind"], quantity, reported, target, measured, verdict]


HEADER = ["claim", "kind", "quantity", "reported", "check", "measured ± 95% CI", "verdict"]


def render_text(result: Mapping[str, Any]) -> str:
    rows = [HEADER] + [_cells(r) for r in result["claims"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [f"{result['paper']} @ {result['profile']}"]
    for k, r in enumerate(rows if result["claims"] else []):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in result["claims"]:
        if r.get("error") or r.get("note"):
            lines.append(f"  {r['id']}: {r.get('error') or r['note']}")
    if result.get("seeds_note"):
        lines.append(f"note: {result['seeds_note']}")
    if result.get("within_noise"):  # the count verify() made (setup checks included)
        lines.append(f"note: {NOISE_LEGEND}")
    lines.append(summary_line(result))
    return "\n".join(lines)


def summary_line(result: Mapping[str, Any]) -> str:
    if result["verdict"] == "no-claims":
        return f"verdict: no claims are checked at profile {result['profile']!r}"
    setup = result.get("setup_checks")
    noisy = result.get("within_noise") or 0
    return (f"verdict: {result['verdict'].upper()} ({result['passed']}/{result['total']} claims passed"
            + (f", {result['errors']} errors" if result["errors"] else "")
            + (f"; {noisy} {'verdict' if noisy == 1 else 'verdicts'} within seed noise" if noisy else "")
            + (f"; {setup['passed']}/{setup['total']} setup checks passed" if setup else "") + ")")


NOISE_LEGEND = ("within noise: the 95% interval of the mean over seeds reaches across the check's threshold; "
                "the verdict stands as judged, but more seeds could turn it over")


def render_markdown(result: Mapping[str, Any]) -> str:
    out = [f"# {result['paper']} — profile `{result['profile']}`", "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in result["claims"]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    out += ["", f"**{summary_line(result)}**", ""] + ([f"Note: {result['seeds_note']}.", ""]
                                                    if result.get("seeds_note") else [])
    if result.get("within_noise"):  # the count verify() made (setup checks included)
        out += [f"Note: {NOISE_LEGEND}.", ""]
    for r in result["claims"]:
        out.append(f"- **{r['id']}** ({r['source']}): {r['statement']} — tolerance: {r['tolerance_rationale']}"
                   + (f" — judged on {r['selected']['condition']}" if r.get("selected") else "")
                   + (f" — {r['note']}" if r.get("note") else ""))
    return "\n".join(out) + "\n"
