"""Train a paper at a profile: seed everything, pick the device, run every seed, write results atomically.

Layout of ``results/<paper>/<profile>/``::

    run/                 written whole or not at all (a temporary directory renamed into place)
      metrics.json       per-seed final metrics, timings and peak memory (MiB: CUDA memory torch allocated,
                         or on CPU the peak resident set of the process while it trained the seed or part),
                         resolved config, run identity
      curves.csv         seed,step,metric,value
      curves.png         one panel per curve metric, one line per seed
      environment.json   git SHA, packages, torch/CUDA, device, manifest hash
      manifest.yaml      the manifest exactly as it was run
    verification.json    written by ``registry verify``
    verification.md
    tracking.json        MLflow bookkeeping (which run holds these results)
    .partial-<key>/      while a run is under way or after it broke off: every finished seed (or declared part
                         of one) as seed-<s>[.part-<p>].json plus its seed-<s>/ files (those it lists); a rerun
                         with the same config, method code, device and (on CPU) thread count reuses those whose
                         files are all there, and removes any other file in seed-<s>/; a completed run
                         removes the seeds it used, and the folder once it keeps nothing else
    .lock                held (flock) by the run under way; a second run of the same paper and profile is refused
"""
from __future__ import annotations

import csv
import errno
import hashlib
import inspect
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from . import methods
from .context import RunContext
from .manifest import Resolved, content_hash, is_paper_level, resolve
from .schema import Manifest

PACKAGES = ("torch", "numpy", "pydantic", "pyyaml", "click", "mlflow", "dvc", "scikit-learn", "mnist1d")


def finished_stamp() -> str:
    """UTC time with microseconds: run/metrics.json's ``finished_at``, which tells one training of a config from
    the next (MLflow's ledger and the stale-verification check compare it), so two runs in one second differ."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RunError(Exception):
    """A run could not start or a method misbehaved (exit code 1, message without traceback)."""


def results_dir(root: Path, paper: str, profile: str) -> Path:
    return root / "results" / paper / profile


def run_dir(root: Path, paper: str, profile: str) -> Path:
    return results_dir(root, paper, profile) / "run"


# --------------------------------------------------------------------------- identity and environment


def _methods_lib() -> Path:
    """The shared method library of the ``methods`` package that runs (a registry copy's own, see
    cli.find_root), else the one next to this package."""
    try:
        import methods as pkg

        return Path(pkg.__file__).resolve().parent / "_lib"
    except (ImportError, TypeError):
        return Path(__file__).resolve().parent.parent / "methods" / "_lib"


def code_hash(method: methods.Method) -> str:
    """Hash of the method's own code and the shared method library it may use."""
    h = hashlib.sha256()
    src = method.source_dir
    files = [(src.parent, f) for f in (sorted(src.rglob("*.py")) if src.is_dir() else [src])]
    lib = _methods_lib()
    if lib.is_dir():
        files += [(lib.parent, f) for f in sorted(lib.rglob("*.py"))]
    for base, f in files:  # the path inside the methods package, so that moving code between files counts
        h.update(f.relative_to(base).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def run_identity(resolved: Resolved, method: methods.Method, seeds: list[int] | None = None) -> str:
    """Content identity of a run: resolved config, the seeds run (``seeds``, default the profile's), device
    request and method code."""
    config = resolved.as_dict() | ({"seeds": list(seeds)} if seeds is not None else {})
    return content_hash({"paper": resolved.manifest.id, "method": method.key, "config": config,
                         "code": code_hash(method)})


def partial_key(resolved: Resolved, method: methods.Method, device: str) -> str:
    """What a finished seed's result depends on: config sections, method code, the registry's seeding code,
    the torch version and device (not the seed list; the thread count is checked per kept seed, see
    ``_usable_units``)."""
    import torch

    seeding = hashlib.sha256(Path(__file__).with_name("context.py").read_bytes()
                             + inspect.getsource(seed_everything).encode()).hexdigest()
    return content_hash({"paper": resolved.manifest.id, "method": method.key,
                         "sections": resolved.method_sections(), "code": code_hash(method), "device": device,
                         "seeding": seeding, "torch": torch.__version__})


def _unit_file(partial: Path, seed: int, part: str | None) -> Path:
    return partial / (f"seed-{seed}.json" if part is None else f"seed-{seed}.part-{part}.json")


def _save_unit(partial: Path, out: dict[str, Any], threads: int | None) -> None:
    """Keep one finished seed (or part of one) of a run under way (atomic: whole or absent)."""
    unit = {k: out[k] for k in ("seed", "part", "seconds", "peak_memory_mb", "metrics", "files")}
    unit.update(curves=[list(c) for c in out["curves"]], threads=threads)
    atomic_write_text(_unit_file(partial, out["seed"], out["part"]), json.dumps(unit) + "\n")


def _load_units(partial: Path) -> dict[tuple[int, str | None], dict[str, Any]]:
    units: dict[tuple[int, str | None], dict[str, Any]] = {}
    for f in sorted(partial.glob("seed-*.json")):
        try:
            u = json.loads(f.read_text(encoding="utf-8"))
            u["curves"] = [tuple(c) for c in u["curves"]]
            u.setdefault("files", None)  # kept before files were listed: which files are its own is unknown
            units[(int(u["seed"]), u["part"])] = u
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: that unit is trained again
    return units


def _split_units(units: dict, keep) -> tuple[dict, list[tuple[int, str | None]]]:
    """(the units ``keep(key, unit)`` accepts, the keys of the rest in seed and part order)."""
    ok = {k: u for k, u in units.items() if keep(k, u)}
    return ok, sorted((k for k in units if k not in ok), key=lambda k: (k[0], k[1] or ""))


def _usable_units(units: dict, device: str, threads: int) -> tuple[dict, list[tuple[int, str | None]]]:
    """Split kept units into those this run may reuse and those it may not: on CPU the intra-op thread
    count changes the floating-point reduction order, so a seed kept by a run with another thread count
    (or an unknown one) is trained again, or the resumed results would not be an uninterrupted run's."""
    if device != "cpu":
        return units, []
    return _split_units(units, lambda k, u: u.get("threads") == threads)


def _units_with_files(units: dict, partial: Path) -> tuple[dict, list[tuple[int, str | None]]]:
    """Split kept units into those whose files (``ctx.write_json``) are all in ``partial``/seed-N and the
    rest: a unit whose files are gone (cleared by a later attempt at its seed) or unknown is trained again, so
    that a resumed run's files always come with its numbers."""
    return _split_units(units, lambda k, u: u["files"] is not None
                        and all((partial / f"seed-{k[0]}" / f).is_file() for f in u["files"]))


def _clear_seed_dir(partial: Path, seed: int, kept: dict) -> None:
    """Leave in ``partial``/seed-``seed`` only the files of the seed's kept units: the rest is what an unfinished
    attempt left there (``ctx.write_json`` creates the folder when a seed writes its first file)."""
    seed_dir = partial / f"seed-{seed}"
    if not seed_dir.is_dir():
        return
    own = {f for (s, _), u in kept.items() if s == seed for f in u["files"]}
    for f in seed_dir.iterdir():
        if f.name not in own:
            shutil.rmtree(f) if f.is_dir() and not f.is_symlink() else f.unlink()


def _describe_units(keys: list[tuple[int, str | None]]) -> str:
    by_seed: dict[int, list[str]] = {}
    for seed, part in keys:
        by_seed.setdefault(seed, [])
        if part is not None:
            by_seed[seed].append(part)
    return ", ".join(f"{seed}" + (f" (part {', '.join(ps)})" if ps else "") for seed, ps in sorted(by_seed.items()))


def _discard_units(partial: Path, seeds: list[int]) -> None:
    """Remove what ``partial`` keeps for ``seeds`` (now in run/), and the folder once it keeps nothing else."""
    for seed in seeds:
        for f in (*partial.glob(f"seed-{seed}.json"), *partial.glob(f"seed-{seed}.part-*.json")):
            f.unlink(missing_ok=True)
        shutil.rmtree(partial / f"seed-{seed}", ignore_errors=True)
    if not any(partial.glob("seed-*.json")):
        shutil.rmtree(partial, ignore_errors=True)


class RunLock:
    """An exclusive lock on one paper and profile's results folder, held for a whole training: a second run
    of the same paper and profile would share the kept seeds and its clean-up would delete them under the
    first. Released when the process ends, however it ends (flock)."""

    def __init__(self, folder: Path, what: str):
        self.path = folder / ".lock"
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise RunError(f"cannot lock {self.path} ({exc.strerror}); results of {self.what} need a "
                               f"folder on a file system with locks") from None
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(f"another run of {self.what} is under way (process {holder}, lock {self.path}); "
                           f"wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays (deleting it would race)
            self._fd = None


def _reusable(units: dict, seed: int, names: list[str | None]) -> list[dict] | None:
    """The kept results that make up ``seed`` whole (the seed itself, or every declared part), else None."""
    if (seed, None) in units:
        return [units[(seed, None)]]
    if names != [None] and all((seed, p) in units for p in names):
        return [units[(seed, p)] for p in names]
    return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else ``platform.processor()`` or the architecture)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(root: Path, device: str, manifest_path: Path) -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    status = _git(root, "status", "--porcelain")
    cpu = cpu_model()
    env: dict[str, Any] = {
        "git_sha": _git(root, "rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        # the SIMD kernels torch dispatches to on this CPU (e.g. AVX2, AVX512): with the thread count, what
        # decides the floating-point reduction order, so two CPU runs compare bit for bit only when both match
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "packages": versions,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else cpu,
        "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(),
    }
    return env


# --------------------------------------------------------------------------- seeding and device


def pick_device(requested: str) -> str:
    import torch

    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RunError("this run asks for device 'cuda' but no CUDA device is available "
                           "(use --device cpu or set hardware.device: auto)")
        return "cuda"
    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int, device: str) -> None:
    import torch

    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False
        torch.cuda.manual_seed_all(seed)


# --------------------------------------------------------------------------- writing


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def write_curves_csv(path: Path, curves: list[tuple[int, int, str, float]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["seed", "step", "metric", "value"])
        w.writerows(curves)


def read_curves_csv(path: Path) -> list[tuple[int, int, str, float]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        next(r, None)
        return [(int(s), int(st), m, float(v)) for s, st, m, v in r]


def plot_curves(path: Path, curves: list[tuple[int, int, str, float]], title: str) -> bool:
    """Write the curves figure (see ``curves_figure``) to ``path``; False when there is nothing to plot."""
    if not curves:
        return False
    import matplotlib.pyplot as plt

    fig = curves_figure(curves, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def curves_figure(curves: list[tuple[int, int, str, float]], title: str):
    """One panel per metric, one line per seed (a seed has one colour in every panel). The margins are fixed
    in inches (tight_layout took longer than drawing) and an axis has about 4 ticks: a 45-panel figure takes
    about 2.5 s to lay out and save, where it took about 5.5 s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    series: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for seed, step, name, value in curves:
        series.setdefault(name, {}).setdefault(seed, []).append((step, value))
    names = sorted(series)
    color = {seed: f"C{i % 10}" for i, seed in enumerate(sorted({c[0] for c in curves}))}
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    width, height = 4.2 * cols, 3.0 * rows
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for seed, pts in sorted(series[name].items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, color=color[seed],
                    marker="o" if len(pts) < 3 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.locator_params(nbins=4)
        vals = [v for pts in series[name].values() for _, v in pts]
        if "loss" in name and min(vals) > 0 and max(vals) / min(vals) > 100:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(handles=[Line2D([], [], color=c, lw=1.2, label=f"seed {s}") for s, c in color.items()],
                        fontsize=7)
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    fig.subplots_adjust(left=0.65 / width, right=1 - 0.15 / width, top=1 - 0.55 / height, bottom=0.45 / height,
                        wspace=0.32, hspace=0.55)
    return fig


def replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``; an existing ``final`` is swapped out first and deleted only afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError (another user's process) or cannot be told: keep its files
        return True
    return True


def remove_stale_temporaries(parent: Path, echo=print) -> None:
    """Delete ``.run.tmp-<pid>`` folders in ``parent`` whose process is gone (a run killed by SIGKILL, the OOM
    killer or a power cut never reaches its clean-up). A folder of a live process, e.g. a concurrent run of the
    same profile, is left alone, and so is a finished one (its metrics.json is written): a run killed while
    moving it into place, which is named so that nothing finished is deleted."""
    for p in sorted(parent.glob(".run.old-*")):  # replace_dir's swapped-out run/, if its process died there
        pid = p.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        if (parent / "run").is_dir():
            shutil.rmtree(p, ignore_errors=True)
            echo(f"removed {p.name}, a replaced run left by a process that is gone")
        else:
            echo(f"kept {p}: the previous run, swapped out by a process that died before moving the new one in")
    for p in sorted(parent.glob(".run.tmp-*")):
        pid = p.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        if (p / "metrics.json").exists():
            echo(f"kept {p}: a finished run whose process died while moving it into place; "
                 f"move it to {parent / 'run'} by hand if that folder is missing or older")
            continue
        shutil.rmtree(p, ignore_errors=True)
        echo(f"removed {p.name}, the unfinished output of a run whose process is gone")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a failed write leaves the old content (and no temporary file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    record: dict[str, Any]


def _check_metrics(key: str, seed: int, metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise RunError(f"method {key!r} returned {type(metrics).__name__}, expected a mapping of metric -> number")
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise RunError(f"method {key!r} (seed {seed}) returned a non-numeric metric {k!r}: {v!r}") from None
    return out


def reset_peak_memory(device: str) -> None:
    """Start a new peak for peak_memory_mb: torch's CUDA statistics, or on Linux the process's resident-set
    high-water mark (``/proc/self/clear_refs``; elsewhere the peak stays the process's since it started)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device: str) -> float | None:
    """Peak memory since reset_peak_memory, in MiB: on CUDA what torch allocated, on CPU the process's resident
    set (VmHWM on Linux; else its peak since it started). None where unknown."""
    if device.startswith("cuda"):
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return round(kib / 2**10, 1)
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


def largest_peak(peaks: list[float | None]) -> float | None:
    """The peak memory of several seeds or parts: the largest, or None when any is unknown (kept by a version
    that did not record it) or there are none."""
    return None if not peaks or None in peaks else max(peaks)


def _train_unit(method, cfg, ctx: RunContext) -> dict[str, Any]:
    """Seed everything, run the method for ``ctx.seed`` (or one part of it), check its metrics; the result as
    the runner keeps it: seed, part, seconds, peak memory, metrics, curves and the files it wrote."""
    seed_everything(ctx.seed, ctx.device)
    where = f"seed {ctx.seed}" + (f" (part {ctx.part!r})" if ctx.part is not None else "")
    reset_peak_memory(ctx.device)
    t0 = time.perf_counter()
    try:
        raw = method.run(cfg, ctx)
    except RunError:
        raise
    except Exception as exc:  # a method crash: keep the message, say where it happened
        raise RunError(f"method {method.key!r} failed on {where}: {type(exc).__name__}: {exc}") from exc
    seconds = round(time.perf_counter() - t0, 3)
    metrics = _check_metrics(method.key, ctx.seed, raw)
    return {"seed": ctx.seed, "part": ctx.part, "seconds": seconds, "peak_memory_mb": peak_memory_mb(ctx.device),
            "metrics": metrics, "curves": ctx.curves, "files": ctx.files}


def _seed_job(paper: str, profile: str, method_key: str, method_module: str, sections: dict, seed: int,
              part: str | None, device: str, seed_dir: str, threads: int) -> dict[str, Any]:
    """One seed, or one declared part of it, in a worker process (``train(jobs=N)``): the same steps
    as the sequential loop. Returns a plain dict (picklable); a method crash comes back as
    ``{"error": message}``."""
    import importlib

    import torch

    torch.set_num_threads(threads)
    importlib.import_module(method_module)  # registers the method, also one defined outside methods/
    method = methods.get(method_key)
    cfg = method.config.model_validate(sections)
    ctx = RunContext(paper=paper, profile=profile, seed=seed, device=device, out_dir=Path(seed_dir),
                     show_progress=False, part=part)
    try:
        return _train_unit(method, cfg, ctx)
    except RunError as exc:
        return {"error": str(exc)}


def _seed_job_packed(args: tuple) -> dict[str, Any]:
    return _seed_job(*args)


def _worker_init() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (no traceback per worker), and end at once when the
    parent is gone (killed by SIGKILL or the OOM killer, so it could not stop them): an orphan would go on
    writing into the kept seeds after the run's lock is released."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame) -> None:
    raise _Terminated(f"stopped by signal {signum}")


def _stop_pool(pool) -> None:
    """Stop a process pool at once: cancel what has not started and terminate the workers still running."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def _merge_parts(key: str, seed: int, outs: list[dict]) -> dict[str, float]:
    """The metrics of a seed's parts, in declared order; two parts returning the same metric, or logging the
    same curve (their points would interleave in one series), are an error."""
    merged: dict[str, float] = {}
    logged: set[str] = set()
    for out in outs:
        clash = sorted(set(merged) & set(out["metrics"]))
        if clash:
            raise RunError(f"method {key!r} (seed {seed}) returned metric {clash[0]!r} from two parts "
                           f"(part {out['part']!r} and an earlier one): each part must return only its own metrics")
        names = {c[2] for c in out["curves"]}
        clash = sorted(logged & names)
        if clash:
            raise RunError(f"method {key!r} (seed {seed}) logged curve {clash[0]!r} from two parts "
                           f"(part {out['part']!r} and an earlier one): each part must log its own curve names")
        merged.update(out["metrics"])
        logged |= names
    return merged


def _add_seed(key: str, seed: int, outs: list[dict], per_seed: list[dict], curves: list) -> None:
    """Append one seed, made of its results ``outs`` (the whole seed, or its parts in declared order)."""
    per_seed.append({"seed": seed, "seconds": round(sum(o["seconds"] for o in outs), 3),
                     "peak_memory_mb": largest_peak([o.get("peak_memory_mb") for o in outs]),
                     "metrics": _merge_parts(key, seed, outs)})
    for o in outs:
        curves += [tuple(c) for c in o["curves"]]


def _train_seed_in_process(paper: str, profile: str, method, cfg, dev: str, seed: int, names: list[str | None],
                           partial: Path, kept: dict, threads: int, show_progress: bool, echo) -> list[dict]:
    """Train what ``kept`` lacks of ``seed`` in this process: the whole seed, or each missing declared part
    (``names``, in their order) as a separate call, exactly as a worker process of ``--jobs`` trains it, so a
    sequential run keeps every finished part, reuses parts kept by any earlier run and merges the same
    results. Returns the seed's results (its parts in declared order)."""
    have = {k: u for k, u in kept.items() if k[0] == seed and k[1] is not None and k[1] in names}
    _clear_seed_dir(partial, seed, have)  # files of an unfinished attempt go; the kept parts' files stay
    outs = []
    for part in names:
        if (seed, part) in have:
            outs.append(have[(seed, part)])
            continue
        label = f"seed {seed}" + (f" part {part}" if part is not None else "")
        ctx = RunContext(paper=paper, profile=profile, seed=seed, device=dev, out_dir=partial / f"seed-{seed}",
                         show_progress=show_progress, part=part)
        echo(f"[{paper}@{profile}] {label} on {dev} ...")
        out = _train_unit(method, cfg, ctx)
        _save_unit(partial, out, threads)
        echo(f"[{paper}@{profile}] {label} done in {out['seconds']:.1f}s")
        outs.append(out)
    return outs


def _run_seeds_parallel(jobs: int, threads: int, manifest: Manifest, profile: str, method, sections: dict,
                        parts: dict[str, float], dev: str, run_seeds: list[int], partial: Path,
                        kept: dict[tuple[int, str | None], dict], echo) -> tuple[list[dict], list]:
    """Train the seeds in ``jobs`` worker processes of ``threads`` torch threads each (spawned, so no
    OpenMP state is inherited). With declared ``parts`` (name -> relative cost) every (seed, part) is
    its own task, the costliest first, and a seed's parts are merged in their declared order. Every
    task runs exactly as in the sequential loop with ``torch.set_num_threads(threads)``, so the results
    equal a ``--threads <threads>`` run. On the first failure (a method error, a worker process that dies,
    Ctrl-C) every result already finished is kept, then the workers are terminated, so none writes
    afterwards. Seeds (or parts) kept in ``kept`` from an interrupted run are not trained again; each newly
    finished one is kept in ``partial`` at once."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    names: list[str | None] = list(parts) or [None]  # merge order
    costliest_first = sorted(parts, key=lambda p: -parts[p]) or [None]  # stable: ties keep declared order
    whole = {seed for seed in run_seeds if (seed, None) in kept}
    units = [(seed, part) for part in costliest_first for seed in run_seeds
             if seed not in whole and (seed, part) not in kept]
    for seed in {seed for seed, _ in units}:  # files of an unfinished attempt go; the kept parts' files stay
        _clear_seed_dir(partial, seed, kept)
    tasks = [(manifest.id, profile, method.key, method.module, sections, seed, part, dev,
              str(partial / f"seed-{seed}"), threads) for seed, part in units]
    results: dict[tuple[int, str | None], dict] = dict(kept)
    if tasks:
        todo = sorted({seed for seed, _ in units})
        what = f"seeds {', '.join(map(str, todo))}" + (f" x parts {', '.join(parts)}" if parts else "")
        n_proc = min(jobs, len(tasks))
        echo(f"[{manifest.id}@{profile}] {what} on {dev}: {n_proc} processes x {threads} thread(s) ...")
        import signal
        import threading

        pool = ProcessPoolExecutor(max_workers=n_proc, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init)
        # SIGTERM (timeout, a cancelled job) stops the workers as Ctrl-C does, through the finally below
        old_term = (signal.signal(signal.SIGTERM, _raise_terminated)
                    if threading.current_thread() is threading.main_thread() else None)
        try:
            futures = {pool.submit(_seed_job_packed, task): (task[5], task[6]) for task in tasks}  # FIFO: costliest first
            order = {unit: i for i, unit in enumerate(futures.values())}
            waiting = set(futures)
            while waiting:
                done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                errors = []
                for fut in sorted(done, key=lambda f: order[futures[f]]):
                    seed, part = futures[fut]
                    label = f"seed {seed}" + (f" part {part}" if part is not None else "")
                    try:
                        out = fut.result()
                    except BrokenProcessPool:
                        errors.append(f"a worker process died while training {label} or another task (killed by the "
                                      f"system, e.g. out of memory, or crashed in native code); the seeds finished "
                                      f"so far are kept")
                        continue
                    except Exception as exc:  # e.g. the method's module failed to import in the worker
                        errors.append(f"{label} failed in its worker process: {type(exc).__name__}: {exc}")
                        continue
                    if "error" in out:
                        errors.append(out["error"])
                        continue
                    _save_unit(partial, out, threads)  # every finished result is kept before any error is raised
                    results[(out["seed"], out["part"])] = out
                    echo(f"[{manifest.id}@{profile}] {label} done in {out['seconds']:.1f}s")
                if errors:
                    raise RunError(errors[0])
            pool.shutdown(wait=True)
        except _Terminated as exc:
            raise RunError(f"{exc}; the seeds finished so far are kept") from None
        finally:
            _stop_pool(pool)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
    per_seed, curves = [], []
    for seed in run_seeds:  # the sequential loop's order, whatever order the workers finished in
        outs = _reusable(results, seed, names)
        assert outs is not None, (seed, names)
        _add_seed(method.key, seed, outs, per_seed, curves)
    return per_seed, curves


def train(root: Path, manifest: Manifest, manifest_path: Path, profile: str, *, device: str | None = None,
          seeds: list[int] | None = None, show_progress: bool = True, threads: int | None = None,
          jobs: int | None = None, fresh: bool = False, echo=print) -> RunOutcome:
    """Train every seed of ``profile`` and write ``results/<id>/<profile>/run`` atomically.

    ``jobs`` > 1 trains seeds (and the parts a method declares within a seed) in that many worker
    processes on CPU, each with ``threads`` torch threads (default 1); results then equal a
    sequential run with ``threads=<that number>``. ``jobs=None`` takes the profile's ``jobs`` (default 1).

    Every finished seed (or part) is kept at once in ``.partial-<key>/`` next to ``run/``; when a run breaks
    off (a crash, Ctrl-C, a lost machine), the next run with the same config, method code and device trains
    only what is missing (``fresh=True``: everything again). The folder is removed once ``run/`` is written.
    """
    import torch

    resolved = resolve(manifest, profile)
    method = methods.get(manifest.method or "")
    cfg = method.config.model_validate(resolved.method_sections())
    dev = pick_device(device or resolved.device)
    if dev == "cpu" and is_paper_level(profile) and resolved.device != "cpu":  # device: cpu = meant for a CPU
        est = manifest.hardware.estimated_minutes.get(profile)
        echo(f"warning: the '{profile}' profile is the paper's own setup, meant for a GPU"
             + (f" (~{est:g} min there)" if est is not None else "") + "; running it on CPU will be slow")
    if jobs is None:
        jobs = resolved.jobs or 1
    if jobs < 1:
        raise RunError(f"jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise RunError(f"threads must be >= 1, got {threads}")
    run_seeds = list(seeds) if seeds else resolved.seeds
    if len(set(run_seeds)) != len(run_seeds):
        raise RunError(f"seeds must be distinct, got {run_seeds}")
    parts = method.part_costs(cfg)
    if jobs > 1 and dev != "cpu":
        echo(f"note: parallel jobs (--jobs or the profile's jobs) apply to CPU runs only; the seeds run one "
             f"after another on {dev}")
        jobs = 1
    if jobs > 1:  # decided before jobs is cut to the number of tasks: a run of one seed uses the same threads
        threads = threads or 1
    jobs = min(jobs, len(run_seeds) * max(1, len(parts)))
    if threads:
        torch.set_num_threads(threads)
    threads_used = torch.get_num_threads()  # per process; what a kept seed must match to be reused on CPU
    ident = run_identity(resolved, method, run_seeds)

    final = run_dir(root, manifest.id, profile)
    final.parent.mkdir(parents=True, exist_ok=True)
    with RunLock(final.parent, f"{manifest.id}@{profile}"):
        return _train_locked(root, manifest, manifest_path, profile, resolved, method, cfg, dev, run_seeds, parts,
                             jobs, threads_used, ident, final, fresh, show_progress, echo)


def _train_locked(root: Path, manifest: Manifest, manifest_path: Path, profile: str, resolved: Resolved, method,
                  cfg, dev: str, run_seeds: list[int], parts: dict[str, float], jobs: int, threads: int, ident: str,
                  final: Path, fresh: bool, show_progress: bool, echo) -> RunOutcome:
    remove_stale_temporaries(final.parent, echo)
    partial = final.parent / f".partial-{partial_key(resolved, method, dev)[:16]}"
    for other in sorted(final.parent.glob(".partial-*")):
        if other != partial:
            echo(f"note: {other.relative_to(root)} keeps seeds of an interrupted run with another config, code or "
                 f"device; they are not used here (delete the folder if they are not needed)")
    if fresh:
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(exist_ok=True)
    kept, no_files = _units_with_files(_load_units(partial), partial)
    if no_files:
        echo(f"[{manifest.id}@{profile}] not reusing seed(s) {_describe_units(no_files)} kept by an interrupted run: "
             f"their files are gone or not listed (kept by an older version); they are trained again")
        for k in no_files:
            _unit_file(partial, *k).unlink(missing_ok=True)
    kept, other_threads = _usable_units(kept, dev, threads)
    if other_threads:
        echo(f"[{manifest.id}@{profile}] not reusing seed(s) {_describe_units(other_threads)} kept by an interrupted "
             f"run with another thread count (this run: {threads} per process), which changes the floating-point "
             f"results; they are trained again")
    names: list[str | None] = list(parts) or [None]
    reused = [seed for seed in run_seeds if _reusable(kept, seed, names) is not None]
    reused_parts = sorted((k for k in kept if k[0] in run_seeds and k[0] not in reused
                           and k[1] is not None and k[1] in names), key=lambda k: (k[0], names.index(k[1])))
    if reused or reused_parts:
        what = ", ".join(filter(None, [", ".join(map(str, reused)), _describe_units(reused_parts)]))
        echo(f"[{manifest.id}@{profile}] reusing seed(s) {what} finished by an interrupted run with the same config, "
             f"code, device and thread count ({partial.relative_to(root)}; --fresh retrains them)")
    tmp = final.with_name(f".run.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        per_seed = []
        curves: list[tuple[int, int, str, float]] = []
        t_all = time.perf_counter()
        if jobs > 1:
            per_seed, curves = _run_seeds_parallel(jobs, threads, manifest, profile, method,
                                                   resolved.method_sections(), parts, dev, run_seeds, partial,
                                                   kept, echo)
        else:
            for seed in run_seeds:
                outs = _reusable(kept, seed, names) or _train_seed_in_process(
                    manifest.id, profile, method, cfg, dev, seed, names, partial, kept, threads, show_progress, echo)
                _add_seed(method.key, seed, outs, per_seed, curves)
        for seed in run_seeds:  # the seeds' own files, whole (unfinished attempts were cleared or redone)
            src = partial / f"seed-{seed}"
            if src.is_dir() and any(src.iterdir()):
                shutil.copytree(src, tmp / f"seed-{seed}")
        record = {
            "paper": manifest.id, "profile": profile, "method": method.key, "run_id": ident,
            "device": dev, "seeds": run_seeds, "per_seed": per_seed,
            "seconds": round(time.perf_counter() - t_all, 3),
            "config": resolved.as_dict() | {"seeds": run_seeds, "device": dev}, "threads": threads,
            "finished_at": finished_stamp(),
        }
        if reused:
            record["reused_seeds"] = reused
        if reused_parts:
            record["reused_parts"] = [{"seed": seed, "part": part} for seed, part in reused_parts]
        _write_json(tmp / "metrics.json", record)
        write_curves_csv(tmp / "curves.csv", curves)
        plot_curves(tmp / "curves.png", curves, f"{manifest.id} @ {profile}")
        _write_json(tmp / "environment.json", environment(root, dev, manifest_path) | {"run_id": ident, "jobs": jobs})
        shutil.copyfile(manifest_path, tmp / "manifest.yaml")
        for name in ("verification.json", "verification.md"):  # they judged the run being replaced
            (final.parent / name).unlink(missing_ok=True)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _discard_units(partial, run_seeds)  # what this run used is in run/ now; other seeds stay kept
    return RunOutcome(final, record)


def is_run_record(obj: Any) -> bool:
    """Whether ``obj`` (a parsed run/metrics.json) has the fields verify and tracking read, i.e. the registry
    wrote it and nobody edited it out of shape."""
    return (isinstance(obj, dict) and isinstance(obj.get("per_seed"), list)
            and all(k in obj for k in ("run_id", "finished_at")))


def load_record(root: Path, paper: str, profile: str) -> dict[str, Any]:
    path = run_dir(root, paper, profile) / "metrics.json"
    if not path.exists():
        raise RunError(f"no results for {paper!r} at profile {profile!r} ({path} is missing): "
                       f"run `registry train {paper} --profile {profile}` first")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if not is_run_record(record):
        raise RunError(f"{path} is not a run record the registry wrote (unreadable or edited): "
                       f"run `registry train {paper} --profile {profile}` again")
    return record
