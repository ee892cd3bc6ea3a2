"""The curves figure of a run: one panel per metric, a seed's colour the same in every panel, the legend naming
every seed, and no text overlapping the suptitle or leaving the figure, however many rows there are."""
from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from registry import runner


def _curves(n_metrics: int) -> list[tuple[int, int, str, float]]:
    out = []
    for m in range(n_metrics):
        for seed in (0, 1, 2):
            if m == 0 and seed == 0:
                continue  # seed 0 never logged the first metric
            scale = 10.0 ** (m % 9 - 3)  # tick labels from 0.0005 to 300000 wide
            out += [(seed, step, f"metric_{m:02d}_by_k_of_a_longish_name", scale * (1.0 / (step + 1) + seed))
                    for step in range(0, 5000, 500)]
    return out


@pytest.mark.parametrize("n_metrics", [1, 7, 45])
def test_layout_keeps_text_inside_and_clear_of_the_suptitle(n_metrics: int) -> None:
    import matplotlib.pyplot as plt

    fig = runner.curves_figure(_curves(n_metrics), "some-paper-id @ cpu")
    try:
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        page = fig.bbox
        sup = fig._suptitle.get_window_extent(r)
        assert page.x0 <= sup.x0 and sup.x1 <= page.x1 and page.y0 <= sup.y0 and sup.y1 <= page.y1
        used = [ax for ax in fig.axes if ax.axison]
        assert len(used) == n_metrics
        boxes = {ax: ax.get_tightbbox(r) for ax in used}  # each axes with its title, labels and tick labels
        for ax, box in boxes.items():
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, ax.get_title()
            assert not box.overlaps(sup), ax.get_title()
        for a in used:  # a panel's title does not run into another panel's text
            title = a.title.get_window_extent(r)
            assert not [b.get_title() for b, box in boxes.items() if b is not a and title.overlaps(box)], a.get_title()
    finally:
        plt.close(fig)


def test_a_seed_keeps_its_colour_and_the_legend_names_every_seed() -> None:
    import matplotlib.pyplot as plt

    fig = runner.curves_figure(_curves(3), "t")
    try:
        panels = {ax.get_title(): ax for ax in fig.axes if ax.axison}
        first = panels["metric_00_by_k_of_a_longish_name"]
        assert [to_hex(line.get_color()) for line in first.lines] == [to_hex("C1"), to_hex("C2")]
        for title, ax in panels.items():
            if ax is not first:
                assert [to_hex(line.get_color()) for line in ax.lines] == [to_hex(f"C{i}") for i in range(3)], title
        legend = fig.axes[0].get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["seed 0", "seed 1", "seed 2"]
    finally:
        plt.close(fig)


def test_plot_curves_writes_a_png_and_skips_empty_curves(tmp_path: Path) -> None:
    assert runner.plot_curves(tmp_path / "a.png", _curves(2), "t")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not runner.plot_curves(tmp_path / "b.png", [], "t") and not (tmp_path / "b.png").exists()
