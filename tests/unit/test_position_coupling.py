"""Fast checks of the position-coupling building blocks (data format, position schemes)."""
from __future__ import annotations

import pytest
import torch

from methods._lib import arith_tasks as tasks
from methods._lib import seq_transformer as st


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _batch(n_examples: int = 64, lo: int = 1, hi: int = 5, seed: int = 0) -> tasks.SeqBatch:
    ops = tasks.AdditionTask.sample(_gen(seed), n_examples, lo, hi)
    return tasks.AdditionTask.encode(ops)


def test_addition_answers_are_correct_sums():
    ops = tasks.AdditionTask.sample(_gen(1), 200, 1, 6)
    batch = tasks.AdditionTask.encode(ops)
    for row, tgt in zip(batch.tokens, batch.targets):
        text = tasks.decode_tokens(row)[1:]  # drop BOS (rendered like EOS)
        a, rest = text.split("+")
        b, s = rest.split("=")
        assert s.endswith("$")
        assert int(a) + int(b) == int(s[:-1][::-1])  # answer is written least-significant first
        # the targets are exactly the answer digits plus EOS
        assert int((tgt != tasks.IGNORE).sum()) == len(s)


def test_coupled_ids_share_significance():
    batch = _batch(n_examples=8, lo=3, hi=3)
    ids = batch.coupled_ids[0].tolist()
    # [BOS] a2 a1 a0 + b2 b1 b0 = s0 s1 s2 s3 $
    assert ids == [0, 4, 3, 2, 1, 4, 3, 2, 1, 2, 3, 4, 5, 0]


def test_random_offset_is_sequential_at_test_time():
    batch = _batch()
    ids = st.position_ids("random_offset", batch, train=False, max_pos=40)
    L = batch.tokens.shape[1]
    assert torch.equal(ids, torch.arange(L).expand_as(ids))


def test_random_offset_shifts_stay_in_table_and_cover_it():
    batch = _batch()
    L = batch.tokens.shape[1]
    max_pos = 40
    gen = _gen(3)
    seen = torch.zeros(max_pos + 1, dtype=torch.bool)
    starts = set()
    for _ in range(50):
        ids = st.position_ids("random_offset", batch, train=True, max_pos=max_pos, gen=gen)
        assert int(ids.min()) >= 0 and int(ids.max()) <= max_pos
        # still consecutive within every example: only the start moves
        assert torch.equal(ids - ids[:, :1], torch.arange(L).expand_as(ids))
        seen[ids.flatten()] = True
        starts.update(ids[:, 0].tolist())
    assert bool(seen.all())  # every row of the table gets trained
    assert starts == set(range(max_pos - (L - 1) + 1))  # every admissible offset occurs
    assert st.table_size("random_offset", max_pos=17, max_seq_len=max_pos + 1) == max_pos + 1


def test_random_offset_rejects_too_long_sequences():
    batch = _batch(lo=5, hi=5)
    try:
        st.position_ids("random_offset", batch, train=False, max_pos=batch.tokens.shape[1] - 2)
    except ValueError:
        return
    raise AssertionError("expected a ValueError for a sequence longer than the table")


def test_nope_model_runs_without_position_table():
    assert st.table_size("nope", max_pos=17, max_seq_len=41) == 0
    model = st.DecoderOnlyTransformer(
        vocab_size=tasks.VOCAB_SIZE, n_positions=0, d_model=16, n_layers=1, n_heads=2, d_kv=8, d_ff=32
    )
    model.init_weights(_gen(0))
    batch = _batch(n_examples=4)
    assert st.position_ids("nope", batch, train=True, max_pos=17) is None
    logits = model(batch.tokens, None)
    assert logits.shape == (*batch.tokens.shape, tasks.VOCAB_SIZE)


# ---------------------------------------------------------------------------- N x M multiplication


def _mul_rows(batch: tasks.SeqBatch):
    for row, ids, tgt in zip(batch.tokens, batch.coupled_ids, batch.targets):
        text = tasks.decode_tokens(row)[1:]  # drop BOS
        a, rest = text.split("*")
        b, p = rest.split("=")
        yield a, b, p, ids, tgt


def test_multiplication_answers_are_correct_products():
    for m in (1, 2):
        task = tasks.TASKS[f"multiplication_nx{m}"]
        ops = task.sample(_gen(5 + m), 300, 1, 7)
        batch = task.encode(ops)
        assert batch.tokens.shape[1] == task.seq_len(int(ops.n.max()))
        lens = set()
        for a, b, p, _, tgt in _mul_rows(batch):
            assert len(b) == m  # second operand always M digits (leading zeros allowed)
            assert len(a) == 1 or a[0] != "0"  # first operand has no leading zero
            lens.add(len(a))
            assert p.endswith("$") and len(p) - 1 == len(a) + m  # product zero-padded to n + M digits
            assert int(a) * int(b) == int(p[:-1][::-1])  # written least-significant first
            assert int((tgt != tasks.IGNORE).sum()) == len(p)  # targets: product digits + EOS
        assert lens == set(range(1, 8))


def test_multiplication_targets_are_next_tokens():
    task = tasks.TASKS["multiplication_nx2"]
    batch = task.encode(task.sample(_gen(2), 50, 1, 4))
    mask = batch.answer_mask
    assert torch.equal(batch.targets[:, :-1][mask[:, :-1]], batch.tokens[:, 1:][mask[:, :-1]])
    # the last answer target of every row is EOS
    last = mask.long().cumsum(1).argmax(1)
    assert bool((batch.targets[torch.arange(len(last)), last] == tasks.EOS).all())


def test_coupled_scheme_shifts_multiplication_ids_rigidly():
    task = tasks.TASKS["multiplication_nx2"]
    batch = task.encode(task.sample(_gen(3), 64, 1, 5))
    max_pos = 17
    ids = st.position_ids("coupled", batch, train=True, max_pos=max_pos, gen=_gen(0))
    base = batch.coupled_ids
    assert int(ids.max()) <= max_pos
    assert torch.equal(ids == 0, base == 0)  # BOS/EOS/PAD keep ID 0
    shift = (ids - base)[base > 0]
    per_row = torch.where(base > 0, ids - base, torch.zeros_like(ids)).max(1).values
    assert bool(((ids - base) == per_row.unsqueeze(1))[base > 0].all())  # one shift per example
    assert int(shift.min()) >= 0 and len(set(per_row.tolist())) > 1
    assert torch.equal(st.position_ids("coupled", batch, train=False, max_pos=max_pos), base)


def test_multiplication_coupled_ids_share_significance():
    task = tasks.TASKS["multiplication_nx2"]
    batch = task.encode(task.sample(_gen(0), 16, 3, 3))
    # [BOS] a2 a1 a0 * b1 b0 = p0 p1 p2 p3 p4 $
    assert batch.coupled_ids[0].tolist() == [0, 4, 3, 2, 1, 3, 2, 1, 2, 3, 4, 5, 6, 0]
    assert int(batch.coupled_ids.max()) == task.max_coupled_id(3)
    # in every example, a digit, a b digit and a product digit with the same ID have the same significance
    ops = task.sample(_gen(1), 64, 1, 6)
    batch = task.encode(ops)
    for i, (a, b, p, ids, _) in enumerate(_mul_rows(batch)):
        n = len(a)
        ids = ids.tolist()
        assert ids[1 : n + 1] == [2 + k for k in reversed(range(n))]
        assert ids[n + 1] == 1 and ids[n + 4] == 1  # '*' and '='
        assert ids[n + 2 : n + 4] == [3, 2]
        assert ids[n + 5 : 2 * n + 7] == [2 + k for k in range(n + 2)]


def test_multiplication_select_keeps_second_operand():
    task = tasks.TASKS["multiplication_nx2"]
    ops = task.sample(_gen(4), 100, 1, 5)
    one_digit = torch.nonzero(ops.n == 1).flatten()
    assert one_digit.numel() > 0
    sub = task.encode(ops.select(one_digit))
    for a, b, p, _, _ in _mul_rows(sub):
        assert len(a) == 1 and len(b) == 2 and int(a) * int(b) == int(p[:-1][::-1])


def test_multiplication_vocab_and_addition_unchanged():
    assert tasks.TASKS["addition"].vocab_size == tasks.VOCAB_SIZE == 14
    task = tasks.TASKS["multiplication_nx2"]
    batch = task.encode(task.sample(_gen(0), 32, 1, 5))
    assert int(batch.tokens.max()) < task.vocab_size
    assert bool((batch.tokens == tasks.TIMES).any())


def test_multiplication_config_checks_max_pos():
    from methods.position_coupling import Data

    Data(task="multiplication_nx2", train_max_digits=5, test_lengths=[10], max_pos=13)
    try:
        Data(task="multiplication_nx2", train_max_digits=5, test_lengths=[10], max_pos=12)
    except ValueError:
        return
    raise AssertionError("max_pos 12 cannot hold the coupled IDs of a 10 x 2 multiplication (up to 13)")


def _tiny_run(tmp_path, data: dict, model: dict, tag: str) -> tuple[dict[str, float], str]:
    """A few steps of the real method (coupled and absolute), tested at 3 and 5 digits: checks the metric
    names and ranges, returns the metrics and the first decoded test example."""
    import json

    from methods.position_coupling import Config, run
    from registry.context import RunContext

    cfg = Config(
        data={"train_min_digits": 1, "train_max_digits": 3, "test_lengths": [3, 5], "max_pos": 9, **data},
        model={"schemes": ["coupled", "absolute"], "n_heads": 2, "d_model": 16, "d_kv": 8, "d_ff": 32, **model},
        train={"steps": 5, "batch_size": 8, "log_every": 5, "eval_samples": 20, "lr": 1e-3},
    )
    ctx = RunContext(paper="position-coupling", profile="test", seed=0, device="cpu", out_dir=tmp_path,
                     show_progress=False)
    m = run(cfg, ctx)
    for scheme in ("coupled", "absolute"):
        for L in (3, 5):
            assert 0.0 <= m[f"{scheme}_{tag}_acc_len{L}"] <= m[f"{scheme}_{tag}_tokacc_len{L}"] <= 1.0
    return m, json.loads((tmp_path / "samples.json").read_text())["examples"][0]


def test_multiplication_run_end_to_end(tmp_path):
    """A few steps of the real method on N x 2 multiplication: metric names, shapes and samples."""
    _, ex = _tiny_run(tmp_path, {"task": "multiplication_nx2", "train_size": None}, {"n_layers": 2}, "nx2")
    a, rest = ex[1:].split("*")
    b, p = rest.split("=")
    assert len(a) == 5 and len(b) == 2 and int(a) * int(b) == int(p[:-1][::-1])


# ---------------------------------------------------------------------------- multi-summand addition


def _sum_rows(batch: tasks.SeqBatch):
    for row, ids, tgt in zip(batch.tokens, batch.coupled_ids, batch.targets):
        text = tasks.decode_tokens(row)[1:]  # drop BOS
        lhs, s = text.split("=")
        yield lhs.split("+"), s, ids, tgt


def test_multi_summand_answers_are_correct_sums():
    for k in (3, 4):
        task = tasks.TASKS[f"multisummand_{k}"]
        ops = task.sample(_gen(10 + k), 400, 1, 6)
        batch = task.encode(ops)
        assert batch.tokens.shape[1] == task.seq_len(int(ops.n.max()))
        for (summands, s, _, tgt), n in zip(_sum_rows(batch), ops.n.tolist()):
            w = len(str(k * (10**n - 1)))  # width of the largest possible sum
            assert len(summands) == k
            assert all(len(x) == w for x in summands)  # every summand zero-padded to that width
            assert max(len(x.lstrip("0") or "0") for x in summands) == n  # n = longest summand's digits
            assert s.endswith("$") and len(s) - 1 == w
            assert sum(int(x) for x in summands) == int(s[:-1][::-1])  # sum written least-significant first
            assert int((tgt != tasks.IGNORE).sum()) == len(s)  # targets: sum digits + EOS


def test_multi_summand_carry_of_two_and_exact_layout():
    """99 + 99 + 99 = 297 needs a carry of 2; the layout and the coupled IDs are fixed by hand."""
    x = torch.tensor([[[9, 9], [9, 9], [9, 9]]], dtype=torch.uint8)
    batch = tasks.encode_multi_summand(tasks.MultiOperands(x, torch.tensor([2])))
    assert tasks.decode_tokens(batch.tokens[0]) == "$099+099+099=792$"
    # [BOS] 0 9 9 + 0 9 9 + 0 9 9 = s0 s1 s2 $ : significance k -> 2 + k, '+' and '=' -> 1
    assert batch.coupled_ids[0].tolist() == [0, 4, 3, 2, 1, 4, 3, 2, 1, 4, 3, 2, 1, 2, 3, 4, 0]
    assert batch.targets[0].tolist()[12:17] == [tasks.DIGIT0 + 7, tasks.DIGIT0 + 9, tasks.DIGIT0 + 2, tasks.EOS,
                                                tasks.IGNORE]


def test_multi_summand_coupled_ids_share_significance():
    task = tasks.TASKS["multisummand_3"]
    ops = task.sample(_gen(2), 128, 1, 7)
    batch = task.encode(ops)
    for summands, s, ids, _ in _sum_rows(batch):
        w = len(s) - 1
        ids = ids.tolist()
        pos = 1
        for x in summands:  # each summand: most significant first, then '+' (or '=')
            assert ids[pos : pos + w] == [2 + k for k in reversed(range(w))]
            assert ids[pos + w] == 1
            pos += w + 1
        assert ids[pos : pos + w] == [2 + k for k in range(w)]  # the sum, least significant first
        assert ids[pos + w] == 0  # EOS
    assert int(batch.coupled_ids.max()) == task.max_coupled_id(int(ops.n.max()))


def test_multi_summand_sampling_mixes_shared_and_independent_lengths():
    task = tasks.TASKS["multisummand_3"]
    ops = task.sample(_gen(7), 4000, 1, 5)
    lengths = []
    for summands, _, _, _ in _sum_rows(task.encode(ops)):
        lengths.append([len(x.lstrip("0") or "0") for x in summands])
    lengths = torch.tensor(lengths)
    all_same = (lengths == lengths[:, :1]).all(1).float().mean().item()
    # P(all equal) = 1/2 (shared) + 1/2 * (1/5)^2 (independent draws that happen to agree); 0.04 is ~5 std
    assert abs(all_same - (0.5 + 0.5 / 25)) < 0.04
    assert set(lengths.flatten().tolist()) == {1, 2, 3, 4, 5}
    fixed = task.sample(_gen(8), 200, 6, 6)  # a test set: every summand has exactly 6 digits
    for summands, _, _, _ in _sum_rows(task.encode(fixed)):
        assert all(len(x.lstrip("0")) == 6 for x in summands)


def test_multi_summand_width_and_select():
    assert tasks.padded_sum_width(torch.tensor([1, 2, 5]), 3).tolist() == [2, 3, 6]
    assert tasks.padded_sum_width(torch.tensor([1, 2]), 11).tolist() == [2, 4]  # 99 * 11 = 1089
    task = tasks.TASKS["multisummand_3"]
    ops = task.sample(_gen(4), 300, 1, 5)
    short = torch.nonzero(ops.n <= 2).flatten()
    sub = task.encode(ops.select(short))
    assert sub.tokens.shape[1] == task.seq_len(2)
    for summands, s, _, _ in _sum_rows(sub):
        assert sum(int(x) for x in summands) == int(s[:-1][::-1])


def test_multi_summand_config_and_run_end_to_end(tmp_path):
    from methods.position_coupling import Data

    Data(task="multisummand_3", train_max_digits=5, test_lengths=[10], max_pos=12)
    with pytest.raises(ValueError):  # max_pos 11 cannot hold the IDs of a 10-digit 3-summand addition (up to 12)
        Data(task="multisummand_3", train_max_digits=5, test_lengths=[10], max_pos=11)
    _, ex = _tiny_run(tmp_path, {"task": "multisummand_3", "train_size": 200}, {}, "sum3")
    lhs, s = ex[1:].split("=")
    assert sum(int(x) for x in lhs.split("+")) == int(s[:-1][::-1]) and len(s) - 1 == 6


# ---------------------------------------------------------------------------- checkpoint selection


def _select_cfg(**train):
    from methods.position_coupling import Config

    return Config(
        data={"train_min_digits": 1, "train_max_digits": 3, "test_lengths": [3, 5], "max_pos": 9, "train_size": None},
        model={"schemes": ["coupled"], "n_heads": 2, "d_model": 16, "d_kv": 8, "d_ff": 32},
        train={"steps": 6, "batch_size": 8, "log_every": 3, "eval_samples": 20, "lr": 3e-3, **train},
    )


def _ctx(tmp_path):
    from registry.context import RunContext

    return RunContext(paper="position-coupling", profile="test", seed=0, device="cpu", out_dir=tmp_path,
                      show_progress=False)


def test_select_len_must_fit_the_coupled_table():
    with pytest.raises(ValueError, match="select_len"):
        _select_cfg(select_len=8)  # 8-digit additions need coupled IDs up to 10 > max_pos 9
    _select_cfg(select_len=7)


def test_selection_evaluates_the_lowest_validation_loss_state(tmp_path, monkeypatch):
    """The selected state is the one with the lowest validation loss (step 2 of 2, 4, 6 here), its accuracies
    are reported as acc_len*, the final state's as last_acc_len*; without select_len nothing changes."""
    from methods.position_coupling import run, train as pc_train

    plain = run(_select_cfg(), _ctx(tmp_path / "plain"))
    assert not any(k.startswith("coupled_last_") or "selected" in k for k in plain)

    losses = iter([0.5, 0.1, 0.3])  # checks at steps 2, 4 and (after training) 6
    states = {}
    real_check = pc_train._Selector.check

    def fake_loss(self):
        return next(losses)

    def spy_check(self, step):
        value = real_check(self, step)
        states[step] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return value

    monkeypatch.setattr(pc_train._Selector, "loss", fake_loss)
    monkeypatch.setattr(pc_train._Selector, "check", spy_check)
    seen = {}
    real_eval = pc_train._evaluate

    def spy_eval(model, *a, **k):
        out = real_eval(model, *a, **k)
        seen.setdefault("states", []).append({n: v.clone() for n, v in model.state_dict().items()})
        return out

    monkeypatch.setattr(pc_train, "_evaluate", spy_eval)
    m = run(_select_cfg(select_len=5, select_every=2), _ctx(tmp_path / "sel"))
    assert sorted(states) == [2, 4, 6]
    assert m["coupled_selected_step"] == 4.0 and m["coupled_selected_val_loss"] == pytest.approx(0.1)
    last_state, selected_state = seen["states"][-2], seen["states"][-1]
    for name, v in selected_state.items():  # the evaluated model is the step-4 state, not the final one
        assert torch.equal(v, states[4][name])
    assert any(not torch.equal(last_state[n], states[4][n]) for n in last_state)
    for L in (3, 5):
        assert 0.0 <= m[f"coupled_acc_len{L}"] <= 1.0 and 0.0 <= m[f"coupled_last_acc_len{L}"] <= 1.0
    # the untouched run and the selection run train identically: the final state's accuracies agree
    assert m["coupled_last_acc_len5"] == plain["coupled_acc_len5"]
    assert m["coupled_final_train_loss"] == plain["coupled_final_train_loss"]


def test_validation_loss_is_the_answer_token_loss(tmp_path):
    """The real validation loss is finite, positive and logged per check."""
    from methods.position_coupling import run

    ctx = _ctx(tmp_path)
    m = run(_select_cfg(select_len=4, select_every=3, select_samples=30), ctx)
    assert 0.0 < m["coupled_selected_val_loss"] < 10.0
    assert m["coupled_selected_step"] in (3.0, 6.0)


def test_selected_final_state_is_evaluated_once(tmp_path, monkeypatch):
    """When the last check has the lowest loss, the final state is the selected one: its accuracies are reported
    both as acc_len* and last_acc_len* from a single evaluation."""
    from methods.position_coupling import run, train as pc_train

    losses = iter([0.5, 0.3, 0.1])
    monkeypatch.setattr(pc_train._Selector, "loss", lambda self: next(losses))
    calls = []
    real_eval = pc_train._evaluate

    def counting_eval(*a, **k):
        calls.append(1)
        return real_eval(*a, **k)

    monkeypatch.setattr(pc_train, "_evaluate", counting_eval)
    m = run(_select_cfg(select_len=5, select_every=2), _ctx(tmp_path))
    assert m["coupled_selected_step"] == 6.0 and len(calls) == 1
    for L in (3, 5):
        assert m[f"coupled_acc_len{L}"] == m[f"coupled_last_acc_len{L}"]


# ---------------------------------------------------------------------------- per-scheme step budgets


def test_scheme_steps_override_one_scheme_and_must_name_a_run_scheme():
    from methods.position_coupling import Config, _parts

    cfg = _select_cfg(scheme_steps={"coupled": 9})
    assert cfg.train.for_scheme("coupled").steps == 9
    assert cfg.train.for_scheme("coupled").lr == cfg.train.lr  # everything else unchanged
    with pytest.raises(ValueError, match="not run"):
        _select_cfg(scheme_steps={"absolute": 9})  # _select_cfg trains the coupled scheme only
    with pytest.raises(ValueError):
        _select_cfg(scheme_steps={"coupled": 0})
    two = Config(model={"schemes": ["coupled", "absolute"]}, train={"steps": 100, "scheme_steps": {"absolute": 300}})
    assert _parts(two) == {"coupled": 100.0, "absolute": 300.0}  # the runner balances parts by their steps


def test_scheme_steps_train_and_schedule_each_scheme_for_its_own_budget(tmp_path):
    from methods.position_coupling import Config
    from methods.position_coupling.train import run_all

    cfg = Config(
        data={"train_min_digits": 1, "train_max_digits": 3, "test_lengths": [3], "max_pos": 9, "train_size": None},
        model={"schemes": ["coupled", "absolute"], "n_heads": 2, "d_model": 16, "d_kv": 8, "d_ff": 32},
        train={"steps": 4, "batch_size": 8, "log_every": 1, "eval_samples": 20, "lr": 3e-3, "warmup_frac": 0.0,
               "scheme_steps": {"absolute": 10}},
    )
    ctx = _ctx(tmp_path)
    run_all(cfg, ctx)
    steps = {p: [s for _, s, name, _ in ctx.curves if name == f"{p}_lr"] for p in ("coupled", "absolute")}
    assert max(steps["coupled"]) == 4 and max(steps["absolute"]) == 10
    lr = {p: {s: v for _, s, name, v in ctx.curves if name == f"{p}_lr"} for p in steps}
    # each cosine schedule decays over its own budget: at step 4 the coupled one has ended, the absolute one not
    assert lr["coupled"][4] == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio)
    assert lr["absolute"][4] > 3 * lr["coupled"][4]
    assert lr["absolute"][10] == pytest.approx(lr["coupled"][4])
