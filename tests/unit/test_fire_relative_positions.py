"""FIRE proxy: task generator, relative position encodings, FIRE's expressiveness, a tiny training run; the shared
decoder's relative-scheme attention path."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from methods._lib import relpos  # noqa: E402
from methods._lib.seq_transformer import DecoderOnlyTransformer  # noqa: E402
from methods.fire_relative_positions import Config  # noqa: E402
from methods.fire_relative_positions.task import CopyMarkovSource  # noqa: E402
from methods.fire_relative_positions import train  # noqa: E402
from methods.fire_relative_positions.train import build_model, token_nll  # noqa: E402


def _source(**kw) -> CopyMarkovSource:
    args = dict(vocab_size=64, branching=3, copy_prob=0.05, span_min=4, span_max=8, language_seed=3)
    args.update(kw)
    return CopyMarkovSource(**args)


# ---------------------------------------------------------------------------- task


def test_markov_only_source_follows_transition_support():
    src = _source(copy_prob=0.0)
    b = src.sample(torch.Generator().manual_seed(0), 8, 100)
    assert b.tokens.shape == (8, 100) and not b.copy.any()
    assert int(b.tokens.min()) >= 0 and int(b.tokens.max()) < 64
    probs = src.trans[b.tokens[:, :-1], b.tokens[:, 1:]]
    assert bool((probs > 0).all())
    assert torch.allclose(src.trans.sum(1), torch.ones(64))
    assert int((src.trans > 0).sum(1).max()) == 3


def test_copied_tokens_repeat_an_earlier_bigram_far_enough_back():
    src = _source(copy_prob=0.2)
    b = src.sample(torch.Generator().manual_seed(1), 6, 120)
    x, c = b.tokens, b.copy
    assert c.float().mean() > 0.3  # plenty of copying at this rate
    for r, t in c.nonzero().tolist():
        # x[t-1], x[t] was copied from x[j-1], x[j] with t - j >= span_min
        j = torch.arange(1, t - src.span_min + 1)
        hit = (x[r, j - 1] == x[r, t - 1]) & (x[r, j] == x[r, t])
        assert bool(hit.any()), (r, t)


def test_sampling_is_deterministic_and_copy_fraction_is_stationary():
    src = _source(copy_prob=0.05, span_min=4, span_max=8)
    a = src.sample(torch.Generator().manual_seed(7), 4, 50)
    b = src.sample(torch.Generator().manual_seed(7), 4, 50)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.copy, b.copy)
    long = src.sample(torch.Generator().manual_seed(8), 64, 600)
    # renewal argument: continuing copy tokens per token = p (E[m] - 1) / (1 + p E[m])
    p, m = 0.05, 6.0
    expect = p * (m - 1) / (1 + p * m)
    assert abs(float(long.copy[:, 200:].float().mean()) - expect) < 0.03


def test_topic_tokens_have_their_own_ids_and_the_chain_skips_them():
    src = _source(topic_vocab=20, topic_size=5, topic_prob=0.4, copy_prob=0.0)
    assert src.n_tokens == 84
    b = src.sample(torch.Generator().manual_seed(2), 16, 80)
    x, top = b.tokens, b.topic
    assert bool((x[top] >= 64).all()) and bool((x[~top] < 64).all())
    assert 0.3 < float(top.float().mean()) < 0.5
    for r in range(16):
        assert len(set(x[r][top[r]].tolist())) <= 5  # one topic set per sequence
        markov = x[r][~top[r]]  # the chain continues from its last Markov token
        assert bool((src.trans[markov[:-1], markov[1:]] > 0).all())


def test_ideal_topic_nll_is_the_bayes_predictor_of_the_topic_tokens():
    src = _source(topic_vocab=12, topic_size=4, topic_prob=0.3, copy_prob=0.0)
    b = src.sample(torch.Generator().manual_seed(5), 6, 40)
    got = src.ideal_topic_nll(b)
    assert got.shape == (6, 39)
    for r in range(6):
        seen: set[int] = set()
        for t in range(40):
            tok = int(b.tokens[r, t])
            if t >= 1:
                if b.topic[r, t]:
                    k = len(seen)
                    p = 1 / 4 if tok in seen else (4 - k) / 4 / (12 - k)  # the k seen ids are in the set
                    assert float(got[r, t - 1]) == pytest.approx(-math.log(0.3) - math.log(p), rel=1e-12)
                else:
                    assert math.isnan(float(got[r, t - 1]))
            if b.topic[r, t]:
                seen.add(tok)
    # the topic tokens are the only ones it scores; a sequence's first token is context, never a target
    assert torch.equal(~got.isnan(), b.topic[:, 1:])
    with pytest.raises(ValueError, match="copy_prob"):
        _source(topic_vocab=12, topic_size=4, topic_prob=0.3, copy_prob=0.1).ideal_topic_nll(b)


def test_ideal_topic_loss_falls_with_context_length():
    src = _source(topic_vocab=32, topic_size=8, topic_prob=0.5, copy_prob=0.0)
    g = torch.Generator().manual_seed(0)
    ideal = train.ideal_longloss(src, {n: src.sample(g, 64, n) for n in (64, 256)})
    floor, blind = math.log(2) + math.log(8), math.log(2) + math.log(32)  # set known / context ignored
    assert floor < ideal[256] < ideal[64] < blind
    assert ideal[64] - ideal[256] > 0.25  # a 0.37-nat fall on these sets (the cpu claim's reference)


def test_context_gain_is_a_fraction_of_the_ideal_fall():
    ideal = {64: 3.2, 128: 3.0, 256: 2.8}
    gain = train.context_gain({64: 3.9, 128: 3.8, 256: 3.9}, ideal, 64)
    assert gain == pytest.approx({128: 0.5, 256: 0.0})  # only lengths beyond the training length
    assert train.context_gain({64: 3.9, 256: 4.1}, ideal, 64)[256] == pytest.approx(-0.5)
    assert train.context_gain({128: 3.9, 256: 3.8}, ideal, 64) == {}  # no loss at the training length
    assert train.context_gain({64: 3.9, 256: 3.8}, {64: 3.0, 256: 3.0}, 64) == {}  # no ideal fall to compare


def test_markov_entropy():
    assert _source(branching=1).markov_entropy() == pytest.approx(0.0, abs=1e-9)
    h = _source(branching=3).markov_entropy()
    assert 0.0 < h <= math.log(3) + 1e-9


# ---------------------------------------------------------------------------- encodings


def test_alibi_bias_values():
    b = relpos.ALiBiBias(8)(5)
    slopes = torch.tensor([2.0 ** -(h + 1) for h in range(8)])
    assert torch.allclose(b[:, 4, 1], -slopes * 3)
    assert torch.allclose(b[:, 2, 2], torch.zeros(8))


def test_t5_buckets():
    d = torch.arange(0, 300)
    bk = relpos.t5_bucket(d, 32, 128)
    assert torch.equal(bk[:16], torch.arange(16))  # exact for small distances
    assert bool((bk[1:] >= bk[:-1]).all())  # monotone
    assert int(bk[32]) == 16 + int(math.log(2) / math.log(8) * 16)
    assert int(bk[127]) == 31 and int(bk[299]) == 31


def test_rope_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    cos, sin = relpos.rope_tables(200, 16)

    def score(i, j):
        qi = relpos.apply_rope(q, cos[i : i + 1], sin[i : i + 1])
        kj = relpos.apply_rope(k, cos[j : j + 1], sin[j : j + 1])
        return float((qi * kj).sum())

    assert score(10, 3) == pytest.approx(score(150, 143), abs=1e-4)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-3)
    # a rotation preserves norms
    assert float(relpos.apply_rope(q, cos[50:51], sin[50:51]).norm()) == pytest.approx(float(q.norm()), rel=1e-5)


def test_fire_progressive_interpolation():
    fire = relpos.FIREBias(4, init_c=0.1, init_L=16.0)
    x = fire.normalized(64).detach()
    psi = lambda v: math.log(0.1 * v + 1)  # noqa: E731
    assert float(x[10, 3]) == pytest.approx(psi(7) / psi(16), rel=1e-4)  # i <= L: normalized by psi(L)
    assert float(x[40, 0]) == pytest.approx(1.0, rel=1e-4)  # i > L: the farthest key maps to 1
    assert float(x[40, 10]) == pytest.approx(psi(30) / psi(40), rel=1e-4)
    tril = torch.ones(64, 64, dtype=torch.bool).tril()
    assert float(x[tril].min()) >= 0.0 and float(x[tril].max()) <= 1.0 + 1e-5
    assert fire(64).shape == (4, 64, 64)


def test_fire_mlp_depth_and_seeded_init():
    """f_theta has the requested hidden layers; one hidden layer draws its init exactly as before the option
    existed (weights then biases of the first Linear, then of the last), so recorded runs are unchanged."""
    one, two = relpos.FIREBias(3, mlp_width=8), relpos.FIREBias(3, mlp_width=8, mlp_layers=2)
    lin = lambda f: [m for m in f.mlp if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert [(m.in_features, m.out_features) for m in lin(one)] == [(1, 8), (8, 3)]
    assert [(m.in_features, m.out_features) for m in lin(two)] == [(1, 8), (8, 8), (8, 3)]
    g = torch.Generator().manual_seed(0)
    one.init_mlp(g)
    g = torch.Generator().manual_seed(0)
    expect = []
    for fan_in, shape_w, shape_b in ((1, (8, 1), (8,)), (8, (3, 8), (3,))):
        bound = fan_in**-0.5
        expect.append(((torch.rand(shape_w, generator=g) * 2 - 1) * bound, (torch.rand(shape_b, generator=g) * 2 - 1) * bound))
    for m, (w, b) in zip(lin(one), expect):
        assert torch.equal(m.weight, w) and torch.equal(m.bias, b)
    two.init_mlp(torch.Generator().manual_seed(0))
    assert two(20).shape == (3, 20, 20)
    with pytest.raises(ValueError):
        relpos.FIREBias(3, mlp_layers=0)
    cfg = Config.model_validate({"model": {"fire_mlp_layers": 2}})
    assert cfg.model.fire_mlp_layers == 2


@pytest.mark.parametrize("mlp_layers", [1, 2])
def test_fire_bias_in_row_blocks_without_gradients_equals_the_whole(monkeypatch, mlp_layers):
    """Evaluation computes the FIRE MLP on blocks of query rows past FIREBias.chunk_elems (memory at long
    lengths); the bias must not change, and with gradients it is computed whole."""
    fire = relpos.FIREBias(3, mlp_width=8, init_c=0.2, init_L=12.0, mlp_layers=mlp_layers)
    fire.init_mlp(torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = fire(50)
    calls = []
    monkeypatch.setattr(fire.mlp, "forward", lambda x, f=fire.mlp.forward: calls.append(x.shape) or f(x))
    monkeypatch.setattr(relpos.FIREBias, "chunk_elems", 7 * 50 * 8)  # 7 rows per block
    with torch.no_grad():
        blocked = fire(50)
    assert [s[0] for s in calls] == [7] * 7 + [1]
    assert blocked.shape == whole.shape and torch.allclose(blocked, whole, rtol=0, atol=1e-6)
    calls.clear()
    grad = fire(50)
    assert calls == [(50, 50, 1)] and grad.requires_grad and torch.allclose(grad.detach(), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("enc", relpos.ENCODINGS)
def test_model_is_causal_and_runs_beyond_training_length(enc):
    cfg = Config.model_validate({"model": {"n_layers": 2, "n_heads": 2, "d_model": 16, "d_kv": 8, "d_ff": 32,
                                           "fire_init_L": 8, "t5_max_distance": 24}})
    torch.manual_seed(0)
    m = build_model(enc, cfg.model, 20)
    m.init_weights(torch.Generator().manual_seed(0))
    m.eval()
    t = torch.randint(0, 20, (2, 40), generator=torch.Generator().manual_seed(1))
    t2 = t.clone()
    t2[:, 25:] = (t2[:, 25:] + 1) % 20
    with torch.no_grad():
        a, b = m(t), m(t2)
    assert a.shape == (2, 40, 20)
    assert torch.allclose(a[:, :25], b[:, :25], atol=1e-5)
    assert not torch.allclose(a[:, 25:], b[:, 25:], atol=1e-5)


# ---------------------------------------------------------------------------- FIRE's expressiveness (paper's theory)


def _fit_fire(target: torch.Tensor, n: int, c: float = 0.1, steps: int = 2000) -> float:
    """Fit FIRE's MLP (c fixed, L = n so psi(max(L, i)) is the constant psi(L)) to a target bias given per
    distance (H, n); returns the largest error over the whole causal (H, n, n) bias, relative to the range."""
    torch.manual_seed(0)
    H = target.shape[0]
    fire = relpos.FIREBias(H, mlp_width=32, init_c=c, init_L=float(n))
    fire.c.requires_grad_(False)
    fire.L_mult.requires_grad_(False)
    opt = torch.optim.Adam(fire.mlp.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x = fire.normalized(n)[n - 1].flip(0).detach()  # MLP inputs for distances 0..n-1
    for _ in range(steps):
        loss = ((fire.mlp(x[:, None]).T - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        err = fire(n) - target[:, relpos.rel_distance(n)]
        tril = torch.ones(n, n, dtype=torch.bool).tril()
        return float(err[:, tril].abs().max() / (target.max() - target.min()))


def test_alibi_slopes_follow_the_alibi_recipe_for_any_head_count():
    assert torch.allclose(relpos.alibi_slopes(4), torch.tensor([2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8]))
    twelve = relpos.alibi_slopes(12)  # the paper profile's head count: 8-head slopes, then 4 interleaved ones
    want = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -k for k in (0.5, 1.5, 2.5, 3.5)]
    assert torch.allclose(twelve, torch.tensor(want))
    assert relpos.alibi_slopes(1).tolist() == [2.0 ** -8] and len(relpos.alibi_slopes(6)) == 6


def test_fire_represents_alibi():
    n, H = 48, 4
    target = -relpos.alibi_slopes(H)[:, None] * torch.arange(n).float()[None, :]
    assert _fit_fire(target, n) < 0.03


def test_fire_represents_kerple_log():
    # with c = r2 the target is linear in FIRE's input: f(x) = -r1 * psi(L) * x
    n, r2 = 48, 0.5
    r1 = torch.tensor([0.5, 1.0, 2.0])
    target = -r1[:, None] * torch.log1p(r2 * torch.arange(n).float()[None, :])
    assert _fit_fire(target, n, c=r2) < 0.01


# ---------------------------------------------------------------------------- tiny training run


def test_tiny_fire_model_learns_the_markov_source():
    torch.manual_seed(0)
    src = _source(vocab_size=32, branching=2, copy_prob=0.0)
    cfg = Config.model_validate({"model": {"n_layers": 1, "n_heads": 2, "d_model": 32, "d_kv": 16, "d_ff": 64,
                                           "fire_init_L": 8}})
    m = build_model("fire", cfg.model, 32)
    m.init_weights(torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss = token_nll(m, src.sample(g, 16, 32)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        ev = token_nll(m, src.sample(torch.Generator().manual_seed(99), 32, 32)).mean().item()
    assert ev < math.log(32) - 1.5  # far below the uniform 3.47 nats
    assert ev < src.markov_entropy() + 0.5


# ---------------------------------------------------------------------------- the shared decoder's attention paths


def _t5_decoder(**kw) -> DecoderOnlyTransformer:
    m = DecoderOnlyTransformer(vocab_size=20, n_positions=kw.pop("n_positions", 0), d_model=32, n_layers=2,
                               n_heads=4, d_kv=8, d_ff=64, **kw)
    m.init_weights(torch.Generator().manual_seed(0))
    return m.eval()


@pytest.mark.parametrize("attn_scale", ["none", "sqrt"])
def test_explicit_attention_path_equals_fused_kernel(attn_scale):
    # rel_encoding="nope" forms the scores explicitly (the path every relative scheme uses); with no bias and
    # no rotation it must compute the same attention as scaled_dot_product_attention (rel_encoding=None)
    fused, explicit = _t5_decoder(attn_scale=attn_scale), _t5_decoder(attn_scale=attn_scale, rel_encoding="nope")
    explicit.load_state_dict(fused.state_dict())
    t = torch.randint(0, 20, (3, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = fused(t), explicit(t)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_relative_scheme_plugs_into_the_t5_model_with_a_position_table():
    # the Position Coupling architecture (pre_post RMSNorm, Mesh-TF init, learned table) with RoPE on top
    base = _t5_decoder(n_positions=30)
    rope = _t5_decoder(n_positions=30, rel_encoding="rope")
    rope.load_state_dict(base.state_dict())
    t = torch.randint(0, 20, (2, 24), generator=torch.Generator().manual_seed(3))
    ids = torch.arange(24).expand(2, 24)
    with torch.no_grad():
        a, b = base(t, ids), rope(t, ids)
    assert a.shape == b.shape == (2, 24, 20)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-5)  # one key only: rotation cannot matter at position 0
    assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-4)


def test_decoder_rejects_unknown_options():
    for kw in ({"rel_encoding": "xpos"}, {"attn_scale": "cosine"}, {"init": "xavier"}, {"norm_position": "sandwich"}):
        with pytest.raises((KeyError, ValueError)):
            _t5_decoder(**kw)
