"""LoRA files: kohya keys ComfyUI/diffusers load, metadata, atomic writes, reading back for resume."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from vitruvian.core.errors import ConfigError
from vitruvian.core.lora_io import kohya_module_name, load_lora_state, peft_to_kohya, save_lora

from ..tiny import tiny_diffusers_folder

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PROMPTS = ["a photo of a man", "hands"]


def _trained_base(kind: str, *, text: bool = False):
    from vitruvian.trainers.models import add_lora, load_base

    base = load_base(tiny_diffusers_folder(kind))
    add_lora(base.unet, rank=4, alpha=2.0, targets=TARGETS, init=False)  # random A and B: a visible change
    if text:
        for te in base.text_encoders:
            add_lora(te, rank=2, alpha=1.0, targets=TE_TARGETS, init=False)
    return base


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


class TestSaveLora:
    def test_keys_and_metadata(self, tmp_path):
        base = _trained_base("sd15")
        config = {"objective": "dpo", "rank": 4, "targets": list(TARGETS)}
        path = save_lora(tmp_path / "v.safetensors", base.unet, config=config, step=12, base_kind="sd15",
                         metadata={"vitruvian_objective": "dpo", "extra": {"a": 1}})
        tensors, meta = _read(path)
        assert tensors and all(k.startswith("lora_unet_") for k in tensors)
        modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
        assert len(modules) == 32 and len(tensors) == 3 * 32
        for m in modules:
            down, up, alpha = tensors[f"{m}.lora_down.weight"], tensors[f"{m}.lora_up.weight"], tensors[f"{m}.alpha"]
            assert down.shape[0] == up.shape[1] == 4 and alpha.ndim == 0 and alpha.item() == 2.0
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0" in modules
        assert meta["ss_network_dim"] == "4" and float(meta["ss_network_alpha"]) == 2.0
        assert meta["ss_network_module"] == "networks.lora" and meta["ss_base_model_version"] == "sd_v1"
        assert json.loads(meta["vitruvian_config"]) == config
        assert meta["vitruvian_step"] == "12" and meta["vitruvian_version"]
        assert meta["vitruvian_objective"] == "dpo" and json.loads(meta["extra"]) == {"a": 1}

    def test_diffusers_keys_with_alpha_and_folded(self, tmp_path):
        """key_style="diffusers": transformer.* names with .alpha (exact round trip); fold_alpha: B·alpha/r and no
        .alpha (readers that refuse alphas), read back to within float rounding."""
        from peft import get_peft_model_state_dict

        base = _trained_base("sd15")
        own = get_peft_model_state_dict(base.unet)
        plain = save_lora(tmp_path / "d.safetensors", base.unet, key_style="diffusers")
        tensors, meta = _read(plain)
        assert all(k.startswith("transformer.") and k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha"))
                   for k in tensors) and meta["vitruvian_lora_keys"] == "diffusers"
        assert all(torch.equal(load_lora_state(plain).unet[k], v) for k, v in own.items())
        folded = save_lora(tmp_path / "f.safetensors", base.unet, key_style="diffusers", fold_alpha=True)
        tensors, meta = _read(folded)
        assert not [k for k in tensors if k.endswith(".alpha")] and meta["vitruvian_alpha_folded"] == "true"
        name = next(k for k in own if k.endswith(".lora_B.weight"))
        torch.testing.assert_close(tensors["transformer." + name], own[name] * 0.5)  # alpha 2 / rank 4
        back = load_lora_state(folded).unet
        assert all(torch.allclose(back[k], v, rtol=1e-6, atol=0) for k, v in own.items())

    def test_text_encoder_prefixes(self, tmp_path):
        sd15, sdxl = _trained_base("sd15", text=True), _trained_base("sdxl", text=True)
        one = set(_read(save_lora(tmp_path / "a.safetensors", sd15.unet, text_encoder=sd15.text_encoders[0]))[0])
        two = set(_read(save_lora(tmp_path / "b.safetensors", sdxl.unet, text_encoder=sdxl.text_encoders))[0])
        assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in one
        assert {k.split("_")[1] for k in one} == {"unet", "te"}
        assert {k.split("_")[1] for k in two} == {"unet", "te1", "te2"}
        assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj.alpha" in two
        only_second = set(_read(save_lora(tmp_path / "c.safetensors", sdxl.unet, text_encoder=(None, sdxl.text_encoders[1])))[0])
        assert {k.split("_")[1] for k in only_second} == {"unet", "te2"}

    @pytest.mark.parametrize("kind", ["sd15", "sdxl"])
    def test_diffusers_loads_it(self, kind, tmp_path):
        """diffusers' kohya loader reproduces the peft model's text embedding and UNet output exactly."""
        from diffusers import DiffusionPipeline

        from vitruvian.trainers.models import adapters_disabled, encode_prompt

        base = _trained_base(kind, text=True)
        g = torch.Generator().manual_seed(0)
        x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500])
        with torch.no_grad():
            cond = encode_prompt(base, PROMPTS)
            ours = base.unet(x, t, **cond).sample
            with adapters_disabled(base.unet, *base.text_encoders):
                plain = base.unet(x, t, **encode_prompt(base, PROMPTS)).sample
        path = save_lora(tmp_path / "l.safetensors", base.unet, text_encoder=base.text_encoders if kind == "sdxl" else base.text_encoders[0])

        pipe = DiffusionPipeline.from_pretrained(tiny_diffusers_folder(kind), local_files_only=True)
        pipe.load_lora_weights(str(path))
        with torch.no_grad():
            if kind == "sd15":
                ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
                h = pipe.text_encoder(ids).last_hidden_state
                theirs = pipe.unet(x, t, encoder_hidden_states=h).sample
            else:
                h, _, pooled, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
                added = {"text_embeds": pooled, "time_ids": cond["added_cond_kwargs"]["time_ids"]}
                theirs = pipe.unet(x, t, encoder_hidden_states=h, added_cond_kwargs=added).sample
        assert torch.equal(h, cond["encoder_hidden_states"])
        assert (ours - plain).abs().max() > 1e-3
        torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=1e-6)

    def test_atomic_write(self, tmp_path, monkeypatch):
        import safetensors.torch

        base = _trained_base("sd15")
        path = save_lora(tmp_path / "keep.safetensors", base.unet, step=1)
        before = path.read_bytes()
        real_save = safetensors.torch.save_file

        def crash_midway(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as f:  # a half-written file, then the process "dies"
                f.truncate(len(before) // 2)
            raise KeyboardInterrupt("simulated crash while writing")

        monkeypatch.setattr(safetensors.torch, "save_file", crash_midway)
        with pytest.raises(KeyboardInterrupt):
            save_lora(path, base.unet, step=2)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]


def test_save_exceptions(tmp_path):
    from vitruvian.trainers.models import load_base

    plain = load_base(tiny_diffusers_folder("sd15"))
    with pytest.raises(ConfigError, match="must carry the LoRA adapter 'default'.*call add_lora"):
        save_lora(tmp_path / "x.safetensors", plain.unet)
    base = _trained_base("sd15")
    with pytest.raises(ConfigError, match="existing folder"):
        save_lora(tmp_path / "missing" / "x.safetensors", base.unet)
    with pytest.raises(ConfigError, match="DoRA"):
        peft_to_kohya({"a.lora_magnitude_vector": torch.zeros(1)}, "unet", 1.0)


def test_kohya_module_name():
    assert kohya_module_name("mid_block.attentions.0.proj_in", "unet") == "lora_unet_mid_block_attentions_0_proj_in"
    # transformers >= 5.6 CLIPTextModel has no "text_model." level; kohya/ComfyUI names keep it
    assert kohya_module_name("encoder.layers.3.mlp.fc1", "te1") == "lora_te1_text_model_encoder_layers_3_mlp_fc1"
    assert kohya_module_name("text_model.encoder.layers.3.mlp.fc1", "te2") == "lora_te2_text_model_encoder_layers_3_mlp_fc1"


class TestLoadLoraState:
    def test_roundtrip(self, tmp_path):
        from peft import get_peft_model_state_dict

        base = _trained_base("sdxl", text=True)
        path = save_lora(tmp_path / "l.safetensors", base.unet, text_encoder=(base.text_encoders[0], None),
                         config={"rank": 4}, step=5)
        state = load_lora_state(path)
        ref = get_peft_model_state_dict(base.unet)
        assert state.unet.keys() == ref.keys() and all(torch.equal(state.unet[k], ref[k]) for k in ref)
        te_ref = get_peft_model_state_dict(base.text_encoders[0])
        assert len(state.text_encoders) == 2 and state.text_encoders[1] is None
        assert all(torch.equal(state.text_encoders[0][k], te_ref[k]) for k in te_ref)
        assert (state.rank, state.alpha, state.step, state.config) == (4, 2.0, 5, {"rank": 4})

    def test_exception(self, tmp_path):
        from safetensors.torch import save_file

        with pytest.raises(ConfigError, match="existing LoRA"):
            load_lora_state(tmp_path / "none.safetensors")
        save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 2)}, str(tmp_path / "foreign.safetensors"))
        with pytest.raises(ConfigError, match="saved by vitruvian"):
            load_lora_state(tmp_path / "foreign.safetensors")
        meta = {"vitruvian_lora_modules": json.dumps({"unet": ["x"]})}
        save_file({"lora_unet_y.lora_down.weight": torch.zeros(1, 2)}, str(tmp_path / "bad.safetensors"), metadata=meta)
        with pytest.raises(ConfigError, match="must contain 'lora_unet_x.lora_down.weight'"):
            load_lora_state(tmp_path / "bad.safetensors")
