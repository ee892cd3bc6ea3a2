"""progressive-distillation: probe, step counting, schedule and config checks."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from methods._lib.boolean import sample_signs  # noqa: E402
from methods.progressive_distillation import Config  # noqa: E402
from methods.progressive_distillation.train import _batch, _probe, _steps_to, spike  # noqa: E402


class _Fixed(torch.nn.Module):
    """Two-class logits (0, a * x_0): p(y=1|x) = sigmoid(a x_0), a degree-1 function of x_0."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), self.a * x[:, 0]], dim=1)


def test_probe_sees_degree_one_correlation_on_support_only():
    x = sample_signs(20000, 20, torch.Generator().manual_seed(0))
    on, off, pl = _probe(_Fixed(2.0), x, support=[0, 1], off=list(range(5, 15)), placebos=[[0, 2], [3, 4]])
    expected = (torch.sigmoid(torch.tensor(2.0)) - 0.5).item()  # |E[x_0 p]| = (s(2) - s(-2)) / 2
    assert on == pytest.approx(expected / 2, abs=0.01)  # averaged with coordinate 1 (~0)
    assert off < 0.01
    assert pl[0] == pytest.approx(expected / 2, abs=0.01) and pl[1] < 0.01  # each placebo set on its own


def test_spike_is_peak_minus_final():
    assert spike([0.0, 0.01, 0.004, 0.002]) == pytest.approx(0.008)
    assert spike([0.0, 0.001, 0.003]) == 0.0  # still rising at the end: no transient spike


def test_labels_are_the_parity_of_the_first_k_coordinates():
    x, y = _batch(10, 3, 5000, torch.Generator().manual_seed(1))
    assert torch.equal(y, ((x[:, :3].prod(1) + 1) / 2).long())
    assert abs(float(y.float().mean()) - 0.5) < 0.03


def test_steps_to_target_and_censoring():
    curve = [(100, 0.5), (200, 0.85), (300, 0.93), (400, 1.0)]
    assert _steps_to(curve, 0.9, cap=500) == 300.0
    assert _steps_to(curve[:2], 0.9, cap=500) == 500.0


def test_config_rejects_too_many_probe_coordinates():
    with pytest.raises(ValueError):
        Config.model_validate({"data": {"n": 10, "k": 6, "n_probe_off": 5}})
    with pytest.raises(ValueError, match="n_placebo_sets"):
        Config.model_validate({"data": {"n": 12, "k": 2, "n_probe_off": 4, "n_placebo_sets": 4}})
    Config.model_validate({"data": {"n": 12, "k": 2, "n_probe_off": 4, "n_placebo_sets": 3}})


def test_probe_in_chunks_equals_one_pass():
    x = sample_signs(5000, 20, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    whole = _probe(net, x, support=[0, 1, 2], off=[5, 6, 7], placebos=[[8, 9, 10]], chunk=5000)
    parts = _probe(net, x, support=[0, 1, 2], off=[5, 6, 7], placebos=[[8, 9, 10]], chunk=777)
    assert [*whole[:2], *whole[2]] == pytest.approx([*parts[:2], *parts[2]], rel=1e-5, abs=1e-7)
