"""Training/evaluation for the formal length-generalization framework (imported lazily by ``run``)."""
from __future__ import annotations

from methods._lib import seq_tasks, seq_train

# tasks whose official generators draw lengths from max(1, min) (parity starts at 0)
_MIN_ONE = {"copy_unique", "sort", "copy_repeat"}


def make_task(name: str, data) -> seq_tasks.SeqTask:
    if name in ("copy_unique", "sort"):
        return seq_tasks.make_task(name, n_symbols=data.n_symbols or data.max_len)
    if name == "copy_repeat":
        return seq_tasks.make_task(name, n_symbols=data.repeat_symbols)
    if name == "parity":
        return seq_tasks.make_task(name, count_uniform=data.parity_count_uniform)
    raise KeyError(name)


def range_key(lo: int, hi: int) -> str:
    return f"{lo}_{hi}"


def eval_sets_for(name: str, task, data, seed: int) -> tuple[dict, str]:
    """Test sets keyed by the configured ranges (ID range first); sampling clamps the minimum
    length to 1 for the copy/sort tasks, as the official generators do."""
    lo_min = 1 if name in _MIN_ONE else 0
    ranges = [(data.train_min_len, data.train_max_len)] + [tuple(r) for r in data.test_ranges]
    sets = {}
    for lo, hi in ranges:
        key = range_key(lo, hi)
        g = seq_train.gen(seq_train._subseed(seed, f"{name}:{key}"))
        sets[key] = task.sample(g, data.eval_samples, max(lo, lo_min), max(hi, lo_min))
    return sets, range_key(data.train_min_len, data.train_max_len)


def run_all(cfg, ctx) -> dict[str, float]:
    d, m, t = cfg.data, cfg.model, cfg.train
    eval_seed = ctx.seed_for("eval")
    metrics: dict[str, float] = {}
    for name in d.tasks:
        if not ctx.runs(name):  # the tasks are independent parts of a seed (see __init__._parts)
            continue
        task = make_task(name, d)
        arch = m.tasks[name]
        sets, id_key = eval_sets_for(name, task, d, eval_seed)
        lo_min = 1 if name in _MIN_ONE else 0
        steps = arch.steps or t.steps
        mspec = seq_train.ModelSpec(arch=m.arch, n_layers=arch.n_layers, n_heads=arch.n_heads,
                                    d_model=arch.d_model, d_ff=m.d_ff)
        tspec = seq_train.spec_from(
            seq_train.TrainSpec, t, steps=steps, lr=arch.lr, eval_every=0,
            early_stop_acc=1.0 if t.early_stop else None, early_stop_every=t.eval_every,
            eval_samples=d.eval_samples,
        )
        # position table covers the longest test sequence; training offsets keep every
        # example's ids inside it (official: n_positions = 2 * max_test + 3 for copy/sort)
        max_pos = task.max_seq_len(d.max_len) - 1
        res = seq_train.train_and_eval(
            task, scheme=m.scheme, model=mspec, train=tspec,
            train_min_len=max(d.train_min_len, lo_min), train_max_len=max(d.train_max_len, lo_min),
            eval_sets=sets, ctx=ctx, tag=f"{name}_", seed_tag=f"{name}:", max_pos=max_pos, id_set=sets[id_key],
        )
        res[f"{name}_fit"] = float(res[f"{name}_acc_{id_key}"] == 1.0)
        metrics.update(res)
        longest = sets[range_key(*d.test_ranges[-1])] if d.test_ranges else sets[id_key]
        # two decoded examples of the longest test range, for eyeballing the format (metrics: metrics.json)
        ctx.write_json(f"samples-{name}.json", {"examples": [task.decode(r) for r in longest.tokens[:2]]})
    return metrics
