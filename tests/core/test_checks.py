"""core.checks: the image and regions checks every core entry point and node shares."""

from __future__ import annotations

import doctest

import pytest
import torch

from vitruvian.core import checks
from vitruvian.core.checks import check_image, check_names, check_regions
from vitruvian.core.errors import NodeInputError
from vitruvian.core.regions import Region, RegionBatch


def _batch(sizes=((8, 12), (8, 12))) -> RegionBatch:
    return RegionBatch(tuple((Region("face", (0, 0, 4, 4), 0.9, scores={"q": 0.5}),) for _ in sizes), sizes)


def test_value_check_image_makes_rgb_and_keeps_dtype():
    for c in (1, 3, 4):
        out = check_image(torch.rand(2, c, 8, 12, dtype=torch.float64), "f")
        assert out.shape == (2, 3, 8, 12) and out.dtype == torch.float64
    grey = torch.rand(1, 1, 4, 4)
    assert torch.equal(check_image(grey, "f")[0, 2], grey[0, 0])


def test_value_check_regions_returns_the_batch():
    batch = _batch()
    assert check_regions(batch, torch.zeros(2, 3, 8, 12), "f") is batch
    assert check_names("f", "labels", batch, " face, ") == ("face",) and check_names("f", "labels", batch, "") is None


def test_exception_check_image():
    cases = [
        ([[0.5]], TypeError,
         r"f: image must be a float tensor \(B, C, H, W\) with C = 1, 3 or 4 in \[0, 1\], got list"),
        (torch.rand(1, 8, 8, 3), ValueError, r"got shape \(1, 8, 8, 3\); this looks like ComfyUI's IMAGE layout "
                                             r"\(B, H, W, C\): use image.movedim\(-1, 1\)"),
        (torch.rand(3, 8, 8), ValueError, r"image must be \(B, C, H, W\).*add the batch dimension with image\[None\]"),
        (torch.rand(0, 3, 8, 8), ValueError, r"image batch is empty \(shape \(0, 3, 8, 8\)\)"),
        (torch.rand(1, 3, 0, 8), ValueError, r"image batch is empty"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, r"got dtype torch.uint8; convert 8-bit images"),
        (torch.full((1, 3, 8, 8), float("nan")), ValueError, r"image must hold finite values, got NaN or inf"),
    ]
    for image, kind, message in cases:
        with pytest.raises(kind, match=message):
            check_image(image, "f")
    with pytest.raises(ValueError, match=r"f: before must be \(B, 3, H, W\), got shape \(1, 4, 8, 8\)"):
        check_image(torch.rand(1, 4, 8, 8), "f", "before", channels=(3,))


def test_exception_check_regions():
    with pytest.raises(TypeError, match=r"f: regions must be a RegionBatch \(VITRUVIAN_REGIONS\), got list"):
        check_regions([], torch.zeros(2, 3, 8, 12), "f")
    with pytest.raises(ValueError, match=r"f: real_regions must describe the 3 image\(s\) of real_images, got "
                                         r"real_regions for 2 image\(s\)"):
        check_regions(_batch(), torch.zeros(3, 3, 8, 12), "f", "real_regions", "real_images")
    with pytest.raises(ValueError, match="regions of image 0 were found on a 12×8 image, but the image is 8×8; "
                                         "detect the regions on this same IMAGE"):
        check_regions(_batch(), torch.zeros(2, 3, 8, 8), "f")
    with pytest.raises(NodeInputError, match="f: input 'score': a score name the regions carry is expected, got an "
                                             "unknown score z; the regions carry q"):
        check_names("f", "score", _batch(), "z", "score")


def test_doctests():
    failed, attempted = doctest.testmod(checks)
    assert attempted > 0 and failed == 0
