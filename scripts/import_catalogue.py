#!/usr/bin/env python
"""Turn shared/catalogue.yaml into one ``status: catalogued`` manifest per paper.

    python scripts/import_catalogue.py [--catalogue ../shared/catalogue.yaml] [--check]

Each catalogue entry becomes ``manifests/<id>.yaml``: paper metadata, the tier as
``status_reason``, the setup as ``summary`` and one unchecked claim per catalogue claim
(no train, profiles or metrics: there is no method yet). The output is deterministic, so
re-running it rewrites nothing unless the catalogue changed.

A manifest that already exists is only rewritten when this script generated it (its header
carries the GENERATED marker) and it is still catalogued; hand-written manifests, and any
manifest whose status is ``implemented``, are left alone.

Stdlib + PyYAML only, so it runs without installing the package.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPO.parent / "shared" / "catalogue.yaml"
MANIFESTS = REPO / "manifests"

GENERATED = "# Generated from shared/catalogue.yaml by scripts/import_catalogue.py"
HEADER = (
    "# Catalogued only: no method yet. Implement it with `registry new` (see README), then: "
    "registry run {id} --profile cpu\n"
    + GENERATED + "; edit the catalogue and re-run it, or replace this file by hand when implementing.\n"
)

QUALITATIVE_RATIONALE = "Catalogued only; no threshold set until the paper is implemented."
NO_SOURCE = "see paper (location not recorded in the catalogue)"
SLUG_MAX = 50

# A location inside a claim's parenthetical: "Sec. 5.1.2", "Fig. 2b", "Figs. 3, 5, 7", "Table 3", "Thm. 4.5", "abstract".
_LOC_WORD = (
    r"(?:Secs?\.|Sections?|§|Figs?\.|Figures?|Tables?|Tabs?\.|Eqs?\.|Equations?|Thms?\.|Theorems?|"
    r"Lemmas?|Props?\.|Propositions?|Cors?\.|Corollary|Corollaries|Algs?\.|Algorithms?|Apps?\.|Appendix|Appendices)"
)
_LOC_RE = re.compile(rf"^(?:{_LOC_WORD}\s*[A-Z]?\d[\w.]*|abstract$)", re.IGNORECASE)
_LOC_CONT_RE = re.compile(r"^(?:and\s+)?[A-Z]?\d[\w.]*(?:\s+(?:left|right|top|bottom|middle))?$")


# --------------------------------------------------------------------------- helpers


def parse_author_year(entry: dict) -> tuple[str, int, list[str]]:
    """First author, year and any remarks, from either catalogue shape."""
    remarks: list[str] = []
    if "first_author_year" in entry:
        raw = str(entry["first_author_year"]).strip()
        m = re.match(r"^(?P<name>.+?)\s*,\s*(?P<year>\d{4})\b(?P<rest>.*)$", raw)
        if not m:
            raise ValueError(f"{entry['id']}: cannot parse first_author_year {raw!r}")
        name, year, rest = m.group("name"), int(m.group("year")), m.group("rest").strip()
        if rest:
            remarks.append(rest)
    else:
        name, year = str(entry["first_author"]).strip(), entry["year"]
        if not isinstance(year, int):
            m = re.search(r"\b(\d{4})\b", str(year))
            if not m:
                raise ValueError(f"{entry['id']}: cannot parse year {year!r}")
            year = int(m.group(1))
    # Parenthetical remarks after the name, e.g. "Stefani Karp (first author unconfirmed)".
    for rem in re.findall(r"\(([^()]*)\)", name):
        remarks.append(rem)
    name = re.sub(r"\s*\([^()]*\)", "", name).strip()
    remarks = [r.strip().strip("()").strip() for r in remarks if r.strip().strip("()").strip()]
    return name, year, remarks


def clean(text: str) -> str:
    return " ".join(str(text).split())


def slugify(text: str, taken: set[str]) -> str:
    """Short unique slug from the claim text: the first words, lowercase, <= SLUG_MAX chars."""
    body = re.sub(r"\([^()]*\)", " ", text)  # drop parentheticals (locations, remarks)
    words = re.findall(r"[a-z0-9]+", body.lower().replace("'", ""))
    stop = {"a", "an", "the", "of", "on", "in", "is", "are", "and", "to", "with", "for", "by", "as", "at", "its",
            "it", "that", "this", "from", "be", "can", "than", "even", "e", "g", "i"}
    words = [w for w in words if w not in stop] or ["claim"]
    slug = ""
    for w in words:
        cand = f"{slug}-{w}" if slug else w
        if len(cand) > SLUG_MAX:
            break
        slug = cand
    slug = slug or words[0][:SLUG_MAX]
    base, n = slug, 2
    while slug in taken:
        suffix = f"-{n}"
        slug = base[: SLUG_MAX - len(suffix)].rstrip("-") + suffix
        n += 1
    taken.add(slug)
    return slug


def _locations_in(paren: str) -> list[str]:
    """Location parts of one parenthetical, e.g. 'Sec. 3.2, Fig. 2; numbers unconfirmed' -> ['Sec. 3.2, Fig. 2']."""
    out = []
    for seg in paren.split(";"):
        parts, keep = [p.strip() for p in seg.split(",")], []
        for p in parts:
            if _LOC_RE.match(p) or (keep and _LOC_CONT_RE.match(p)):
                keep.append("Abstract" if p.lower() == "abstract" else p)
            elif keep:
                break
        if keep:
            out.append(", ".join(keep))
    return out


def claim_source(text: str) -> str:
    """The location in the claim's final parenthetical, e.g. '(Sec. 5.1.2, Fig. 2b).'"""
    m = re.search(r"\(([^()]*)\)\s*\.?\s*$", text)
    if m:
        locs = _locations_in(m.group(1))
        if locs:
            return "; ".join(locs)
    return NO_SOURCE


# Numbers a claim can state: percentages, decimals, speed-up factors, "~N", "up to N", "N/M".
_NUMBER_RES = [
    re.compile(r"\d\s*%"),
    re.compile(r"(?<![\w.\-/])\d+\.\d+(?![\w.])"),
    re.compile(r"(?<![A-Za-z])[x×]\s?\d+(?:\.\d+)?\b|\b\d+(?:\.\d+)?\s?[x×](?![A-Za-z0-9])"),
    re.compile(r"(?<![A-Za-z_])[~≈<>≤≥]\s*\d"),
    re.compile(r"\b(?:up to|at most|at least|only|about|around|roughly|over|under|within|below|above)\s+"
               r"[a-z]?\s*=?\s*\d", re.IGNORECASE),
    re.compile(r"\b[a-zA-Z]\s*=\s*\d+(?:\.\d+)?\s+(?!layers?\b)[a-zA-Z-]*\s*(?:iterations?|steps?|epochs?|bits?)\b"),
    re.compile(r"\b\d+(?:\.\d+)?\s*/\s*\d+(?:\.\d+)?\s*/\s*\d"),
]
_LOCATION_TOKENS = re.compile(rf"{_LOC_WORD}\s*[A-Z]?\d[\w.]*(?:\s*,\s*\d[\w.]*)*", re.IGNORECASE)


def states_number(text: str) -> bool:
    body = _LOCATION_TOKENS.sub(" ", text)
    return any(r.search(body) for r in _NUMBER_RES)


def unconfirmed_note(text: str, status: str | None) -> str | None:
    """A note when the catalogue marks the claim (or its numbers) unconfirmed, else None."""
    if status is not None:
        return f"Catalogue status: {clean(status)}." if "unconfirmed" in status.lower() else None
    if "unconfirmed" not in text.lower():
        return None
    pieces = [clean(p) for p in re.split(r"[;()]|(?<=\.)\s", text) if "unconfirmed" in p.lower()]
    pieces = [p.rstrip(".") for p in pieces if p.rstrip(".").lower() != "unconfirmed"]
    if pieces:
        return "Catalogue: " + "; ".join(dict.fromkeys(pieces)) + "."
    return "The catalogue marks this claim as unconfirmed (not checked against the paper text)."


# --------------------------------------------------------------------------- one entry


def build_claim(raw, taken: set[str]) -> dict:
    if isinstance(raw, dict):
        text, where, status = clean(raw["claim"]), raw.get("where"), raw.get("status")
        source = clean(where) if where else claim_source(text)
        status = clean(status) if status else None
    else:
        text, status = clean(raw), None
        source = claim_source(text)
    claim: dict = {"id": slugify(text, taken), "statement": text, "source": source}
    claim["kind"] = "paper" if states_number(text) else "qualitative"
    note = unconfirmed_note(text, status)
    if note:
        claim["reported"] = {"unconfirmed": True, "note": note}
    elif status:
        claim["reported"] = {"note": f"Catalogue status: {status}."}
    if claim["kind"] == "qualitative":
        claim["rationale"] = QUALITATIVE_RATIONALE
    return claim


def build_manifest(entry: dict) -> dict:
    pid = entry["id"]
    name, year, remarks = parse_author_year(entry)
    paper: dict = {
        "title": clean(entry["title"]),
        "authors": [name, "et al."],
        "year": year,
        "venue": clean(entry["venue"]),
    }
    if entry.get("arxiv") is not None:
        paper["arxiv"] = str(entry["arxiv"]).strip()
    if entry.get("code") is not None:
        paper["code"] = clean(entry["code"])
    if entry.get("tier") is not None:
        paper["tier"] = str(entry["tier"]).strip()

    tier = paper.get("tier", "?")
    reason = clean(entry.get("tier_reason") or "not given in the catalogue")
    taken: set[str] = set()
    claims = [build_claim(c, taken) for c in entry.get("claims") or []]

    notes = []
    if remarks:
        notes.append("Authors: the catalogue records only the first author (" + "; ".join(remarks) + ").")
    else:
        notes.append("Authors: the catalogue records only the first author.")
    if entry.get("compute"):
        notes.append("Estimated reproduction compute (catalogue): " + clean(entry["compute"]))
    if entry.get("seed_file"):
        notes.append(f"Catalogue seed file: {entry['seed_file']}.")

    m: dict = {
        "schema_version": 1,
        "id": pid,
        "status": "catalogued",
        "status_reason": f"Tier {tier}: {reason}",
        "paper": paper,
        "summary": clean(entry["setup"]) if entry.get("setup") else None,
        "claims": claims,
        "notes": " ".join(notes),
    }
    return {k: v for k, v in m.items() if v is not None}


def render(manifest: dict) -> str:
    body = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)
    return HEADER.format(id=manifest["id"]) + body


# --------------------------------------------------------------------------- main


def may_write(path: Path) -> tuple[bool, str]:
    """Only (re)write files this script owns: absent, or generated here and still catalogued."""
    if not path.exists():
        return True, "new"
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return False, f"unreadable ({exc.__class__.__name__}); left alone"
    status = data.get("status") if isinstance(data, dict) else None
    if status == "implemented":
        return False, "implemented; left alone"
    if GENERATED not in "\n".join(text.splitlines()[:5]):
        return False, "hand-written (no generated marker); left alone"
    if status != "catalogued":
        return False, f"status {status!r}; left alone"
    return True, "generated"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE, help="default: %(default)s")
    ap.add_argument("--out", type=Path, default=MANIFESTS, help="manifest folder (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file would change")
    args = ap.parse_args(argv)

    with args.catalogue.open(encoding="utf-8") as fh:
        entries = yaml.safe_load(fh)
    if not isinstance(entries, list):
        print(f"error: {args.catalogue}: expected a list of papers", file=sys.stderr)
        return 2
    ids = [e.get("id") for e in entries]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        print(f"error: duplicate ids in the catalogue: {', '.join(map(str, dups))}", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    counts = {"written": 0, "unchanged": 0, "skipped": 0}
    stale = []
    for entry in entries:
        path = args.out / f"{entry['id']}.yaml"
        ok, why = may_write(path)
        if not ok:
            counts["skipped"] += 1
            print(f"skip  {path.name}: {why}")
            continue
        text = render(build_manifest(entry))
        if path.exists() and path.read_text(encoding="utf-8") == text:
            counts["unchanged"] += 1
            continue
        stale.append(path.name)
        if args.check:
            continue
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        counts["written"] += 1
        print(f"wrote {path.name}")
    if args.check:
        for name in stale:
            print(f"stale {name}")
        print(f"{len(entries)} catalogue entries: {len(stale)} stale, {counts['skipped']} skipped")
        return 1 if stale else 0
    print(f"{len(entries)} catalogue entries: {counts['written']} written, {counts['unchanged']} unchanged, "
          f"{counts['skipped']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
