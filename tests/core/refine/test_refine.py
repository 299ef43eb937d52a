"""The whole refinement on a batch of three real photos with regions from their keypoints, with plain
functions as the sampler: every region handled, bit-identity outside the masks, seeds, variants and
pick-best, failures that stay local, and clear input errors."""

from __future__ import annotations

import pytest
import torch

from vitruvian.core.refine import RefineSettings, RegionFailed, refine_regions
from vitruvian.core.regions import Region, RegionBatch

SETTINGS = RefineSettings(labels="face,hand", target_size=64, max_size=128, min_size=8, context_factor=1.5,
                          mask_dilation=2, mask_feather=3)


def invert(crop, mask, job):
    return (1 - crop).expand(job.variants, -1, -1, -1)


def blurred_variants(crop, mask, job):
    """Variant k blurred by sigma (3, 0, 1.5)[k]: variant 1 is the sharpest."""
    from kornia.filters import gaussian_blur2d

    out = []
    for sigma in (3.0, 0.0, 1.5)[: job.variants]:
        out.append(crop if sigma == 0 else gaussian_blur2d(crop, (13, 13), (sigma, sigma)))
    return torch.cat(out)


def test_smoke(photos, photo_regions):
    out = refine_regions(photos, photo_regions, SETTINGS, invert)
    assert out.image.shape == photos.shape and out.mask.shape == (3, 1, 128, 128)
    assert len(out.report.regions) == photo_regions.count() == 8


def test_value_every_region_handled(photos, photo_regions):
    out = refine_regions(photos, photo_regions, SETTINGS, invert, seed=100)
    statuses = [(r.image, r.label, r.status) for r in out.report.regions]
    assert statuses == [
        (0, "face", "refined"), (0, "person", "skipped"),
        (1, "face", "refined"), (1, "hand", "refined"), (1, "hand", "refined"), (1, "person", "skipped"),
        (2, "face", "refined"), (2, "person", "skipped"),
    ]
    assert [r.seed for r in out.report.regions] == [100, None, 102, 103, 104, None, 106, None]
    for entry in out.report.regions:
        if entry.status == "skipped":
            assert entry.reason == "label 'person' is not in labels (face, hand)"
        else:
            assert set(entry.seam) == {"colour_before", "colour_after", "gradient_before", "gradient_after"}
            assert {"crop", "sampler", "paste", "seam"} <= set(entry.seconds)
    # Every image changed, inside its masks only.
    for b in range(3):
        assert out.mask[b].sum() > 0 and not torch.equal(out.image[b], photos[b])


def test_value_outside_masks_bit_identical(photos, photo_regions):
    out = refine_regions(photos, photo_regions, SETTINGS, invert)
    untouched = (out.mask == 0).expand_as(photos)
    assert torch.equal(out.image[untouched], photos[untouched])
    changed = out.mask > 0.5
    assert (out.image - photos).abs().amax(dim=1, keepdim=True)[changed].mean() > 0.1


def test_value_regions_updated(photos):
    scored = RegionBatch(((Region("face", (40, 16, 70, 44), 1.0, scores={"sharpness": 3.0}),
                           Region("person", (0, 0, 128, 128), 1.0, scores={"sharpness": 9.0})),), ((128, 128),))
    out = refine_regions(photos[:1], scored, SETTINGS, invert)
    face, person = out.regions[0]
    assert set(face.scores) == {"seam_colour", "seam_gradient"}  # the old score described the old pixels
    assert person.scores == {"sharpness": 9.0}  # skipped: untouched
    assert face.box == scored[0][0].box


def test_value_variants_pick_sharpest(photos, photo_regions):
    settings = RefineSettings(**{**SETTINGS.to_dict(), "variants": 3, "pick": "sharpness"})
    out = refine_regions(photos, photo_regions, settings, blurred_variants)
    refined = [r for r in out.report.regions if r.status == "refined"]
    assert refined and all(r.chosen == 1 and r.variants == 3 and len(r.variant_scores) == 3 for r in refined)
    assert all(r.variant_scores[1] > r.variant_scores[2] > r.variant_scores[0] for r in refined)
    first = refine_regions(photos, photo_regions, RefineSettings(**{**settings.to_dict(), "pick": "first"}),
                           blurred_variants)
    assert all(r.chosen == 0 for r in first.report.regions if r.status == "refined")


def test_value_variants_pick_seam(photos, photo_regions):
    """A variant with a tone shift leaves a seam; the variant that matches its surroundings is picked."""
    def shifted_or_not(crop, mask, job):
        return torch.cat([(crop + 0.25).clamp(0, 1), crop])

    settings = RefineSettings(**{**SETTINGS.to_dict(), "variants": 2, "pick": "seam"})
    out = refine_regions(photos, photo_regions, settings, shifted_or_not)
    refined = [r for r in out.report.regions if r.status == "refined"]
    assert refined and all(r.chosen == 1 and r.variant_scores[1] > r.variant_scores[0] for r in refined)


def test_value_pick_callable(photos, photo_regions):
    def levels(crop, mask, job):
        return torch.cat([crop * 0.5, crop, (crop + 0.1).clamp(0, 1)])

    settings = RefineSettings(**{**SETTINGS.to_dict(), "variants": 3})
    out = refine_regions(photos, photo_regions, settings, levels, pick=lambda v, m: v.mean(dim=(1, 2, 3)))
    assert {r.chosen for r in out.report.regions if r.status == "refined"} == {2}
    assert {r.pick for r in out.report.regions if r.status == "refined"} == {"custom"}


def test_value_seeds_reproducible(photos, photo_regions):
    def noisy(crop, mask, job):
        g = torch.Generator().manual_seed(job.seed)
        return (crop + 0.2 * torch.randn(job.variants, *crop.shape[1:], generator=g)).clamp(0, 1)

    a = refine_regions(photos, photo_regions, SETTINGS, noisy, seed=5)
    b = refine_regions(photos, photo_regions, SETTINGS, noisy, seed=5)
    c = refine_regions(photos, photo_regions, SETTINGS, noisy, seed=6)
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    big = refine_regions(photos, photo_regions, SETTINGS, noisy, seed=2**64 - 2)
    assert [r.seed for r in big.report.regions if r.seed is not None] == [2**64 - 2, 0, 1, 2, 4]


def test_value_overlapping_regions_compose(photos):
    """Regions of one image are refined in turn: the second crop sees the first one's paste."""
    seen = []

    def brighten(crop, mask, job):
        seen.append(float(crop.mean()))
        return (crop + 0.1 * (mask > 0.99)).clamp(0, 1)

    same = Region("face", (40, 20, 80, 60), 1.0)
    batch = RegionBatch(((same, same),), ((128, 128),))
    out = refine_regions(photos[:1], batch, RefineSettings(labels=None, target_size=64, max_size=128, mask_dilation=0,
                                                           mask_feather=0), brighten)
    assert seen[1] > seen[0]
    centre = (out.image - photos[:1])[..., 38:42, 58:62]
    assert centre.mean() > 0.15  # both passes landed there (+0.1 each, less resampling error)


def test_value_failures_stay_local(photos, photo_regions):
    def flaky(crop, mask, job):
        if job.index == 2:
            return torch.full_like(crop, float("nan"))
        if job.index == 3:
            raise RegionFailed("out of memory on this crop")
        if job.index == 4:
            return crop[:, :1]
        return 1 - crop

    out = refine_regions(photos, photo_regions, SETTINGS, flaky)
    by_index = {r.index: r for r in out.report.regions}
    assert by_index[2].status == "failed" and "NaN/inf" in by_index[2].reason
    assert by_index[3].status == "failed" and by_index[3].reason == "out of memory on this crop"
    assert by_index[4].status == "failed" and "expected (V, 3, h, w)" in by_index[4].reason
    assert by_index[0].status == by_index[6].status == "refined"
    # Image 1 had only failing regions: untouched, bit for bit.
    assert torch.equal(out.image[1], photos[1]) and out.mask[1].sum() == 0


def test_value_sampler_errors_propagate(photos, photo_regions):
    def broken(crop, mask, job):
        raise RuntimeError("sampler bug")

    with pytest.raises(RuntimeError, match="sampler bug"):
        refine_regions(photos, photo_regions, SETTINGS, broken)


def test_value_empty(photos):
    empty = RegionBatch(((), (), ()), ((128, 128),) * 3)
    out = refine_regions(photos, empty, SETTINGS, invert)
    assert torch.equal(out.image, photos) and out.report.counts() == {"refined": 0, "skipped": 0, "failed": 0}


def test_exception(photos, photo_regions):
    with pytest.raises(ValueError, match=r"regions must describe the 1 image\(s\) of the batch, got regions for 3"):
        refine_regions(photos[:1], photo_regions, SETTINGS, invert)
    small = torch.nn.functional.interpolate(photos, size=(64, 64))
    with pytest.raises(ValueError, match="regions of image 0 were found on a 128×128 image, but the image is 64×64"):
        refine_regions(small, photo_regions, SETTINGS, invert)
    with pytest.raises(ValueError, match=r"looks like ComfyUI's IMAGE layout \(B, H, W, C\): use image.movedim\(-1, 1\)"):
        refine_regions(photos.movedim(1, -1), photo_regions, SETTINGS, invert)
    with pytest.raises(TypeError, match="image must be a float tensor"):
        refine_regions((photos * 255).byte(), photo_regions, SETTINGS, invert)
    with pytest.raises(TypeError, match="regions must be a RegionBatch"):
        refine_regions(photos, [], SETTINGS, invert)
