"""patch-dpo: weights follow the quality maps; learning moves only where the weights are non-zero."""
from __future__ import annotations

import pytest
import torch

from vitruvian.core.objectives.masks import patch_weights, quality_to_latent
from vitruvian.core.errors import ConfigError
from vitruvian.trainers.objectives import ObjectiveContext, PatchDPO, get_objective
from vitruvian.trainers.objectives.patch_dpo import region_quality

from ..tiny import tiny_scheduler
from .objective_kit import region_pairs, run_cli
from .test_objectives import lora_unet, make_batch


class PixelModel(torch.nn.Module):
    """A per-pixel 'UNet': out = a ⊙ x + b with (1, C, h, w) parameters (no spatial mixing)."""

    def __init__(self, c=4, h=8, w=8):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(1, c, h, w))
        self.b = torch.nn.Parameter(torch.zeros(1, c, h, w))

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False, **_):
        return (self.a * x + self.b,)


def quality_batch(B=2, seed=0):
    batch = make_batch(B, seed=seed)
    q = torch.ones(B, 2, 1, 64, 64)
    q[:, 1, :, :32, :32] = 0.0  # rejected bad in the top-left quarter (latent rows/cols 0..3)
    batch["quality"] = q
    return batch


class TestWeights:
    def test_value(self):
        q_w, q_l = torch.ones(1, 1, 2, 2), torch.tensor([[[[0.0, 1.0], [0.25, 1.0]]]])
        w_w, w_l = patch_weights(q_w, q_l, "weighted")
        assert torch.equal(w_w, 1 - q_l) and torch.equal(w_l, q_l)  # released: 1 - target_map, gene_map
        d_w, d_l = patch_weights(q_w, q_l, "dpo")
        assert torch.equal(d_w, d_l) and torch.equal(d_w, 1 - q_l)

    def test_quality_to_latent_area(self):
        q = torch.zeros(1, 1, 64, 64)
        q[..., :32, :] = 1.0
        lat = quality_to_latent(q, (8, 8))
        assert lat.shape == (1, 1, 8, 8) and lat[..., :4, :].eq(1).all() and lat[..., 4:, :].eq(0).all()

    def test_exception(self):
        with pytest.raises(ValueError, match="form must be one of"):
            patch_weights(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), "bogus")
        obj = PatchDPO()
        batch = make_batch(1)
        batch["quality"] = None
        ctx = ObjectiveContext(unet=PixelModel(), scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        with pytest.raises(ValueError, match="quality maps"):
            obj(batch, ctx)


class TestLearning:
    @pytest.mark.parametrize("norm", ["all", "mask"])
    def test_moves_only_where_weighted(self, norm):
        """Toy per-pixel model: after training the zero-weight pixels' parameters and errors are unchanged."""
        torch.manual_seed(0)
        model = PixelModel()
        obj = PatchDPO(form="weighted", norm=norm)
        batch = quality_batch()
        ctx = ObjectiveContext(unet=model, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        opt = torch.optim.Adam(model.parameters(), lr=0.05)  # no weight decay: zero gradient = no move
        first = None
        for _ in range(20):
            out = obj(batch, ctx)
            first = out.loss.item() if first is None else first
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        # weights: chosen 1 - q_l (top-left quarter), rejected q_l (everywhere else) -> every pixel is
        # weighted by one image; use the dpo-form weights d = top-left only to check the 'nowhere else'
        assert out.loss.item() < first
        obj_d = PatchDPO(form="weighted", norm=norm)
        model2 = PixelModel()
        batch2 = quality_batch()
        batch2["quality"][:, 1] = 1.0 - batch2["quality"][:, 1]  # rejected bad everywhere except top-left
        batch2["quality"][:, 0] = 0.0
        batch2["quality"][:, 0, :, :32, :32] = 1.0                   # chosen good only in the top-left
        # -> W_chosen = top-left, W_rejected = top-left: nothing outside the quarter is weighted
        ctx2 = ObjectiveContext(unet=model2, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        opt2 = torch.optim.Adam(model2.parameters(), lr=0.05)
        for _ in range(10):
            out = obj_d(batch2, ctx2)
            opt2.zero_grad()
            out.loss.backward()
            opt2.step()
        moved = (model2.b.detach().abs() + model2.a.detach().abs()).sum(1)[0]  # (h, w)
        assert moved[:4, :4].min() > 0.1
        assert moved[4:, :].abs().max() == 0 and moved[:, 4:].abs().max() == 0

    @pytest.mark.parametrize("form", ["weighted", "dpo"])
    def test_unet_gradient_zero_outside_weights(self, form):
        """Tiny UNet: the loss's gradient w.r.t. the prediction vanishes where the weights are 0."""
        unet = lora_unet(random_b=True)
        batch = quality_batch(B=1)
        batch["quality"][:, 0] = 0.0
        batch["quality"][:, 0, :, :32, :32] = 1.0   # d = top-left on both images
        batch["quality"][:, 1] = 0.0 if form == "dpo" else batch["quality"][:, 1]
        grads = []

        def keep_grad(module, args, output):
            if output[0].requires_grad:
                output[0].register_hook(grads.append)

        unet.register_forward_hook(keep_grad)
        ctx = ObjectiveContext(unet=unet, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        out = PatchDPO(form=form)(batch, ctx)
        out.loss.backward()
        g = grads[-1]  # (2, C, h, w) [chosen; rejected]
        assert torch.isfinite(out.loss)
        assert g[0, :, :4, :4].abs().sum() > 0
        assert g[0, :, 4:, :].abs().max() == 0 and g[0, :, :, 4:].abs().max() == 0
        assert ("dpo" == form) == PatchDPO(form=form).needs_reference

    def test_from_config(self, tmp_path):
        from vitruvian.trainers.config import TrainConfig

        cfg = TrainConfig(objective="patch-dpo", base="/m", data="/d", out="/o", patch_form="dpo", patch_norm="mask")
        obj = get_objective("patch-dpo", cfg)
        assert (obj.form, obj.norm, obj.needs_reference) == ("dpo", "mask", True)


def boxed_batch(B=2, seed=0):
    """Pairs whose rejected image has a bad face in the top-left 32×32 pixels (latent cells 0..3)."""
    batch = make_batch(B, seed=seed)
    batch["face_boxes"] = [[torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 32.0, 32.0]])] for _ in range(B)]
    batch["hand_boxes"] = [[torch.zeros(0, 4), torch.zeros(0, 4)] for _ in range(B)]
    return batch


def top_left_quality(batch, latent_size):
    """A user patch scorer (``module:function``): the rejected image is bad in the top-left quarter."""
    q = torch.ones(batch["latents"].shape[0], 2, 1, 16, 16)
    q[:, 1, :, :8, :8] = 0.0
    return q


class TestQualitySources:
    def test_regions_value(self):
        q = region_quality(boxed_batch(), (8, 8), 64)
        assert q.shape == (2, 2, 1, 8, 8) and q[:, 0].eq(1).all()
        assert q[:, 1, :, :4, :4].eq(0).all() and q[:, 1].sum() == 2 * (64 - 16)

    def test_regions_fall_back_to_chosen_boxes(self):
        batch = boxed_batch(B=1)
        batch["hand_boxes"] = [[torch.tensor([[32.0, 32.0, 64.0, 64.0]]), torch.zeros(0, 4)]]
        q = region_quality(batch, (8, 8), 64)
        assert q[0, 1, 0, 4:, 4:].eq(0).all() and q[0, 1, 0, :4, :4].eq(0).all() and q[0, 1].sum() == 32

    @pytest.mark.parametrize("source", ["regions", f"{__name__}:top_left_quality"])
    def test_weights_follow_the_bad_regions(self, source):
        """Region (or callable) quality: the chosen image is weighted in the face box only, the rejected one
        outside it, with no dataset maps."""
        obj = PatchDPO(form="weighted", quality=source, resolution=64)
        batch = boxed_batch()
        batch["quality"] = None  # no dataset maps needed
        w_w, w_l = obj.batch_quality(batch, (8, 8))[:, 0], obj.batch_quality(batch, (8, 8))[:, 1]
        from vitruvian.core.objectives.masks import quality_to_latent
        q_l = quality_to_latent(w_l, (8, 8))
        assert q_l[:, :, :4, :4].eq(0).all() and q_l[:, :, 4:, :].eq(1).all() and w_w.eq(1).all()
        model = PixelModel()
        ctx = ObjectiveContext(unet=model, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))
        out = obj(batch, ctx)
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.metrics["weight_chosen"] == pytest.approx(16 / 64)

    def test_exception(self):
        with pytest.raises(ValueError, match="quality must be one of"):
            PatchDPO(quality="bogus")
        with pytest.raises(ConfigError, match="patch_quality must name an importable callable"):
            PatchDPO(quality="vitruvian.nope:f")
        with pytest.raises(ConfigError, match="patch_quality must be maps, regions"):
            from vitruvian.trainers.config import TrainConfig
            TrainConfig(objective="patch-dpo", base="/m", data="/d", out="/o", patch_quality="bogus")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["weighted", "dpo"])
def test_cli_end_to_end(tmp_path, form):
    from vitruvian.core.lora_io import load_lora_state

    data = region_pairs(tmp_path / "data")
    assert run_cli("patch-dpo", data, tmp_path / "out", "--set", f"patch_form={form}") == 0
    state = load_lora_state(tmp_path / "out" / "vitruvian.safetensors")
    assert state.config["patch_form"] == form
    assert any(v.abs().sum() > 0 for k, v in state.unet.items() if "lora_B" in k)


@pytest.mark.slow
def test_cli_end_to_end_region_quality(tmp_path):
    """patch-dpo from the records' face/hand boxes alone (no quality maps in the dataset)."""
    from vitruvian.core.lora_io import load_lora_state

    data = region_pairs(tmp_path / "data")
    assert run_cli("patch-dpo", data, tmp_path / "out", "--set", "patch_quality=regions") == 0
    state = load_lora_state(tmp_path / "out" / "vitruvian.safetensors")
    assert state.config["patch_quality"] == "regions"
    assert any(v.abs().sum() > 0 for k, v in state.unet.items() if "lora_B" in k)
