"""Training/evaluation loop for Position Coupling (imported lazily by ``run``)."""
from __future__ import annotations

import time

import torch

from methods._lib import arith_tasks as tasks
from methods._lib import seq_transformer as st
from methods._lib.training import optimize


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()  # CPU generator: identical streams on every device
    g.manual_seed(seed)
    return g


class _TrainStream:
    """Training batches: fixed pool shuffled per epoch (train_size) or fresh samples every step."""

    def __init__(self, task, data_cfg, batch_size: int, gen: torch.Generator):
        self.task, self.cfg, self.bs, self.gen = task, data_cfg, batch_size, gen
        self.pool = None
        if data_cfg.train_size is not None:
            self.pool = task.sample(gen, data_cfg.train_size, data_cfg.train_min_digits, data_cfg.train_max_digits)
            self.perm, self.ptr = torch.randperm(len(self.pool), generator=gen), 0

    def next(self) -> "tasks.SeqBatch":
        if self.pool is None:
            ops = self.task.sample(self.gen, self.bs, self.cfg.train_min_digits, self.cfg.train_max_digits)
            return self.task.encode(ops)
        idx = []
        need = self.bs
        while need > 0:
            if self.ptr >= len(self.perm):
                self.perm, self.ptr = torch.randperm(len(self.pool), generator=self.gen), 0
            take = self.perm[self.ptr : self.ptr + need]
            self.ptr += take.numel()
            need -= take.numel()
            idx.append(take)
        return self.task.encode(self.pool.select(torch.cat(idx)))


def _eval_sets(task, lengths, n: int, seed: int) -> dict[int, "tasks.Operands"]:
    """Test operands per length, drawn from the shared eval seed (independent of the run seed)."""
    return {L: task.sample(_gen(seed * 1000 + L), n, L, L) for L in lengths}


def _eval_batches(model, scheme, task, ops, m: int, cfg, device, max_pos: int):
    """Yield ``(logits, batch)`` for the first ``m`` problems of ``ops`` in evaluation batches (test-time IDs)."""
    for i in range(0, m, cfg.train.eval_batch_size):
        idx = torch.arange(i, min(m, i + cfg.train.eval_batch_size))
        batch = task.encode(ops.select(idx)).to(device)
        pos = st.position_ids(scheme, batch, train=False, max_pos=max_pos)
        yield model(batch.tokens, pos), batch


@torch.no_grad()
def _evaluate(model, scheme, task, sets, n: int, cfg, device, max_pos: int) -> dict[str, float]:
    model.eval()
    out = {}
    for L, ops in sets.items():
        exact_sum, tok_sum, m = 0.0, 0.0, min(n, len(ops))
        for logits, batch in _eval_batches(model, scheme, task, ops, m, cfg, device, max_pos):
            exact, tok = st.answer_accuracy(logits, batch.targets)
            exact_sum += exact.float().sum().item()
            tok_sum += tok.sum().item()
        out[f"acc_len{L}"] = exact_sum / m
        out[f"tokacc_len{L}"] = tok_sum / m
    model.train()
    return out


class _Selector:
    """Keeps the state with the lowest answer-token loss on a validation set (checkpoint selection)."""

    def __init__(self, model, scheme, task, val_set, cfg, device, max_pos: int):
        self.model, self.scheme, self.task, self.val_set = model, scheme, task, val_set
        self.cfg, self.device, self.max_pos = cfg, device, max_pos
        self.best_loss, self.best_step, self.best_state = float("inf"), 0, None

    @torch.no_grad()
    def loss(self) -> float:
        self.model.eval()
        total, n = 0.0, len(self.val_set)
        for logits, batch in _eval_batches(self.model, self.scheme, self.task, self.val_set, n, self.cfg,
                                           self.device, self.max_pos):
            # every problem has the same length, so the mean over batches weighted by size is the set's mean
            total += st.lm_loss(logits, batch.targets).item() * batch.tokens.shape[0]
        self.model.train()
        return total / n

    def check(self, step: int) -> float:
        value = self.loss()
        if value < self.best_loss:  # a non-finite loss never replaces a finite one
            self.best_loss, self.best_step = value, step
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return value

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


def _train_one(scheme: str, cfg, ctx, task, eval_sets, val_set=None) -> dict[str, float]:
    d, mc, tc = cfg.data, cfg.model, cfg.train.for_scheme(scheme)
    device = torch.device(ctx.device)
    max_len = max(max(d.test_lengths), d.train_max_digits, tc.select_len or 0)
    n_positions = st.table_size(scheme, max_pos=d.max_pos, max_seq_len=task.seq_len(max_len))
    # largest position ID the scheme may use: the coupled table's max_pos, or the sequential table's end
    max_pos = n_positions - 1 if scheme == "random_offset" else d.max_pos
    model = st.DecoderOnlyTransformer(
        vocab_size=task.vocab_size,
        n_positions=n_positions,
        d_model=mc.d_model,
        n_layers=mc.n_layers,
        n_heads=mc.n_heads,
        d_kv=mc.d_kv,
        d_ff=mc.d_ff,
        act=mc.act,
        norm_position=mc.norm_position,
    )
    model.init_weights(_gen(ctx.seed_for("init")))  # same init stream for every scheme
    model.to(device)
    opt, sched = st.adamw_cosine(model.parameters(), tc)
    # identical training data for every scheme; position offsets come from their own stream
    stream = _TrainStream(task, d, tc.batch_size, _gen(ctx.seed_for("train-data")))
    pos_gen = _gen(ctx.seed_for("train-positions"))
    curve_sets = {L: s for L, s in eval_sets.items()}
    # metric prefix: "<scheme>_" for addition (unchanged names), "<scheme>_nx2_" etc. for multiplication
    pre = f"{scheme}_{getattr(task, 'metric_tag', '')}"


    def batch_loss() -> torch.Tensor:
        batch = stream.next()
        pos = st.position_ids(scheme, batch, train=True, max_pos=max_pos, gen=pos_gen)
        batch = batch.to(device)
        return st.lm_loss(model(batch.tokens, None if pos is None else pos.to(device)), batch.targets)

    selector = _Selector(model, scheme, task, val_set, cfg, device, max_pos) if val_set is not None else None

    def curve(step: int) -> bool:
        if tc.eval_every and step % tc.eval_every == 0:
            m = _evaluate(model, scheme, task, curve_sets, tc.eval_samples_curve, cfg, device, max_pos)
            ctx.log(step, **{f"{pre}{k}": v for k, v in m.items() if k.startswith("acc_")})
        if selector is not None and step % tc.select_every == 0:
            ctx.log(step, **{f"{pre}val_loss": selector.check(step)})
        return False

    t0 = time.perf_counter()
    lv, done = optimize(model, opt, batch_loss, sched=sched, steps=tc.steps, ctx=ctx, prefix=pre, desc=scheme,
                        log_every=tc.log_every, grad_clip=tc.grad_clip, after_step=curve)
    train_s = time.perf_counter() - t0

    final: dict[str, float] = {}
    sel = None
    if selector is not None:
        ctx.log(done, **{f"{pre}val_loss": selector.check(done)})
        last = _evaluate(model, scheme, task, eval_sets, tc.eval_samples, cfg, device, max_pos)
        final.update({f"last_{k}": v for k, v in last.items()})
        final["selected_step"] = float(selector.best_step)
        final["selected_val_loss"] = selector.best_loss
        if selector.best_step == done:
            sel = last  # the final state is the selected one: evaluate it once
        else:
            selector.restore()
    if sel is None:
        sel = _evaluate(model, scheme, task, eval_sets, tc.eval_samples, cfg, device, max_pos)
    ctx.log(done, **{f"{pre}{k}": v for k, v in sel.items() if k.startswith("acc_")})
    final.update(sel)
    final["final_train_loss"] = lv
    final["train_seconds"] = train_s
    return {f"{pre}{k}": v for k, v in final.items()}


def run_all(cfg, ctx) -> dict[str, float]:
    task = tasks.TASKS[cfg.data.task]
    eval_sets = _eval_sets(task, cfg.data.test_lengths, cfg.train.eval_samples, ctx.seed_for("eval"))
    val_set = None
    if cfg.train.select_len is not None:  # shared by every seed, like the test sets, but its own stream
        L = cfg.train.select_len
        val_set = task.sample(_gen(ctx.seed_for("eval") * 1000 + 999_983 + L), cfg.train.select_samples, L, L)
    metrics: dict[str, float] = {}
    for scheme in cfg.model.schemes:
        if ctx.runs(scheme):
            metrics.update(_train_one(scheme, cfg, ctx, task, eval_sets, val_set))
    if ctx.runs(cfg.model.schemes[0]):  # once per seed, also when the schemes run as separate parts
        # a few decoded examples of the longest test length, for eyeballing the format (metrics: metrics.json)
        longest = max(cfg.data.test_lengths)
        sample = task.encode(eval_sets[longest].select(torch.arange(min(3, cfg.train.eval_samples))))
        ctx.write_json("samples.json", {"examples": [tasks.decode_tokens(r) for r in sample.tokens]})
    return metrics
