"""The training figure: whole-epoch axes and a labelled colour bar (matplotlib only if installed)."""

from __future__ import annotations

import numpy as np
import pytest

from ailib import plot


@pytest.fixture
def figure_axes(tmp_path, monkeypatch):
    pytest.importorskip(
        "matplotlib", reason="matplotlib is not installed (pip install 'ailib[plot]')"
    )
    from matplotlib.figure import Figure

    saved = {}
    original = Figure.savefig

    def keep(fig, *args, **kwargs):
        saved["fig"] = fig
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)

    def draw(history):
        confusion = np.array([[5, 1], [2, 7]])
        path = plot.training_figure(history, confusion, ["a", "b"], tmp_path / "t.png")
        assert path.stat().st_size > 0
        return saved["fig"].axes

    return draw


def test_one_epoch_run_gets_a_whole_epoch_axis(figure_axes):
    loss_ax, acc_ax, *_ = figure_axes({"loss": [0.5], "accuracy": [0.8], "val_loss": [0.6]})
    for ax in (loss_ax, acc_ax):
        low, high = ax.get_xlim()
        assert low <= 1 - 0.4 and high >= 1 + 0.4
        assert all(float(t).is_integer() for t in ax.get_xticks() if low <= t <= high)


def test_colour_bar_says_what_its_colours_mean(figure_axes):
    axes = figure_axes({"loss": [0.5, 0.4], "accuracy": [0.8, 0.9]})
    colour_bar = axes[-1]
    assert "share" in colour_bar.get_ylabel()
    assert "counts" in axes[2].get_title()


def test_a_failed_drawing_keeps_the_previous_figure_and_leaves_no_debris(tmp_path, monkeypatch):
    """The figure was written straight to its name: a run killed (or a disk filling) while
    drawing left a truncated PNG."""
    pytest.importorskip(
        "matplotlib", reason="matplotlib is not installed (pip install 'ailib[plot]')"
    )
    from matplotlib.figure import Figure

    history, confusion = {"loss": [0.5], "accuracy": [0.8]}, np.array([[5, 1], [2, 7]])
    path = plot.training_figure(history, confusion, ["a", "b"], tmp_path / "t.png")
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def half_then_fail(fig, target, **kwargs):
        target.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        plot.training_figure(history, confusion, ["a", "b"], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]
