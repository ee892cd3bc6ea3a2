"""Fast checks for rasp-l-length-generalization: task generators, encoding, a tiny training run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from methods._lib.seq_tasks import BOS, EOS, IGNORE, PAD, SEP, SYM0
from methods.rasp_l_length_generalization import Config
from methods.rasp_l_length_generalization.tasks import make_task


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _split(row: torch.Tensor) -> tuple[list[int], list[int]]:
    toks = [t for t in row.tolist() if t != PAD]
    assert toks[0] == BOS and toks[-1] == EOS and toks.count(SEP) == 1
    s = toks.index(SEP)
    return [t - SYM0 for t in toks[1:s]], [t - SYM0 for t in toks[s + 1 : -1]]


def _check_targets(batch) -> None:
    # targets: exactly the answer tokens and EOS, each predicted from the previous position
    for row, tgt in zip(batch.tokens, batch.targets):
        toks = row.tolist()
        s = toks.index(SEP)
        e = toks.index(EOS)
        want = [IGNORE] * len(toks)
        for j in range(s, e):
            want[j] = toks[j + 1]
        assert tgt.tolist() == want


def test_count_is_counting_from_a_to_b():
    task = make_task("count", 30)
    batch = task.sample(_gen(0), 200, 1, 12)
    lens = []
    for row in batch.tokens:
        x, y = _split(row)
        a, b = x
        assert y == list(range(a, b + 1))
        assert 0 <= a <= b < 30
        lens.append(len(y))
    assert min(lens) == 1 and max(lens) == 12
    _check_targets(batch)
    # exact length n: n outputs, and the sequence fits max_seq_len
    b16 = task.sample(_gen(1), 50, 16, 16)
    assert all(len(_split(r)[1]) == 16 for r in b16.tokens)
    assert b16.tokens.shape[1] <= task.max_seq_len(16)
    with pytest.raises(ValueError):
        task.sample(_gen(0), 4, 31, 31)


def test_mode_has_a_unique_most_frequent_symbol():
    task = make_task("mode", 5)
    batch = task.sample(_gen(2), 300, 1, 16)
    for row in batch.tokens:
        x, y = _split(row)
        assert len(y) == 1 and all(0 <= v < 5 for v in x)
        counts = torch.bincount(torch.tensor(x), minlength=5)
        assert int((counts == counts.max()).sum()) == 1
        assert y[0] == int(counts.argmax())
    _check_targets(batch)


def test_shared_tasks_copy_and_parity():
    cu = make_task("copy_unique", 20).sample(_gen(3), 100, 1, 16)
    for row in cu.tokens:
        x, y = _split(row)
        assert x == y and len(set(x)) == len(x)
    cr = make_task("copy_repeat", 4).sample(_gen(4), 100, 8, 8)
    assert any(len(set(_split(r)[0])) < 8 for r in cr.tokens)  # repeats occur
    assert all(_split(r)[0] == _split(r)[1] for r in cr.tokens)
    par = make_task("parity", 2)
    pb = par.sample(_gen(5), 100, 1, 10)
    for row in pb.tokens:
        x, y = _split(row)
        assert y[0] + SYM0 == (par.ODD if sum(x) % 2 else par.EVEN)


def test_config_rejects_too_few_symbols():
    with pytest.raises(ValueError):
        Config.model_validate({"data": {"tasks": ["copy_unique"], "test_lengths": [30], "n_symbols": {"copy_unique": 20}}})
    Config.model_validate({"data": {"tasks": ["copy_unique"], "train_max_len": 10, "test_lengths": [20],
                                    "n_symbols": {"copy_unique": 20}}})


def test_task_steps_override_one_task_and_must_name_a_run_task():
    cfg = Config.model_validate({"data": {"tasks": ["mode", "parity"]},
                                 "train": {"steps": 100, "task_steps": {"parity": 300}}})
    assert cfg.train.for_task("parity").steps == 300
    assert cfg.train.for_task("mode").steps == 100
    assert cfg.train.for_task("parity").lr == cfg.train.lr  # everything else unchanged
    with pytest.raises(ValueError, match="not run"):
        Config.model_validate({"data": {"tasks": ["mode"]}, "train": {"task_steps": {"parity": 300}}})
    with pytest.raises(ValueError):
        Config.model_validate({"data": {"tasks": ["parity"]}, "train": {"task_steps": {"parity": 0}}})


def _run_tiny(cfg, tmp_path: Path) -> dict[str, float]:
    """The method's run_all on one CPU thread (restored afterwards), seed 0, results in tmp_path."""
    from registry.context import RunContext
    from methods.rasp_l_length_generalization.train import run_all

    ctx = RunContext(paper="rasp-l-length-generalization", profile="test", seed=0, device="cpu",
                     out_dir=tmp_path, show_progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_all(cfg, ctx)
    finally:
        torch.set_num_threads(threads)


def test_tiny_training_run_learns_mode(tmp_path: Path):
    torch.manual_seed(0)
    cfg = Config.model_validate({
        "data": {"tasks": ["mode"], "n_symbols": {"mode": 3}, "train_min_len": 1, "train_max_len": 5,
                 "test_lengths": [5, 8]},
        "model": {"n_layers": 1, "n_heads": 2, "d_model": 32, "d_kv": 16, "d_ff": 64},
        "train": {"steps": 150, "batch_size": 64, "lr": 0.01, "warmup_frac": 0.05, "min_lr_ratio": 0.1,
                  "eval_samples": 200, "log_every": 50},
    })
    m = _run_tiny(cfg, tmp_path)
    assert set(["mode_acc_len5", "mode_acc_len8", "mode_final_train_loss"]) <= set(m)
    # chance for the mode of 5 symbols over 3 letters is about 1/3
    assert m["mode_acc_len5"] > 0.6
    assert (tmp_path / "samples-mode.json").exists()


# ---------------------------------------------------------------- addition with index hints
def _addition_parts(row: torch.Tensor):
    """Decode one addition row into (a, b, hints of a, hints of b, output (hint, digit) pairs)."""
    from methods.rasp_l_length_generalization.tasks import HINT0, PLUS

    toks = [t for t in row.tolist() if t != PAD]
    assert toks[0] == BOS and toks[-1] == EOS and toks.count(SEP) == 1 and toks.count(PLUS) == 1
    s, p = toks.index(SEP), toks.index(PLUS)
    x1, x2, y = toks[1:p], toks[p + 1 : s], toks[s + 1 : -1]

    def pairs(seq):
        assert len(seq) % 2 == 0
        hints, digits = seq[0::2], seq[1::2]
        assert all(h >= HINT0 for h in hints) and all(SYM0 <= d < SYM0 + 10 for d in digits)
        return [h - HINT0 for h in hints], [d - SYM0 for d in digits]

    (h1, d1), (h2, d2), (hy, dy) = pairs(x1), pairs(x2), pairs(y)
    return h1, d1, h2, d2, hy, dy


def _num(digits_msd_first) -> int:
    return int("".join(map(str, digits_msd_first)))


@pytest.mark.parametrize("order", ["reverse", "forward"])
def test_addition_with_index_hints_encodes_the_sum(order):
    task = make_task(f"addition_{order}", 12)
    batch = task.sample(_gen(6), 300, 1, 7)
    lens = set()
    for row in batch.tokens:
        h1, d1, h2, d2, hy, dy = _addition_parts(row)
        n = len(d1)
        lens.add(n)
        assert len(d2) == n and len(dy) == n + 1
        # operands: most significant digit first, hints consecutive, both operands share hints
        assert h1 == h2 and h1 == list(range(h1[0], h1[0] - n, -1))
        lo = h1[-1]  # hint of the units digit
        assert 0 <= lo and lo + n < 12
        total = _num(d1) + _num(d2)
        if order == "reverse":
            assert hy == list(range(lo, lo + n + 1))  # units first
            assert _num(dy[::-1]) == total
            assert dy == [int(c) for c in str(total).zfill(n + 1)[::-1]]
        else:
            assert hy == list(range(lo + n, lo - 1, -1))  # final carry first
            assert dy == [int(c) for c in str(total).zfill(n + 1)]
        # aligned hints: output digit of significance k carries the operands' hint of significance k
        sig_hint = {k: h1[n - 1 - k] for k in range(n)}
        for h, k in zip(hy, (range(n + 1) if order == "reverse" else range(n, -1, -1))):
            assert h == sig_hint.get(k, lo + n)
    assert lens == set(range(1, 8))
    _check_targets(batch)
    assert batch.tokens.shape[1] <= task.max_seq_len(7)
    assert int(batch.tokens.max()) < task.vocab_size


def test_addition_orders_share_inputs_and_reverse_outputs():
    rev, fwd = make_task("addition_reverse", 10), make_task("addition_forward", 10)
    br, bf = rev.sample(_gen(7), 64, 1, 6), fwd.sample(_gen(7), 64, 1, 6)
    for r, f in zip(br.tokens, bf.tokens):
        pr, pf = _addition_parts(r), _addition_parts(f)
        assert pr[:4] == pf[:4]
        assert pr[4] == pf[4][::-1] and pr[5] == pf[5][::-1]
    # random hint offsets: short training numbers still use every hint token
    seen = set()
    for row in rev.sample(_gen(8), 400, 1, 3).tokens:
        seen.update(_addition_parts(row)[4])
    assert seen == set(range(10))
    with pytest.raises(ValueError):
        rev.sample(_gen(0), 4, 10, 10)  # 10 digits need 11 hints


def test_config_rejects_too_few_index_hints():
    with pytest.raises(ValueError):
        Config.model_validate({"data": {"tasks": ["addition_reverse"], "train_max_len": 5, "test_lengths": [8],
                                        "n_symbols": {"addition_reverse": 8}}})
    Config.model_validate({"data": {"tasks": ["addition_reverse", "addition_forward"], "train_max_len": 5,
                                    "test_lengths": [8], "n_symbols": {"addition_reverse": 9, "addition_forward": 9}}})


def test_addition_runs_through_the_training_loop(tmp_path: Path):
    cfg = Config.model_validate({
        "data": {"tasks": ["addition_reverse", "addition_forward"], "train_max_len": 3, "test_lengths": [3, 4],
                 "n_symbols": {"addition_reverse": 6, "addition_forward": 6}},
        "model": {"n_layers": 1, "n_heads": 2, "d_model": 32, "d_kv": 16, "d_ff": 64},
        "train": {"steps": 120, "batch_size": 32, "lr": 0.01, "eval_samples": 50, "log_every": 40},
    })
    m = _run_tiny(cfg, tmp_path)
    for order in ("reverse", "forward"):
        assert {f"addition_{order}_acc_len3", f"addition_{order}_acc_len4"} <= set(m)
        # the hint tokens of the answer are predictable from the prompt: token accuracy beats chance
        assert m[f"addition_{order}_tokacc_len3"] > 0.3
