"""`registry` command line. Commands that do not train (list, show, validate, schema, index, report, new)
import neither torch nor mlflow, so they answer quickly."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import manifest as mf
from .manifest import ManifestError, Problem

EXIT_CLAIM_FAILED = 1
EXIT_BAD_INPUT = 2


def find_root() -> Path:
    """The registry checkout: $REGISTRY_ROOT, else the nearest parent with manifests/ and pyproject.toml.

    Its ``methods`` package is put first on ``sys.path`` so that a copy of the registry runs its own methods.
    """
    env = os.environ.get("REGISTRY_ROOT")
    root = None
    if env:
        root = Path(env).resolve()
        if not root.is_dir():  # a typo would otherwise read as an empty registry
            click.echo(f"error: REGISTRY_ROOT={env} is not a directory", err=True)
            sys.exit(EXIT_BAD_INPUT)
    else:
        here = Path.cwd().resolve()
        root = next((d for d in (here, *here.parents)
                     if (d / "manifests").is_dir() and (d / "pyproject.toml").is_file()), None)
    root = root or Path(__file__).resolve().parent.parent
    if (root / "methods" / "__init__.py").is_file() and "methods" not in sys.modules:
        sys.path.insert(0, str(root))
    return root


def fail_input(problems: list[Problem]) -> None:
    for p in problems:
        click.echo(str(p), err=True)
    n = len(problems)
    click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
    sys.exit(EXIT_BAD_INPUT)


def load_one(root: Path, paper: str, *, with_methods: bool = True) -> tuple[Any, Path]:
    try:
        path = mf.find(root, paper)
        return mf.load(path, with_methods=with_methods, root=root), path
    except ManifestError as exc:
        fail_input(exc.problems)
        raise  # unreachable


def _profile_choice(m, profile: str) -> str:
    if profile not in m.profiles:
        fail_input([Problem(f"manifests/{m.id}.yaml", None, "profiles",
                            f"no profile {profile!r}; defined: {', '.join(m.profiles) or '(none)'}")])
    return profile


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="paper-registry", prog_name="registry")
def cli() -> None:
    """A declarative registry of ML paper reproductions.

    Each paper is a YAML manifest under manifests/ and a method under methods/.
    Typical use: `registry run transformers-learn-icl-by-gd --profile cpu`.
    """


# --------------------------------------------------------------------------- read-only commands


@cli.command("list")
@click.option("--status", type=click.Choice(["implemented", "catalogued"]), help="Only papers with this status.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(status: str | None, as_json: bool) -> None:
    """List papers with status, claims and the latest verdict per profile."""
    from . import report

    root = find_root()
    manifests, problems = mf.load_all(root, with_methods=False)
    table = [r for r in report.rows(root, manifests) if status is None or r["status"] == status]
    if as_json:
        click.echo(json.dumps(table, indent=2))
    else:
        head = ["paper", "status", "tier", "claims", *report.PROFILES]
        body = [[r["id"], r["status"], r["tier"], f"{r['claims']}({r['checked']})",
                 *(r["verdicts"][p] for p in report.PROFILES)] for r in table]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        click.echo("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        for row in body:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        impl = sum(m.status == "implemented" for m in manifests.values())
        click.echo(f"\n{len(manifests)} papers: {impl} implemented, {len(manifests) - impl} catalogued")
    if problems:
        click.echo(f"warning: {len(problems)} manifest problem(s); run `registry validate`", err=True)


@cli.command()
@click.argument("paper")
@click.option("--profile", help="Also print the config resolved at this profile.")
def show(paper: str, profile: str | None) -> None:
    """Show a paper's manifest: metadata, profiles, claims and latest verdicts."""
    from . import report

    root = find_root()
    m, _ = load_one(root, paper)  # every problem validate would report for this file, method config included
    if profile:
        _profile_choice(m, profile)  # before printing anything
    p = m.paper
    click.echo(click.style(p.title, bold=True))
    click.echo(f"  {', '.join(p.authors)} — {p.venue}" + ("" if str(p.year) in p.venue else f" {p.year}"))
    if p.arxiv:
        click.echo(f"  arXiv {p.arxiv}   code: {p.code or 'n/a'}   tier: {p.tier or '-'}")
    click.echo(f"  status: {m.status}" + (f" ({m.status_reason})" if m.status_reason else ""))
    if m.summary:
        click.echo(f"\n{m.summary}")
    if m.profiles:
        click.echo("\nprofiles:")
        width = max(6, *(len(name) for name in m.profiles))
        for name, prof in m.profiles.items():
            est = m.hardware.estimated_minutes.get(name)
            extra = ([f"~{est:g} min"] if est is not None else []) + ([f"{prof.jobs} CPU jobs"] if prof.jobs else [])
            click.echo(f"  {name:<{width}} {prof.description}" + (f" ({', '.join(extra)})" if extra else ""))
    verdicts = report.latest_verifications(root, m.id)
    stale = sorted(p for p in verdicts if p not in m.profiles)  # results of a profile since removed or renamed
    verdicts = {p: v for p, v in verdicts.items() if p not in stale}
    n_setup = sum(c.kind == "setup" for c in m.claims)
    click.echo(f"\nclaims ({len(m.claims) - n_setup}" + (f", and {n_setup} setup check{'s' * (n_setup > 1)}"
                                                         if n_setup else "") + "):")
    for c in m.claims:
        rep = ""
        if c.reported and c.reported.value is not None:
            rep = f" reported={c.reported.value:g}" + (" (unconfirmed)" if c.reported.unconfirmed else "")
        check = ""
        if c.checked:
            q = c.metric + (f" - {c.baseline}" if c.baseline else "")
            tol = c.tolerance.width(c.threshold) if c.tolerance else 0.0
            check = (f"  check: {c.statistic}({q}) {c.compare} {c.threshold:g}" + (f" ± {tol:g}" if tol else "")
                     + (f" over {c.seeds_where.describe()}" if c.seeds_where else "")
                     + f" at {', '.join(c.profiles)}")
        click.echo(f"  - [{c.kind}] {c.id}{rep} — {c.source}")
        click.echo(f"      {c.statement}")
        if check:
            click.echo(f"    {check}")
        for prof, v in verdicts.items():
            row = next((r for r in v.get("claims", []) if r["id"] == c.id), None)
            if row:
                click.echo(f"      {prof}: {row['verdict']}" + (" (within seed noise)" if row.get("within_noise") else "")
                           + (" (stale: it judged an earlier run; `registry verify` again)" if v.get("stale") else ""))
    unreadable = [p for p, v in verdicts.items() if v.get("unreadable")]
    if unreadable:
        click.echo(f"\nunreadable: results/{m.id}/<profile>/verification.json of " + ", ".join(unreadable)
                   + " (edited or cut short); `registry verify` again")
    if stale:
        click.echo(f"\nignored: results/{m.id}/ holds verdicts of profiles the manifest no longer defines: "
                   + ", ".join(stale))
    if profile:
        r = mf.resolve(m, profile)
        click.echo(f"\nresolved config at {profile}:")
        click.echo(json.dumps(r.as_dict(), indent=2))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check manifests (all by default): schema, claims, method configs and the DVC index.

    Every problem is reported with file, line and field; exit code 2 when any is found.
    """
    from . import index, methods

    root = find_root()
    if paths:
        problems: list[Problem] = []
        for p in paths:
            problems += mf.check_file(p, root=root)[1]
        if problems:
            fail_input(problems)
        click.echo(f"ok: {len(paths)} manifest(s) valid")
        return
    manifests, problems = mf.load_all(root)
    problems += mf.method_import_problems(root)  # a broken method package, reported where it broke
    if not problems:
        used = {m.method for m in manifests.values() if m.method}
        for key, method in sorted(methods.all_methods().items()):
            if key not in used:
                problems.append(Problem(f"methods/{method.module.split('.')[-1]}", None, "",
                                        f"method {key!r} is registered but no manifest uses it"))
        problems += index.check(root, manifests)
    if problems:
        fail_input(problems)
    impl = sum(m.status == "implemented" for m in manifests.values())
    click.echo(f"ok: {len(manifests)} manifests valid ({impl} implemented), index up to date")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), help="Write to this file instead of stdout.")
def schema(out: Path | None) -> None:
    """Print the manifest JSON Schema (for editor completion and validation)."""
    from .schema import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


@cli.command("index")
@click.option("--check", is_flag=True, help="Only check; exit 2 when stale.")
def index_cmd(check: bool) -> None:
    """Regenerate papers.yaml, the list of implemented papers that dvc.yaml iterates over."""
    from . import index

    root = find_root()
    manifests, problems = mf.load_all(root)
    if problems:
        fail_input(problems)
    if check:
        stale = index.check(root, manifests)
        if stale:
            fail_input(stale)
        click.echo("index up to date")
        return
    changed = index.write(root, manifests)
    click.echo(f"{'updated' if changed else 'unchanged'}: {index.INDEX}")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Write report.md and report.html here.")
def report(out_dir: Path | None) -> None:
    """One Markdown (and HTML) table over all papers with their latest verdicts."""
    from . import report as rep

    root = find_root()
    manifests, problems = mf.load_all(root, with_methods=False)
    if problems:
        fail_input(problems)
    table = rep.rows(root, manifests)
    md = rep.markdown(table)
    if out_dir is None:
        click.echo(md, nl=False)
        return
    from .runner import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", rep.html_page(table))
    click.echo(f"wrote {out_dir / 'report.md'} and {out_dir / 'report.html'}")


@cli.command()
@click.argument("paper")
@click.option("--title", required=True, help="Paper title.")
@click.option("--authors", default="Unknown", show_default=True, help="Comma-separated authors.")
@click.option("--year", type=int, required=True)
@click.option("--venue", default="arXiv", show_default=True)
@click.option("--arxiv", default=None, help="arXiv id, e.g. 2212.07677.")
def new(paper: str, title: str, authors: str, year: int, venue: str, arxiv: str | None) -> None:
    """Scaffold manifests/PAPER.yaml and the method package methods/PAPER_ID/, where PAPER_ID is PAPER with
    hyphens turned into underscores (my-paper: methods/my_paper/), for a new paper: a working template to edit.

    The input is checked first (as the manifest schema checks it); on a problem nothing is written (exit 2).
    """
    from . import scaffold

    root = find_root()
    try:
        created = scaffold.create(root, paper, title=title, authors=[a.strip() for a in authors.split(",")],
                                  year=year, venue=venue, arxiv=arxiv)
    except scaffold.ScaffoldError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for p in created:
        click.echo(f"created {p.relative_to(root)}")
    click.echo(f"next: edit them, then `registry index && registry validate && registry run {paper} --profile smoke`")


# --------------------------------------------------------------------------- training and verification


def _run_options(f):
    f = click.option("--profile", default="cpu", show_default=True, help="smoke | cpu | paper (or any defined).")(f)
    f = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Override the manifest's device.")(f)
    f = click.option("--seeds", help="Comma-separated seeds overriding the profile's (e.g. 0,1).")(f)
    f = click.option("--threads", type=click.IntRange(min=1),
                     help="torch intra-op threads (default: torch's choice; 1 per process with --jobs).")(f)
    f = click.option("--jobs", type=click.IntRange(min=1),
                     help="Train seeds (and a method's declared parts) in this many processes at once (CPU only; "
                          "default: the profile's jobs, else 1); results equal a --threads run.")(f)
    f = click.option("--fresh", is_flag=True,
                     help="Train every seed again, ignoring seeds kept from an interrupted run of the same config.")(f)
    f = click.option("--no-track", is_flag=True, help="Do not log to MLflow (results are still written).")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(f)
    return f


def _parse_seeds(seeds: str | None) -> list[int] | None:
    if not seeds:
        return None
    try:
        out = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        click.echo(f"error: --seeds must be comma-separated integers, got {seeds!r}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    from .schema import SEED_LIMIT

    if not out or any(not 0 <= s < SEED_LIMIT for s in out) or len(set(out)) != len(out):
        click.echo(f"error: --seeds must be distinct integers from 0 to 2**32 - 1 ({SEED_LIMIT - 1}), got {seeds!r}",
                   err=True)
        sys.exit(EXIT_BAD_INPUT)
    return out


def _track(fn, root: Path, paper: str, profile: str, what: str) -> None:
    from . import tracking

    try:
        run_id = fn()
        click.echo(f"mlflow: {what} logged to run {run_id} ({tracking.tracking_uri(root)})")
    except Exception as exc:  # tracking must never lose results
        tracking.mark_pending(root, paper, profile, f"{type(exc).__name__}: {exc}")
        click.echo(f"warning: MLflow logging failed ({type(exc).__name__}: {exc}). Results are kept on disk; "
                   f"`registry sync` logs them later.", err=True)


def do_train(paper: str, profile: str, device: str | None, seeds: str | None, threads: int | None,
             no_track: bool, quiet: bool, jobs: int | None = None, fresh: bool = False) -> None:
    from . import runner, tracking

    root = find_root()
    m, path = load_one(root, paper)
    if m.status != "implemented":
        click.echo(f"error: {paper} is catalogued only ({m.status_reason}); nothing to run", err=True)
        sys.exit(EXIT_BAD_INPUT)
    _profile_choice(m, profile)
    try:
        out = runner.train(root, m, path, profile, device=device,
                           seeds=_parse_seeds(seeds), show_progress=not quiet, threads=threads, jobs=jobs,
                           fresh=fresh, echo=lambda s: click.echo(s, err=True))
    except runner.RunError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"results: {out.run_dir.relative_to(root)} ({out.record['seconds']:.1f}s on {out.record['device']})")
    if not no_track:
        _track(lambda: tracking.log_run(root, m.id, profile, m.paper.title), root, m.id, profile, "run")


_MISSING = object()


def _trained_config_drift(m, profile: str, record: dict) -> tuple[list[str], str | None]:
    """The config fields (dotted) that differ between the run's recorded config and the manifest's resolved
    config now, and a note when the run trained other seeds than the profile lists (e.g. ``--seeds 0``)."""
    then = record.get("config")
    if not isinstance(then, dict):
        return [], None
    now = json.loads(json.dumps(mf.resolve(m, profile).as_dict(), default=str))  # as the record stored it

    def diff(a, b, where: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b), key=str)
                    for d in diff(a.get(k, _MISSING), b.get(k, _MISSING), f"{where}.{k}" if where else str(k))]
        return [] if a == b else [where]

    skip = ("device", "seeds", "profile")  # device: the run records the one it used
    changed = diff({k: v for k, v in then.items() if k not in skip},
                   {k: v for k, v in now.items() if k not in skip}, "")
    note = None
    if then.get("seeds") != now.get("seeds"):
        note = f"judged on the seeds the run trained, {then.get('seeds')}; the profile lists {now.get('seeds')}"
    return changed, note


def do_verify(paper: str, profile: str, no_track: bool) -> int:
    from . import runner, verify

    root = find_root()
    m, _ = load_one(root, paper, with_methods=False)
    _profile_choice(m, profile)
    try:
        record = runner.load_record(root, paper, profile)
    except runner.RunError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    changed, seeds_note = _trained_config_drift(m, profile, record)
    if changed:
        click.echo(f"error: results/{paper}/{profile}/run was trained with another config than the manifest's now "
                   f"({', '.join(changed)} changed since); train again: registry train {paper} --profile {profile}",
                   err=True)
        sys.exit(1)
    result = verify.verify(m, profile, [s["metrics"] for s in record["per_seed"]])
    if seeds_note:
        result["seeds_note"] = seeds_note
    result["run_id"] = record["run_id"]
    result["run_finished_at"] = record.get("finished_at")  # which run/ this judged (train replaces run/)
    result["digest"] = mf.content_hash(result)
    rdir = runner.results_dir(root, paper, profile)
    runner.atomic_write_text(rdir / "verification.json", json.dumps(result, indent=2) + "\n")
    runner.atomic_write_text(rdir / "verification.md", verify.render_markdown(result))
    click.echo(verify.render_text(result))
    if not no_track:
        from . import tracking

        _track(lambda: tracking.log_verification(root, paper, profile, result, m.paper.title), root, paper,
               profile, "verification")
    return EXIT_CLAIM_FAILED if result["verdict"] == "fail" else 0


@cli.command()
@click.argument("paper")
@_run_options
def train(paper: str, profile: str, device: str | None, seeds: str | None, threads: int | None,
          jobs: int | None, fresh: bool, no_track: bool, quiet: bool) -> None:
    """Train PAPER at a profile: every seed, results to results/PAPER/PROFILE/run, logged to MLflow."""
    do_train(paper, profile, device, seeds, threads, no_track, quiet, jobs, fresh)


@cli.command("verify")
@click.argument("paper")
@click.option("--profile", default="cpu", show_default=True)
@click.option("--no-track", is_flag=True, help="Do not log the verdict to MLflow.")
@click.option("--exit-zero", is_flag=True,
              help="Exit 0 when claims fail (the verdict is still written and logged). The DVC stage uses it, "
                   "so that a failing claim is recorded as a result instead of halting the pipeline.")
def verify_cmd(paper: str, profile: str, no_track: bool, exit_zero: bool) -> None:
    """Check PAPER's claims at a profile against its latest results; exit 1 when a claim fails."""
    code = do_verify(paper, profile, no_track)
    sys.exit(0 if exit_zero and code == EXIT_CLAIM_FAILED else code)


@cli.command()
@click.argument("paper")
@_run_options
def run(paper: str, profile: str, device: str | None, seeds: str | None, threads: int | None,
        jobs: int | None, fresh: bool, no_track: bool, quiet: bool) -> None:
    """Train and verify PAPER at a profile (train + verify); exit 1 when a claim fails."""
    do_train(paper, profile, device, seeds, threads, no_track, quiet, jobs, fresh)
    sys.exit(do_verify(paper, profile, no_track))


@cli.command()
def sync() -> None:
    """Log to MLflow every result on disk that has not reached it (e.g. after tracking was down)."""
    from . import tracking

    root = find_root()
    titles: dict[str, str | None] = {}

    def title(paper: str) -> str | None:  # the experiment's paper.title; a missing/broken manifest only loses it
        if paper not in titles:
            try:
                titles[paper] = mf.load(mf.find(root, paper), with_methods=False, root=root).paper.title
            except Exception:
                titles[paper] = None
        return titles[paper]

    def stale_note(paper: str, profile: str) -> str:
        return f"stale verification, run `registry verify {paper} --profile {profile}`"

    for path in tracking.unreadable_records(root):
        click.echo(f"skipped {path.relative_to(root)}: not a run record the registry wrote (unreadable or edited); "
                   f"train again", err=True)
    stale = set(tracking.stale_verifications(root))
    todo = tracking.pending(root)
    for paper, profile in sorted(stale):
        if not any(t[:2] == (paper, profile) for t in todo):
            click.echo(f"{paper}@{profile}: {stale_note(paper, profile)}")
    if not todo:
        click.echo("nothing to sync")
        return
    failed = 0
    for paper, profile, has_verification in todo:
        try:
            result = None
            if has_verification:
                result = json.loads((root / "results" / paper / profile / "verification.json").read_text())
                if tracking.verification_is_stale(root, paper, profile, result):  # replaced since pending()
                    stale.add((paper, profile))
                    result = None
            if result is not None:
                tracking.log_verification(root, paper, profile, result, title(paper))
            else:
                tracking.log_run(root, paper, profile, title(paper))
            note = f" (run only: {stale_note(paper, profile)})" if (paper, profile) in stale else ""
            click.echo(f"synced {paper}@{profile}{note}")
        except Exception as exc:
            failed += 1
            click.echo(f"error: {paper}@{profile}: {type(exc).__name__}: {exc}", err=True)
    sys.exit(1 if failed else 0)


def main() -> None:
    """Entry point. Ctrl-C exits 130 with "interrupted" (click's own handling would exit 1, the code of a
    failing claim); click's usage errors keep their messages and exit codes."""
    try:
        rv = cli.main(prog_name="registry", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
