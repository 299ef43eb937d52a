"""``make demo`` (``python -m vitruvian.demo``) end to end on the tiny model, twice into the same folder."""
import pytest
from PIL import Image


@pytest.mark.slow
def test_demo_runs_and_runs_again(tmp_path, capsys):
    from vitruvian.demo import main

    assert main(["--out", str(tmp_path), "--steps", "1"]) == 0
    first = capsys.readouterr().out
    assert "Time per stage:" in first and "[train] 1 DPO steps" in first
    for name in ("pose_preview", "loss_curve", "compare_grid", "compare_scores"):
        with Image.open(tmp_path / f"{name}.png") as image:
            assert min(image.size) >= 64, name
    # a second run in the same folder replaces the previous training run instead of refusing to start
    assert main(["--out", str(tmp_path), "--steps", "1"]) == 0
    second = capsys.readouterr().out
    assert "replacing the previous demo run" in second and "[train] 1 DPO steps" in second
    assert "0 pairs added (9 already there)" in second  # the dataset keeps each pair once
