"""Checks of the multi-operand addition task, its bi-level coupled position IDs and the model."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from methods._lib import seq_transformer as st
from methods.arithmetic_multioperand import Config
from methods.arithmetic_multioperand import task as T
from methods.arithmetic_multioperand import train as tr


def _parse(tokens: torch.Tensor) -> tuple[list[str], list[str]]:
    text = T.decode(tokens)[1:]  # drop BOS (rendered like EOS)
    assert text.endswith("$")
    lhs, rhs = text[:-1].split("=")
    return lhs.split("+"), rhs.split(">")


def test_scratchpad_holds_running_sums():
    rng = random.Random(0)
    probs = [T.sample_problem(rng, 1, 6, 2, 7, 0.5) for _ in range(300)]
    batch = T.encode(probs, scratchpad=True)
    for nums, row, tgt in zip(probs, batch.tokens, batch.targets):
        ops, sums = _parse(row)
        w = T.width(nums)
        assert [int(x) for x in ops] == nums and all(len(x) == w for x in ops)
        assert len(sums) == len(nums) + 1 and all(len(s) == w for s in sums)
        running = [0]
        for a in nums:
            running.append(running[-1] + a)
        assert [int(s[::-1]) for s in sums] == running  # partial sums, least-significant digit first
        # targets: every output token after '=' (digits, separators, EOS)
        n_out = len(nums) + 1 + (len(nums) + 1) * w
        assert int((tgt != T.IGNORE).sum()) == n_out


def test_no_scratchpad_holds_only_the_sum():
    rng = random.Random(1)
    probs = [T.sample_problem(rng, 1, 5, 2, 6, 0.5) for _ in range(200)]
    batch = T.encode(probs, scratchpad=False)
    for nums, row in zip(probs, batch.tokens):
        ops, sums = _parse(row)
        assert len(sums) == 1 and int(sums[0][::-1]) == sum(nums)
    assert int(batch.pos[..., 1].abs().sum()) == 0  # one position level only


def test_width_never_overflows_and_sequence_length_formula():
    for n in range(1, 9):
        for m in range(2, 12):
            nums = [10**n - 1] * m
            assert len(str(sum(nums))) <= T.width(nums)
            for sp in (True, False):
                toks = T.encode_one(nums, scratchpad=sp)[0]
                assert len(toks) == T.seq_len(n, m, sp)


def test_bilevel_ids_of_a_known_example():
    toks, pd, po, first = T.encode_one([12, 345, 7], scratchpad=True)
    # [BOS] 0012 + 0345 + 0007 = 0000 > 2100 > 7530 > 4630 [EOS]   (W = len(str(3 * 999)) = 4)
    assert T.decode(torch.tensor(toks)) == "$0012+0345+0007=0000>2100>7530>4630$"
    assert pd == [0, 5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 0]
    assert po == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 0]
    assert toks[first - 1] == T.EQ


def test_partial_sum_and_its_inputs_share_ids():
    """s_j's digit of significance k sits at (d0+1+k, o0+j); the digits it is computed from,
    a_j and s_{j-1} of significance k, both sit at (d0+1+k, o0+j-1)."""
    nums = [123, 45, 6789, 10]
    toks, pd, po, _ = T.encode_one(nums, scratchpad=True, d0=3, o0=2)
    w = T.width(nums)
    eq = toks.index(T.EQ)
    for j in range(1, len(nums) + 1):
        for k in range(w):
            i_s = eq + 1 + j * (w + 1) + k
            i_prev = eq + 1 + (j - 1) * (w + 1) + k
            i_a = 1 + (j - 1) * (w + 1) + (w - 1 - k)
            assert pd[i_s] == pd[i_prev] == pd[i_a] == 3 + 1 + k
            assert po[i_s] == 2 + j and po[i_prev] == po[i_a] == 2 + j - 1


def test_random_offsets_stay_in_tables_and_cover_them():
    rng = random.Random(2)
    probs = [T.sample_problem(rng, 1, 4, 2, 4, 0.5) for _ in range(64)]
    ref = T.encode(probs, scratchpad=True)
    seen_d, seen_o = set(), set()
    prng = random.Random(3)
    for _ in range(30):
        b = T.encode(probs, scratchpad=True, rng=prng, max_pos_digits=12, max_pos_operands=10)
        assert torch.equal(b.tokens, ref.tokens) and torch.equal(b.targets, ref.targets)
        assert int(b.pos[..., 0].max()) <= 12 and int(b.pos[..., 1].max()) <= 10
        live = ref.pos[..., 0] > 0
        # only the starting offsets move: differences to the test-time IDs are constant per example
        for lvl in (0, 1):
            diff = (b.pos[..., lvl] - ref.pos[..., lvl]).masked_fill(~live, -1)
            for r in range(len(probs)):
                assert len(set(diff[r][live[r]].tolist())) == 1
        seen_d |= set(b.pos[..., 0].flatten().tolist())
        seen_o |= set(b.pos[..., 1].flatten().tolist())
    assert seen_d == set(range(13)) and seen_o == set(range(11))
    with pytest.raises(ValueError):
        T.encode([[10**7] * 3], scratchpad=True, rng=prng, max_pos_digits=8, max_pos_operands=10)


def _small_cfg(steps: int = 150, **data) -> Config:
    return Config(
        data={"train_max_digits": 2, "train_max_operands": 3, "train_size": None, "test_cells": [(2, 3)],
              "max_pos_digits": 6, "max_pos_operands": 5, **data},
        model={"n_heads": 2, "d_model": 32, "d_kv": 16, "d_ff": 64},
        train={"steps": steps, "batch_size": 32, "lr": 3e-3, "warmup_frac": 0.05, "eval_samples": 100, "log_every": 10},
    )


def test_config_rejects_too_small_tables():
    with pytest.raises(ValueError):
        _small_cfg(test_cells=[(6, 3)])  # width 7 needs max_pos_digits >= 8
    with pytest.raises(ValueError):
        _small_cfg(test_cells=[(2, 5)])  # 5 operands need max_pos_operands >= 6
    import time

    t0 = time.perf_counter()  # a huge cell is refused before any arithmetic on 10**n (it used to hang)
    with pytest.raises(ValueError, match="too small for 1000000000 digits"):
        _small_cfg(test_cells=[(1_000_000_000, 2)])
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        Config.model_validate({"data": {"max_pos_digits": 10**9}})
    assert time.perf_counter() - t0 < 1.0


def test_two_tables_are_added_and_nope_ignores_positions():
    cfg = _small_cfg()
    batch = T.encode([[12, 34, 5], [7, 8]], scratchpad=True)
    g = torch.Generator().manual_seed(0)
    bi = tr.build_model("scratchpad_coupled", cfg)
    bi.init_weights(g)
    assert [e.num_embeddings for e in bi.levels] == [7, 6]
    # equivalent to the shared model with one table holding the sum of both embeddings
    ref = st.DecoderOnlyTransformer(vocab_size=T.VOCAB_SIZE, n_positions=1, d_model=32, n_layers=1, n_heads=2,
                                    d_kv=16, d_ff=64)
    ref.load_state_dict({k: v for k, v in bi.state_dict().items() if not k.startswith("levels")}, strict=False)
    x_pos = bi.levels[0](batch.pos[..., 0]) + bi.levels[1](batch.pos[..., 1])
    with torch.no_grad():
        ref.pos = None
        h = ref.tok(batch.tokens) + x_pos
        for blk in ref.blocks:
            h = blk(h)
        want = (ref.final_norm(h) * 32**-0.5) @ ref.tok.weight.t()
        got = bi(batch.tokens, batch.pos)
        assert torch.allclose(got, want, atol=1e-5)
        moved = batch.pos.clone()
        moved[..., 1] = torch.where(moved[..., 1] > 0, moved[..., 1] + 1, 0)
        assert not torch.allclose(bi(batch.tokens, moved), got)
        nope = tr.build_model("scratchpad_nope", cfg)
        nope.init_weights(torch.Generator().manual_seed(0))
        assert len(nope.levels) == 0
        assert torch.equal(nope(batch.tokens, batch.pos), nope(batch.tokens, moved))


class _Ctx:
    def __init__(self):
        self.device, self.out_dir, self.curves = "cpu", Path("/tmp"), []

    def seed_for(self, purpose: str) -> int:
        return {"init": 1, "train-data": 2, "train-positions": 3, "eval": 4}[purpose]

    def log(self, step, **m):
        self.curves.append((step, m))

    def progress(self, total, desc):
        from registry.context import Progress

        return Progress(total=total, desc=desc, enabled=False)


def test_tiny_training_run_learns():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _tiny_run()
    finally:
        torch.set_num_threads(threads)


def _tiny_run():
    torch.manual_seed(0)
    cfg = _small_cfg(steps=200)
    ctx = _Ctx()
    sets = tr.eval_sets(cfg, 4)
    untrained = tr.build_model("scratchpad_coupled", cfg)
    untrained.init_weights(torch.Generator().manual_seed(1))
    before = tr.evaluate(untrained, "scratchpad_coupled", sets, cfg, "cpu")["tokacc_d2_o3"]
    out = tr.train_one("scratchpad_coupled", cfg, ctx, sets)
    losses = [m["scratchpad_coupled_train_loss"] for _, m in ctx.curves if "scratchpad_coupled_train_loss" in m]
    assert losses[0] > 1.8 and losses[-1] < 0.6 * losses[0]
    assert out["scratchpad_coupled_tokacc_d2_o3"] > before + 0.3
