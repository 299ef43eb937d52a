"""hg-dpo: stage merges switch the reference, stage LoRAs combine exactly, L_stat pulls colour statistics back."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from vitruvian.core.errors import ConfigError
from vitruvian.trainers.recipes.hg_dpo import combine_lora_files, stage_plan
from vitruvian.trainers.recipes.hg_dpo.pools import resolve_scorer, sharpness_score
from vitruvian.trainers.lora_layers import adapters_disabled, add_lora, merge_lora
from vitruvian.trainers.objectives import HGDPO, ObjectiveContext
from vitruvian.trainers.families.ddpm import DDPMProcess
from vitruvian.trainers.objectives.hg_dpo import channel_stat_loss

from ..tiny import tiny_scheduler, tiny_unet
from .objective_kit import region_singles, run_cli
from .test_objectives import lora_unet, make_batch

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def saved_lora(tmp_path, name, seed):
    from vitruvian.core.lora_io import save_lora

    unet = add_lora(tiny_unet(0), rank=4, alpha=4.0, targets=TARGETS)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return save_lora(tmp_path / name, unet, config={"lora_targets": list(TARGETS)}), unet


def unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=cond, return_dict=False)[0]


class TestStages:
    def test_plan(self):
        cfg = SimpleNamespace(hg_stages=("easy", "hard"), hg_stage_steps=(), steps=7)
        assert stage_plan(cfg) == [("easy", 7), ("hard", 7)]
        cfg = SimpleNamespace(hg_stages=("easy", "normal", "hard"), hg_stage_steps=(3, 2, 1), steps=7)
        assert stage_plan(cfg) == [("easy", 3), ("normal", 2), ("hard", 1)]

    def test_config_rules(self):
        from vitruvian.trainers.config import TrainConfig

        with pytest.raises(ConfigError, match="hg_stage_steps"):
            TrainConfig(objective="hg-dpo", base="/m", data="/d", out="/o", hg_stage_steps=(1, 2))
        with pytest.raises(ConfigError, match="hg_stages"):
            TrainConfig(objective="hg-dpo", base="/m", data="/d", out="/o", hg_stages=("medium",))

    @pytest.mark.slow
    def test_transition_merges_and_switches_reference(self, tmp_path):
        """After prepare_base, the new stage's adapter-off reference IS the previous stage's policy."""
        path, stage1 = saved_lora(tmp_path, "s1.safetensors", seed=1)
        stage1_policy = unet_out(stage1)
        with adapters_disabled(stage1):
            base_out = unet_out(stage1)
        base = SimpleNamespace(unet=tiny_unet(0))
        HGDPO(prior_loras=(str(path),)).prepare_base(base)
        stage2 = add_lora(base.unet, rank=4, alpha=4.0, targets=TARGETS)
        with adapters_disabled(stage2):
            ref2 = unet_out(stage2)
        assert torch.allclose(ref2, stage1_policy, atol=1e-5)
        assert not torch.allclose(ref2, base_out, atol=1e-3)

    @pytest.mark.slow
    def test_combined_lora_equals_sum_of_stages(self, tmp_path):
        from vitruvian.trainers.objectives.hg_dpo import merge_lora_files

        p1, _ = saved_lora(tmp_path, "s1.safetensors", seed=1)
        p2, _ = saved_lora(tmp_path, "s2.safetensors", seed=2)
        seq = tiny_unet(0)
        merge_lora_files(seq, [p1, p2])
        combined = combine_lora_files([p1, p2], tmp_path / "all.safetensors")
        one = tiny_unet(0)
        merge_lora_files(one, [combined])
        assert torch.allclose(unet_out(seq), unet_out(one), atol=1e-5)
        from vitruvian.core.lora_io import read_lora_metadata

        assert read_lora_metadata(combined)["ss_network_dim"] == "8"


class TestStatLoss:
    def test_value(self):
        x = torch.zeros(1, 4, 8, 8)
        ref = torch.zeros(1, 4, 8, 8)
        ref[:, 0] += 2.0  # channel 0 mean off by 2
        assert channel_stat_loss(x, ref).item() == pytest.approx(2.0 / 4)

    def test_predicted_x0_inverts_noise(self):
        sched = tiny_scheduler()
        x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
        t = torch.tensor([5, 900])
        assert torch.allclose(DDPMProcess(sched).predicted_x0(sched.add_noise(x0, eps, t), eps, t), x0, atol=1e-3)

    @pytest.mark.slow
    def test_reduces_colour_drift(self):
        """A LoRA whose x̂0 drifts in channel statistics: training with L_stat pulls them back, without it not as much."""

        def run(weight):
            torch.manual_seed(0)
            unet = lora_unet(random_b=True)  # the drifted model
            params = [p for p in unet.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=2e-2)
            obj = HGDPO(beta=1.0, stat_weight=weight)
            batch = make_batch(1)
            ctx = ObjectiveContext(unet=unet, scheduler=tiny_scheduler(), generator=torch.Generator().manual_seed(0))

            def drift():
                sched, x0 = tiny_scheduler(), batch["latents"][:, 0]
                t = torch.full((1,), 100)
                x_t = sched.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(9)), t)
                with torch.no_grad():
                    pred = unet(x_t, t, **batch["cond"], return_dict=False)[0]
                return channel_stat_loss(DDPMProcess(sched).predicted_x0(x_t, pred, t), x0).mean().item()

            before = drift()
            for _ in range(6):
                out = obj(batch, ctx)
                opt.zero_grad()
                out.loss.backward()
                opt.step()
            return before, drift()

        before, with_stat = run(10.0)
        _, without = run(0.0)
        assert with_stat < 0.7 * before
        assert with_stat < without


class TestScorer:
    def test_resolve(self):
        assert resolve_scorer("sharpness") is sharpness_score
        assert resolve_scorer("vitruvian.trainers.recipes.hg_dpo.pools:sharpness_score") is sharpness_score
        with pytest.raises(ConfigError, match="module:function"):
            resolve_scorer("pickscore")
        with pytest.raises(ConfigError, match="importable"):
            resolve_scorer("vitruvian.nope:f")

    def test_sharpness_orders_blur(self):
        sharp = (torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        blurred = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2)
        s = sharpness_score(torch.cat([sharp, blurred]), ["a", "a"])
        assert s[0] > s[1]


@pytest.mark.slow
def test_cli_curriculum_end_to_end(tmp_path):
    """easy → normal → hard on the tiny model: pools cached, each stage merges the previous ones."""
    from vitruvian.core.lora_io import load_lora_state, read_lora_metadata

    data = region_singles(tmp_path / "data", n=2, quality=False)
    out = tmp_path / "out"
    args = ("--set", "hg_pool_size=2", "--set", "hg_sample_steps=2", "--set", "hg_stage_steps=1,1,1")
    assert run_cli("hg-dpo", data, out, *args) == 0
    stages = sorted(p.name for p in (out / "stages").iterdir())
    assert stages == ["0-easy", "1-normal", "2-hard"]
    for i, name in enumerate(stages):
        pairs = [json.loads(x) for x in (out / "stages" / name / "pairs" / "metadata.jsonl").read_text().splitlines()]
        assert len(pairs) == 2
        assert {p["chosen_source"] for p in pairs} == {("generated", "reconstructed", "real")[i]}
        cfg = json.loads((out / "stages" / name / "train" / "config.json").read_text())
        assert len(cfg["hg_prior_loras"]) == i and cfg["objective"] == "hg-dpo-stage"
    assert (out / "stages" / "1-normal" / "pairs" / "pool" / "00000" / "recon.png").is_file()
    final = out / "vitruvian.safetensors"
    assert read_lora_metadata(final)["ss_network_dim"] == str(3 * 8)
    assert len(load_lora_state(final).unet) > 0
    # resume: everything exists, so a second run regenerates and retrains nothing
    mtime = final.stat().st_mtime_ns
    pool_png = out / "stages" / "0-easy" / "pairs" / "pool" / "00000" / "0.png"
    pool_mtime = pool_png.stat().st_mtime_ns
    assert run_cli("hg-dpo", data, out, *args) == 0
    assert pool_png.stat().st_mtime_ns == pool_mtime and final.stat().st_mtime_ns >= mtime
