"""core.compare: the before/after grid and the score-distribution plot."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.compare import before_after_grid, score_plot


def test_grid_layout_and_pixels():
    before = torch.zeros(3, 3, 64, 64)
    before[:, 0] = 1.0  # pure red before
    after = torch.zeros(3, 3, 64, 64)
    after[:, 2] = 1.0  # pure blue after
    grid = before_after_grid(before, after, columns=2, min_side=128)
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1
    # 64 px tiles are doubled to 128; 3 images at 2 columns wrap into 2 blocks of 2 rows
    assert grid.shape[1] > 4 * 128 and grid.shape[2] > 2 * 128
    red = (grid[0] > 0.99) & (grid[1] < 0.01) & (grid[2] < 0.01)
    blue = (grid[2] > 0.99) & (grid[0] < 0.01) & (grid[1] < 0.01)
    assert int(red.sum()) == int(blue.sum()) == 3 * 128 * 128
    # the first before tile lies above the first after tile, in the same columns
    rows_red, cols_red = red.nonzero(as_tuple=True)
    first_red_row = int(rows_red.min())
    top_red_cols = cols_red[rows_red == first_red_row]
    rows_blue, cols_blue = blue.nonzero(as_tuple=True)
    top_blue_cols = cols_blue[rows_blue == int(rows_blue.min())]
    assert int(rows_blue.min()) > first_red_row and torch.equal(top_red_cols, top_blue_cols)


def test_grid_scores_add_a_text_line():
    b, a = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    plain = before_after_grid(b, a)
    scored = before_after_grid(b, a, scores_before=[0.1, None], scores_after=[0.2, float("nan")])
    assert scored.shape[1] > plain.shape[1]


def test_plot_draws_both_distributions():
    plot = score_plot([0.1, 0.2, 0.15], [0.6, 0.7, None], name="sharpness")
    assert plot.shape == (3, 300, 640)
    blueish = (plot[2] > 0.6) & (plot[0] < 0.45)  # the "before" colour (70, 110, 200)
    orange = (plot[0] > 0.8) & (plot[2] < 0.25)   # the "after" colour (230, 120, 30)
    assert blueish.any() and orange.any()
    # before dots sit left of after dots (lower scores)
    assert blueish.nonzero()[:, 1].float().median() < orange.nonzero()[:, 1].float().median()


def test_plot_without_scores():
    plot = score_plot([], [None])
    assert plot.shape == (3, 300, 640) and plot.min() < 0.5  # white page with a message


def test_exception():
    with pytest.raises(ValueError, match=r"before and after must have the same shape .* got \(2, 3, 8, 8\) and \(1, 3, 8, 8\)"):
        before_after_grid(torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"before must be \(B, 3, H, W\), got shape \(2, 8, 8, 3\); this looks like ComfyUI's IMAGE layout"):
        before_after_grid(torch.rand(2, 8, 8, 3), torch.rand(2, 8, 8, 3))
    with pytest.raises(ValueError, match="scores_after must have one value per image"):
        before_after_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), scores_after=[1.0])
    with pytest.raises(ValueError, match="size must be at least"):
        score_plot([1.0], [2.0], size=(100, 50))
