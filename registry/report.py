"""One table over every paper: status, claims and the latest verdict per profile (smoke, cpu, paper, and
the paper's other profiles, e.g. supplementary cpu-* ones, in one column)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping

from .schema import Manifest

PROFILES = ("smoke", "cpu", "paper")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or holds something else (a file
    edited by hand, or cut short outside the registry, which writes its files whole)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _readable_verification(v: dict[str, Any] | None) -> bool:
    """Whether ``v`` has the fields the tables read (a verification.json the registry wrote)."""
    return (v is not None and isinstance(v.get("verdict"), str)
            and (v["verdict"] == "no-claims" or all(isinstance(v.get(k), int) for k in ("passed", "total")))
            and isinstance(v.get("claims"), list)
            and all(isinstance(r, dict) and "id" in r and "verdict" in r for r in v["claims"]))


def latest_verifications(root: Path, paper: str) -> dict[str, dict[str, Any]]:
    """profile -> its verification.json; one that judged an earlier run than the run/ now on disk (it names
    the run's finished_at) is marked ``stale``, one that cannot be read ``unreadable``."""
    out: dict[str, dict[str, Any]] = {}
    base = root / "results" / paper
    if base.is_dir():
        for vfile in sorted(base.glob("*/verification.json")):
            v = read_json_object(vfile)
            if not _readable_verification(v):
                out[vfile.parent.name] = {"unreadable": True, "stale": True}
                continue
            v["stale"] = judged_run_on_disk(v, vfile.parent) is not True  # None: its run is gone or unreadable
            out[vfile.parent.name] = v
    return out


def judged_run_on_disk(verification: Mapping[str, Any], folder: Path) -> bool | None:
    """Whether ``verification`` judged the run now in ``folder``/run (its ``run_finished_at`` equals the run's
    ``finished_at``; one written before that key existed counts as a match); None when the run cannot be read."""
    judged = verification.get("run_finished_at")
    if judged is None:
        return True
    run = read_json_object(folder / "run" / "metrics.json")
    if run is None:
        return None
    return run.get("finished_at") == judged


def verdict_cell(v: Mapping[str, Any] | None) -> str:
    if v is None:
        return "-"
    if v.get("unreadable"):
        return "unreadable (re-verify)"
    if v.get("stale"):
        return "stale (re-verify)"
    if v["verdict"] == "no-claims":
        return "ran"
    setup = v.get("setup_checks")
    noisy = v.get("within_noise")
    return f"{v['verdict']} {v['passed']}/{v['total']}" + (
        f" ({noisy} within noise)" if isinstance(noisy, int) and noisy > 0 else "") + (
        f" (setup {setup['passed']}/{setup['total']})" if isinstance(setup, dict) else "")


def rows(root: Path, manifests: Mapping[str, Manifest]) -> list[dict[str, Any]]:
    out = []
    for pid in sorted(manifests):
        m = manifests[pid]
        ver = latest_verifications(root, pid)
        out.append({
            "id": pid, "title": m.paper.title, "year": m.paper.year, "tier": m.paper.tier or "-",
            "status": m.status, "claims": len(m.claims), "checked": sum(c.checked for c in m.claims),
            "unconfirmed": sum(1 for c in m.claims if c.reported and c.reported.unconfirmed),
            "verdicts": {p: verdict_cell(ver.get(p)) for p in PROFILES},
            # profiles the manifest defines beyond the three, with a verdict (stale result folders are ignored)
            "other": "; ".join(f"{p}: {verdict_cell(ver[p])}" for p in m.profiles if p not in PROFILES and p in ver)
                     or "-",
        })
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    impl = sum(r["status"] == "implemented" for r in table)
    lines = [
        "# Reproduction report", "",
        f"{len(table)} papers, {impl} implemented, {len(table) - impl} catalogued.", "",
        "| paper | year | tier | status | claims (checked) | " + " | ".join(PROFILES) + " | other profiles |",
        "|---|---|---|---|---|" + "---|" * (len(PROFILES) + 1),
    ]
    for r in table:
        title = r["title"].replace("|", "\\|")
        lines.append(f"| **{r['id']}**<br>{title} | {r['year']} | {r['tier']} | {r['status']} | "
                     f"{r['claims']} ({r['checked']}) | " + " | ".join(r["verdicts"][p] for p in PROFILES)
                     + f" | {r['other']} |")
    return "\n".join(lines) + "\n"


def html_page(table: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ["paper", "title", "year", "tier", "status", "claims (checked)", *PROFILES,
                                                 "other profiles"])
    body = []
    for r in table:
        cells = [r["id"], r["title"], r["year"], r["tier"], r["status"], f"{r['claims']} ({r['checked']})",
                 *(r["verdicts"][p] for p in PROFILES), r["other"]]
        tds = "".join(
            f"<td class='{'pass' if str(c).startswith('pass') else 'fail' if str(c).startswith('fail') else ''}'>"
            f"{html.escape(str(c))}</td>" for c in cells)
        body.append(f"<tr>{tds}</tr>")
    return ("<!doctype html><meta charset='utf-8'><title>Reproduction report</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:3px 6px;font-size:13px}.pass{background:#d4f7d4}.fail{background:#f7d4d4}</style>"
            f"<h1>Reproduction report</h1><table><tr>{head}</tr>{''.join(body)}</table>\n")
