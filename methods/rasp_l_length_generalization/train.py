"""One model per task on the shared ``seq_train`` loop (imported lazily by ``run``)."""
from __future__ import annotations

from methods._lib import seq_train

from .tasks import make_task


def train_task(name: str, cfg, ctx) -> tuple[dict[str, float], list[str]]:
    d, mc, tc = cfg.data, cfg.model, cfg.train.for_task(name)
    task = make_task(name, d.symbols(name))
    # test sets from the shared eval seed (identical for every training seed), one per length
    eval_sets = seq_train.make_eval_sets(task, lengths=d.test_lengths, n=tc.eval_samples,
                                         seed=ctx.seed_for("eval") + sum(map(ord, name)))
    longest = max(task.max_seq_len(max(max(d.test_lengths), d.train_max_len)), mc.n_positions or 0)
    metrics = seq_train.train_and_eval(
        task,
        scheme=mc.scheme,
        model=seq_train.spec_from(seq_train.ModelSpec, mc),
        train=seq_train.spec_from(seq_train.TrainSpec, tc),
        train_min_len=d.train_min_len,
        train_max_len=d.train_max_len,
        eval_sets=eval_sets,
        ctx=ctx,
        tag=f"{name}_",
        seed_tag=f"{name}-",
        # random offsets reach the last row of the table: every position id up to the longest test
        # sequence is trained
        max_pos=longest - 1,
    )
    key = f"len{max(d.test_lengths)}"
    samples = [task.decode(r) for r in eval_sets[key].tokens[:2]]
    return metrics, samples


def run_all(cfg, ctx) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in cfg.data.tasks:
        if not ctx.runs(name):  # the tasks are independent parts of a seed (see __init__._parts)
            continue
        m, s = train_task(name, cfg, ctx)
        metrics.update(m)
        # two decoded examples of the longest test length, for eyeballing the format (metrics: metrics.json)
        ctx.write_json(f"samples-{name}.json", {"examples": s})
    return metrics
