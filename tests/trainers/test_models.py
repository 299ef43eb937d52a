"""Base-model loading (diffusers folders and single files, offline), prompt encoding, the tiny kit."""
from __future__ import annotations

import json
import socket
import time

import pytest
import torch

from vitruvian.core.errors import ConfigError, ModelNotFoundError

from ..tiny import (
    make_tiny_diffusers_folder,
    tiny_diffusers_folder,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
    tiny_vocab_size,
)
from ..tiny_ldm import clip_to_ldm, open_clip_to_ldm, save_single_file, unet_to_ldm, vae_to_ldm

PROMPTS = ["a photo of a man", "hands"]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _save_tensors(path, tensors: dict, metadata=None):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    return path


# ------------------------------------------------------------------------------------------- tiny kit


class TestTinyKit:
    def test_smoke(self, tmp_path):
        from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (import time is not build time)
        from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

        start = time.perf_counter()
        unet, vae, te = tiny_unet(), tiny_vae(), tiny_text_encoder()
        tok = tiny_tokenizer(tmp_path / "tok")
        ids = tok(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            h = te(ids).last_hidden_state
            latents = vae.encode(torch.rand(2, 3, 64, 64) * 2 - 1).latent_dist.mean
            eps = unet(latents, torch.tensor([1, 999]), encoder_hidden_states=h).sample
        assert time.perf_counter() - start < 10
        assert ids.shape == (2, 77) and ids[0, 0] == tiny_vocab_size() - 2  # BOS, then words
        assert h.shape == (2, 77, 32) and latents.shape == (2, 4, 8, 8) and eps.shape == (2, 4, 8, 8)
        names = [n for n, _ in unet.named_modules()]
        assert all(any(n.endswith(s) for n in names) for s in ("to_q", "to_k", "to_v", "to_out.0"))

    def test_deterministic(self):
        assert _same_weights(tiny_unet(3), tiny_unet(3))
        assert not _same_weights(tiny_unet(3), tiny_unet(4))
        assert _same_weights(tiny_vae(1), tiny_vae(1)) and _same_weights(tiny_text_encoder(1), tiny_text_encoder(1))

    def test_tokenizer_words(self, tmp_path):
        tok = tiny_tokenizer(tmp_path)
        ids = tok("a photo of a person")["input_ids"]
        assert len(ids) == 2 + 5  # BOS + one token per word + EOS
        assert tiny_tokenizer(tmp_path / "x", pad_token="!").pad_token_id == 0

    @pytest.mark.parametrize("kind", ["sd15", "sdxl"])
    def test_folder_is_a_diffusers_pipeline(self, kind):
        from diffusers import DiffusionPipeline

        folder = tiny_diffusers_folder(kind)
        pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
        expected = "StableDiffusionXLPipeline" if kind == "sdxl" else "StableDiffusionPipeline"
        assert type(pipe).__name__ == expected
        assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        image = pipe(PROMPTS[0], num_inference_steps=2, height=64, width=64, output_type="pt").images
        assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()

    def test_folder_deterministic(self, tmp_path):
        a, b = make_tiny_diffusers_folder(tmp_path / "a"), make_tiny_diffusers_folder(tmp_path / "b")
        rel = "unet/diffusion_pytorch_model.safetensors"
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


# ------------------------------------------------------------------------------------ diffusers folder


class TestLoadFolder:
    @pytest.mark.parametrize("kind", ["sd15", "sdxl"])
    def test_smoke(self, kind):
        from vitruvian.trainers.models import load_base

        base = load_base(tiny_diffusers_folder(kind))
        assert base.kind == kind
        assert len(base.text_encoders) == len(base.tokenizers) == (2 if kind == "sdxl" else 1)
        assert type(base.scheduler).__name__ == "DDPMScheduler"
        assert base.scheduler.config.num_train_timesteps == 1000
        assert base.scheduler.config.prediction_type == "epsilon"
        assert base.vae_scale == (0.13025 if kind == "sdxl" else 0.18215) and base.vae_factor == 8
        models = (base.unet, base.vae, *base.text_encoders)
        assert not any(p.requires_grad for m in models for p in m.parameters())
        assert all(not m.training for m in models)

    def test_encode_decode_images(self):
        from vitruvian.trainers.models import decode_latents, encode_images, load_base

        base = load_base(tiny_diffusers_folder("sd15"))
        pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        with torch.no_grad():
            mean = encode_images(base, pixels)
            ref = base.vae.encode(pixels).latent_dist
            draw = lambda: encode_images(base, pixels, sample=True, generator=torch.Generator().manual_seed(1))  # noqa: E731
            a, b = draw(), draw()
            image = decode_latents(base, mean)
        assert torch.equal(mean, ref.mean * 0.18215) and mean.shape == (2, 4, 8, 8)
        assert torch.equal(a, b) and not torch.equal(a, mean)
        assert image.shape == (2, 3, 64, 64)
        with pytest.raises(ValueError, match=r"pixels must be \(B, 3, H, W\).*got \(2, 64, 64, 3\)"):
            encode_images(base, pixels.permute(0, 2, 3, 1))

    def test_dtype(self):
        from vitruvian.trainers.models import load_base

        base = load_base(tiny_diffusers_folder("sd15"), dtype=torch.bfloat16)
        assert {p.dtype for m in (base.unet, base.vae, base.text_encoders[0]) for p in m.parameters()} == {torch.bfloat16}

    def test_exception(self, tmp_path):
        from vitruvian.trainers.models import load_base

        with pytest.raises(ModelNotFoundError, match="nope"):
            load_base(tmp_path / "nope")
        with pytest.raises(ModelNotFoundError, match="model_index.json"):
            load_base(tmp_path)  # a folder, but not a diffusers pipeline
        folder = tmp_path / "vpred"
        make_tiny_diffusers_folder(folder)
        sched = folder / "scheduler" / "scheduler_config.json"
        sched.write_text(json.dumps({**json.loads(sched.read_text()), "prediction_type": "v_prediction"}))
        with pytest.raises(ConfigError, match="v_prediction"):
            load_base(folder)


# ------------------------------------------------------------------------------------------ single file


@pytest.fixture(scope="module")
def single_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    return {kind: save_single_file(tiny_diffusers_folder(kind), root / f"{kind}.safetensors", kind) for kind in ("sd15", "sdxl")}


class TestLoadSingleFile:
    @pytest.mark.parametrize("kind", ["sd15", "sdxl"])
    def test_matches_folder(self, kind, single_files):
        """The LDM file converts back to exactly the tensors of the diffusers folder it came from."""
        from vitruvian.trainers.models import encode_prompt, load_base

        folder = tiny_diffusers_folder(kind)
        ref = load_base(folder)
        base = load_base(single_files[kind], tokenizer=folder)
        assert base.kind == kind
        assert _same_weights(base.unet, ref.unet) and _same_weights(base.vae, ref.vae)
        assert all(_same_weights(a, b) for a, b in zip(base.text_encoders, ref.text_encoders))
        assert base.scheduler.config.beta_schedule == "scaled_linear"
        with torch.no_grad():
            a, b = encode_prompt(base, PROMPTS), encode_prompt(ref, PROMPTS)
        assert torch.equal(a["encoder_hidden_states"], b["encoder_hidden_states"])

    def test_dtype(self, single_files):
        from vitruvian.trainers.models import load_base

        base = load_base(single_files["sd15"], tokenizer=tiny_diffusers_folder("sd15"), dtype=torch.float16)
        models = (base.unet, base.vae, *base.text_encoders)
        assert {p.dtype for m in models for p in m.parameters()} == {torch.float16}

    def test_no_network(self, single_files, monkeypatch):
        """Nothing may reach for a model hub: every socket connection fails inside the call."""
        from vitruvian.trainers.models import load_base

        def refuse(*args, **kwargs):
            raise OSError("test: network access attempted")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)
        base = load_base(single_files["sdxl"], tokenizer=tiny_diffusers_folder("sdxl"))
        assert base.kind == "sdxl"
        assert load_base(tiny_diffusers_folder("sd15")).kind == "sd15"

    @pytest.mark.parametrize(
        ("tensors", "match"),
        [
            ({"encoder.weight": torch.zeros(2, 2)}, "no 'model.diffusion_model"),
            ({"lora_unet_x.lora_down.weight": torch.zeros(1, 2)}, "LoRA file"),
            ({"down_blocks.0.resnets.0.conv1.weight": torch.zeros(1)}, "diffusers UNet weight file"),
        ],
    )
    def test_not_a_checkpoint(self, tmp_path, tensors, match):
        from vitruvian.trainers.models import load_base

        with pytest.raises(ConfigError, match=match):
            load_base(_save_tensors(tmp_path / "x.safetensors", tensors))

    def _variant(self, path, tmp_path, name, edit):
        from safetensors.torch import load_file

        sd = load_file(str(path))
        edit(sd)
        return _save_tensors(tmp_path / name, sd)

    def test_sd2_vpred_refiner_inpaint(self, single_files, tmp_path):
        from vitruvian.trainers.models import load_base

        def sd2(sd):  # SD2.x: OpenCLIP-H under cond_stage_model.model, 1024-wide cross attention
            for k in [k for k in sd if k.startswith("cond_stage_model.")]:
                sd[k.replace("cond_stage_model.transformer.", "cond_stage_model.model.")] = sd.pop(k)
            for k in [k for k in sd if k.endswith("attn2.to_k.weight")]:
                sd[k] = torch.zeros(sd[k].shape[0], 1024)

        def vpred(sd):
            sd["v_pred"] = torch.tensor([])

        def inpaint(sd):
            k = "model.diffusion_model.input_blocks.0.0.weight"
            sd[k] = torch.zeros(sd[k].shape[0], 9, 3, 3)

        def refiner(sd):
            for k in [k for k in sd if k.startswith("conditioner.embedders.")]:
                sd.pop(k)
            sd["conditioner.embedders.0.model.text_projection"] = torch.zeros(2, 2)

        def no_text(sd):
            for k in [k for k in sd if k.startswith("cond_stage_model.")]:
                sd.pop(k)

        cases = [
            (single_files["sd15"], sd2, "SD2"),
            (single_files["sd15"], vpred, "v-prediction"),
            (single_files["sd15"], inpaint, "inpainting UNet with 9"),
            (single_files["sdxl"], refiner, "SDXL refiner"),
            (single_files["sd15"], no_text, "text encoder"),
        ]
        for i, (src, edit, match) in enumerate(cases):
            with pytest.raises(ConfigError, match=match):
                load_base(self._variant(src, tmp_path, f"v{i}.safetensors", edit))

    def test_pickle_refused(self, tmp_path):
        from vitruvian.trainers.models import load_base

        (tmp_path / "model.ckpt").write_bytes(b"\x80\x04not a pickle")
        with pytest.raises(ConfigError, match=r"\.ckpt/\.pt files are not loaded"):
            load_base(tmp_path / "model.ckpt")

    @pytest.mark.slow
    def test_comfy_tiny_checkpoint(self, tiny_checkpoint):
        """The host's tiny ComfyUI checkpoint: shallow SD1.5 UNet (sized from weights), TAESD, fp8 CLIP-L."""
        from vitruvian.trainers.models import decode_latents, encode_images, encode_prompt, load_base

        base = load_base(tiny_checkpoint)
        assert base.kind == "sd15" and type(base.vae).__name__ == "AutoencoderTiny"
        assert base.configs["unet"]["block_out_channels"] == [320]
        assert base.configs["unet"]["cross_attention_dim"] == 768
        assert base.text_encoders[0].config.num_hidden_layers == 12
        with torch.no_grad():
            cond = encode_prompt(base, ["a person"])
            latents = encode_images(base, torch.rand(1, 3, 64, 64) * 2 - 1)
            eps = base.unet(latents, torch.tensor([500]), **cond).sample
            image = decode_latents(base, latents)
        assert cond["encoder_hidden_states"].shape == (1, 77, 768)
        assert latents.shape == eps.shape == (1, 4, 8, 8) and image.shape == (1, 3, 64, 64)
        assert torch.isfinite(eps).all()


# ------------------------------------------------------------------------------------ shipped configs


@pytest.mark.parametrize(("kind", "unet_params"), [("sd15", 859_520_964), ("sdxl", 2_567_463_684)])
def test_shipped_configs_are_full_size(kind, unet_params):
    """Shipped configs build the published models, and config inference from their LDM weights is the identity."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from vitruvian.trainers.model_detect import CONFIG_ROOT, detect_family, write_config_folder

    root = CONFIG_ROOT / kind
    load = lambda p: json.loads((root / p).read_text())  # noqa: E731
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(load("unet/config.json"))
        vae = AutoencoderKL.from_config(load("vae/config.json"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
    assert sum(p.numel() for p in unet.parameters()) == unet_params
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    shapes.update({f"first_stage_model.{k}": tuple(v.shape) for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    if kind == "sd15":
        shapes.update({f"cond_stage_model.transformer.{k}": tuple(v.shape) for k, v in clip_to_ldm(te.state_dict()).items()})
    else:
        with init_empty_weights():
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(root / "text_encoder_2"))
        shapes.update({f"conditioner.embedders.0.transformer.{k}": tuple(v.shape) for k, v in clip_to_ldm(te.state_dict()).items()})
        shapes.update({f"conditioner.embedders.1.model.{k}": tuple(v.shape) for k, v in open_clip_to_ldm(te2.state_dict()).items()})
        assert sum(p.numel() for p in te2.parameters()) == 694_659_840  # OpenCLIP bigG text tower + projection
    assert len([k for k in shapes if k.startswith("model.diffusion_model.")]) == (686 if kind == "sd15" else 1680)
    assert detect_family(shapes) == kind
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = write_config_folder(shapes, kind, tmp)
        for part in ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if kind == "sdxl" else []):
            assert json.loads((out / part / "config.json").read_text()) == load(f"{part}/config.json"), part


def test_shipped_clip_matches_comfyui():
    """CLIP-L's shipped config equals ComfyUI's fixed one (when a ComfyUI checkout is around)."""
    from vitruvian.trainers.model_detect import CONFIG_ROOT

    from ..comfy_host import HostUnavailable, find_host

    try:
        comfy_cfg = find_host()[0] / "comfy" / "sd1_clip_config.json"
    except HostUnavailable as e:
        pytest.skip(str(e))
    if not comfy_cfg.is_file():
        pytest.skip(f"no ComfyUI checkout at {comfy_cfg.parent.parent}")
    theirs = json.loads(comfy_cfg.read_text())
    ours = json.loads((CONFIG_ROOT / "sd15" / "text_encoder" / "config.json").read_text())
    keys = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings", "vocab_size", "hidden_act"]
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}


# ----------------------------------------------------------------------------------------- encode_prompt


class TestEncodePrompt:
    def test_sd15(self):
        from vitruvian.trainers.models import encode_prompt, load_base

        base = load_base(tiny_diffusers_folder("sd15"))
        with torch.no_grad():
            out = encode_prompt(base, PROMPTS)
            ids = base.tokenizers[0](PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
            ref = base.text_encoders[0](ids).last_hidden_state
        assert set(out) == {"encoder_hidden_states"}
        assert torch.equal(out["encoder_hidden_states"], ref)

    def test_sdxl(self):
        from vitruvian.trainers.models import encode_prompt, load_base

        base = load_base(tiny_diffusers_folder("sdxl"))
        crops = torch.tensor([[0.0, 0.0], [16.0, 8.0]])
        with torch.no_grad():
            out = encode_prompt(base, PROMPTS, resolution=96, crops_coords_top_left=crops)
            te1, te2 = base.text_encoders
            ids2 = base.tokenizers[1](PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
            second = te2(ids2, output_hidden_states=True)
            eps = base.unet(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), **out).sample
        h, added = out["encoder_hidden_states"], out["added_cond_kwargs"]
        assert h.shape == (2, 77, 64) and eps.shape == (2, 4, 8, 8)
        assert torch.equal(h[..., 32:], second.hidden_states[-2])  # penultimate layer, not the last
        assert not torch.equal(h[..., 32:], second.last_hidden_state)
        assert torch.equal(added["text_embeds"], second.text_embeds)
        assert (ids2[1, 3:] == 0).all()  # the second tokenizer pads with "!" (id 0)
        assert added["time_ids"].tolist() == [[96, 96, 0, 0, 96, 96], [96, 96, 16, 8, 96, 96]]

    def test_exception(self):
        from vitruvian.trainers.models import encode_prompt, load_base

        base = load_base(tiny_diffusers_folder("sd15"))
        with pytest.raises(TypeError, match=r"wrap a single prompt in a list"):
            encode_prompt(base, "a photo")
        sdxl = load_base(tiny_diffusers_folder("sdxl"))
        with pytest.raises(ValueError, match=r"crops_coords_top_left must be \(2, 2\)"):
            encode_prompt(sdxl, PROMPTS, crops_coords_top_left=torch.zeros(3, 2))
