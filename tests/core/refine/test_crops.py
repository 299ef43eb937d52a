"""The split form: one square crop batch out, any sampler, paste back with the same guarantees."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.refine import CropSet, RefineSettings, make_crops, paste_crops, refined_problem, square_size
from vitruvian.core.regions import RegionBatch

SETTINGS = RefineSettings(labels="face,hand", target_size=64, max_size=128, min_size=8, context_factor=1.5,
                          mask_dilation=2, mask_feather=3)


def test_smoke(photos, photo_regions):
    crops, masks, cropset = make_crops(photos, photo_regions, SETTINGS)
    assert isinstance(cropset, CropSet) and len(cropset) == 5
    assert crops.shape == (5, 3, 96, 96) and masks.shape == (5, 1, 96, 96)
    assert cropset.size == square_size(SETTINGS) == (96, 96)
    assert [(p.image_index, p.region_index) for p in cropset.plans] == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert [r.status for r in cropset.report.regions].count("skipped") == 3
    assert "5 crops of 96×96 from 3 image(s); 3 region(s) skipped" in cropset.summary()


def test_value_paste_back(photos, photo_regions):
    crops, masks, cropset = make_crops(photos, photo_regions, SETTINGS)
    out = paste_crops(photos, 1 - crops, cropset)
    untouched = (out.mask == 0).expand_as(photos)
    assert torch.equal(out.image[untouched], photos[untouched])
    assert out.report.counts() == {"refined": 5, "skipped": 3, "failed": 0}
    assert all(r.reason == "" and r.seam for r in out.report.regions if r.status == "refined")
    # The same crops pasted back change the inside only by the resampling round trip.
    same = paste_crops(photos, crops, cropset)
    assert (same.image - photos).abs().max() < 0.25 and (same.image - photos).abs().mean() < 0.002


def test_value_refined_at_another_size_only_when_asked(photos, photo_regions):
    """A size change between Crop Regions and Paste Regions (an upscaler, a VAE cropping to its multiple) is an
    error by default, never a silent stretch; resize=True takes any size of the crops' aspect ratio."""
    crops, _, cropset = make_crops(photos, photo_regions, SETTINGS)
    bigger = torch.nn.functional.interpolate(1 - crops, size=(192, 192), mode="bilinear")
    with pytest.raises(ValueError, match=r"refined crops must be 96×96 pixels, the size Crop Regions cut, got 192×192; "
                                         r"scale them back to 96×96"):
        paste_crops(photos, bigger, cropset)
    assert refined_problem(bigger, cropset).startswith("refined crops must be 96×96 pixels")
    assert refined_problem(bigger, cropset, resize=True) == "" and refined_problem(1 - crops, cropset) == ""
    assert paste_crops(photos, bigger, cropset, resize=True).report.counts()["refined"] == 5


def test_value_nan_crop_fails_alone(photos, photo_regions):
    crops, _, cropset = make_crops(photos, photo_regions, SETTINGS)
    refined = 1 - crops
    refined[1] = float("nan")
    out = paste_crops(photos, refined, cropset)
    failed = [r for r in out.report.regions if r.status == "failed"]
    assert len(failed) == 1 and failed[0].image == 1 and "NaN/inf" in failed[0].reason
    assert out.report.counts()["refined"] == 4


def test_value_nothing_to_crop(photos):
    empty = RegionBatch(((), (), ()), ((128, 128),) * 3)
    crops, masks, cropset = make_crops(photos, empty, SETTINGS)
    assert crops.shape == (0, 3, 96, 96) and len(cropset) == 0
    out = paste_crops(photos, torch.zeros(1, 3, 96, 96), cropset)  # the node's placeholder crop is ignored
    assert torch.equal(out.image, photos) and out.report.notes == ["no region was cropped; the images are unchanged"]


def test_exception(photos, photo_regions):
    crops, _, cropset = make_crops(photos, photo_regions, SETTINGS)
    with pytest.raises(ValueError, match=r"refined crops must be the 5 crops of Crop Regions, in order, got 4 images"):
        paste_crops(photos, crops[:4], cropset)
    with pytest.raises(ValueError, match=r"refined crops must keep the crops' aspect ratio \(96×96\), got 128×96"):
        paste_crops(photos, torch.nn.functional.interpolate(crops, size=(96, 128)), cropset, resize=True)
    with pytest.raises(ValueError, match=r"refined crops must be 96×96 pixels, the size Crop Regions cut, got 128×96"):
        paste_crops(photos, torch.nn.functional.interpolate(crops, size=(96, 128)), cropset)
    with pytest.raises(ValueError, match=r"regions must describe the 1 image\(s\) of the batch, got regions for 3"):
        paste_crops(photos[:1], crops, cropset)
    with pytest.raises(TypeError, match="crops geometry must be a CropSet"):
        paste_crops(photos, crops, {"plans": []})
