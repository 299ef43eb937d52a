"""The tiny Flux.1 fixtures (``tests/tiny_flux.py``): key layouts, bit-exact round trips through diffusers'
own converters, files that load back into diffusers/transformers models, and (with the ComfyUI host) what
ComfyUI's detection and its own Flux/VAE modules make of the files."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..comfy_host import REPO_ROOT, HostUnavailable, find_host
from ..tiny_flux import (
    AXES_DIMS_ROPE,
    FLUX_SCHEDULER,
    INNER_DIM,
    T5_VOCAB,
    bfl_to_diffusers,
    diffusers_flux_converter,
    flux_to_bfl,
    latent_image_ids,
    pack_latents,
    tiny_ae_state,
    tiny_clip_l,
    tiny_flux_diffusers_folder,
    tiny_flux_files,
    tiny_flux_inputs,
    tiny_flux_transformer,
    tiny_flux_vae,
    tiny_t5,
    unpack_latents,
    write_flux_files,
)

#: Key names copied from the real FLUX.1-dev ``flux1-dev.safetensors`` (BFL release, 780 tensors).
REAL_FLUX_KEYS = [
    "img_in.weight", "txt_in.bias", "time_in.in_layer.weight", "time_in.out_layer.bias",
    "vector_in.in_layer.weight", "double_blocks.0.img_attn.qkv.weight", "double_blocks.0.img_attn.proj.bias",
    "double_blocks.0.img_attn.norm.query_norm.scale", "double_blocks.0.txt_attn.norm.key_norm.scale",
    "double_blocks.0.img_mlp.0.weight", "double_blocks.0.txt_mlp.2.bias", "double_blocks.0.img_mod.lin.weight",
    "double_blocks.0.txt_mod.lin.bias", "single_blocks.0.linear1.weight", "single_blocks.0.linear2.bias",
    "single_blocks.0.norm.query_norm.scale", "single_blocks.0.modulation.lin.weight",
    "final_layer.linear.weight", "final_layer.adaLN_modulation.1.bias",
]
GUIDANCE_KEYS = ["guidance_in.in_layer.weight", "guidance_in.in_layer.bias",
                 "guidance_in.out_layer.weight", "guidance_in.out_layer.bias"]


def _equal_dicts(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _as_model_names(model, clip_sd: dict) -> dict:
    """``text_model.*`` file names → the model's own (transformers >= 5.6 flattened ``CLIPTextModel``)."""
    if any(k.startswith("text_model.") for k in model.state_dict()):
        return dict(clip_sd)
    return {k.removeprefix("text_model."): v for k, v in clip_sd.items()}


def _file_keys(path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


@pytest.fixture(scope="module")
def dev_files():
    return tiny_flux_files(0, guidance=True)


@pytest.fixture(scope="module")
def schnell_prefixed(tmp_path_factory):
    return write_flux_files(tmp_path_factory.mktemp("flux_schnell"), guidance=False, prefix="model.diffusion_model.")


# ------------------------------------------------------------------------------------------ the transformer


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_bfl_names_are_the_exact_inverse_of_diffusers_converter(guidance):
    model = tiny_flux_transformer(3, guidance=guidance)
    sd = model.state_dict()
    bfl = flux_to_bfl(sd, model.config)
    _equal_dicts(bfl_to_diffusers(bfl), sd)  # diffusers → BFL → diffusers, bit for bit
    _equal_dicts(flux_to_bfl(bfl_to_diffusers(bfl), model.config), bfl)  # and the other way
    prefixed = {f"model.diffusion_model.{k}": v for k, v in bfl.items()}
    _equal_dicts(bfl_to_diffusers(prefixed), sd)
    # final_layer.adaLN_modulation is (shift, scale); diffusers' norm_out.linear is (scale, shift)
    scale, shift = sd["norm_out.linear.weight"].chunk(2)
    assert torch.equal(bfl["final_layer.adaLN_modulation.1.weight"], torch.cat([shift, scale]))
    q, k, v, mlp = bfl["single_blocks.0.linear1.weight"].split([INNER_DIM] * 3 + [4 * INNER_DIM])
    assert torch.equal(k, sd["single_transformer_blocks.0.attn.to_k.weight"])
    assert torch.equal(mlp, sd["single_transformer_blocks.0.proj_mlp.weight"])


def test_converter_helper_changes_only_the_width():
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers as original

    assert diffusers_flux_converter(3072) is original
    bfl = flux_to_bfl(tiny_flux_transformer(0).state_dict(), tiny_flux_transformer(0).config)
    with pytest.raises(RuntimeError):  # why the helper exists: the split sizes assume width 3072
        original(dict(bfl))


def test_transformer_is_seeded_and_not_degenerate():
    a, b, c = tiny_flux_transformer(0), tiny_flux_transformer(0), tiny_flux_transformer(1)
    _equal_dicts(a.state_dict(), b.state_dict())
    assert not torch.equal(a.proj_out.weight, c.proj_out.weight)
    for name, param in a.named_parameters():  # no constant (zero- or one-initialised) tensor is left
        assert param.numel() == 1 or not bool((param == param.reshape(-1)[0]).all()), name
    assert a.config.axes_dims_rope == AXES_DIMS_ROPE and sum(AXES_DIMS_ROPE) == a.config.attention_head_dim
    x0, x1 = tiny_flux_inputs(0), tiny_flux_inputs(1)
    with torch.no_grad():
        y0, y1 = a(**x0).sample, a(**x1).sample
    assert y0.shape == (1, 16, 64) and torch.isfinite(y0).all() and y0.std() > 0.1
    assert (y0 - y1).abs().max() > 0.1


def test_diffusion_model_file_looks_like_flux1(dev_files, schnell_prefixed):
    dev = _file_keys(dev_files["diffusion_model"])
    assert set(REAL_FLUX_KEYS + GUIDANCE_KEYS) <= set(dev)
    # 20 global tensors + 24 per double block + 8 per single block: 20 + 24*19 + 8*38 = 780 for FLUX.1-dev
    assert len(dev) == 20 + 24 + 8
    schnell = _file_keys(schnell_prefixed["diffusion_model"])
    assert all(k.startswith("model.diffusion_model.") for k in schnell)
    schnell = [k.removeprefix("model.diffusion_model.") for k in schnell]
    assert set(REAL_FLUX_KEYS) <= set(schnell) and not set(GUIDANCE_KEYS) & set(schnell)
    assert len(schnell) == 20 + 24 + 8 - 4
    sd = load_file(str(dev_files["diffusion_model"]))
    assert {v.dtype for v in sd.values()} == {torch.bfloat16}
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["img_in.weight"] == (INNER_DIM, 64)  # real: (3072, 64)
    assert shapes["txt_in.weight"] == (INNER_DIM, 32)  # real: (3072, 4096)
    assert shapes["single_blocks.0.linear1.weight"] == (7 * INNER_DIM, INNER_DIM)  # real: (21504, 3072)
    assert shapes["double_blocks.0.img_attn.norm.query_norm.scale"] == (INNER_DIM // 2,)  # one head's width
    assert shapes["final_layer.adaLN_modulation.1.weight"] == (2 * INNER_DIM, INNER_DIM)


def test_bfl_file_loads_back_with_the_same_forward(dev_files):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    original = tiny_flux_transformer(0)
    with torch.no_grad():  # the file holds the weights rounded to bf16
        for param in original.parameters():
            param.copy_(param.bfloat16().float())
    loaded = FluxTransformer2DModel(**{k: v for k, v in original.config.items() if not k.startswith("_")}).eval()
    loaded.load_state_dict(bfl_to_diffusers(load_file(str(dev_files["diffusion_model"]))), strict=True)
    latents = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(5))
    tokens = pack_latents(latents)
    assert torch.equal(tokens, FluxPipeline._pack_latents(latents, 2, 16, 8, 8))
    assert torch.equal(unpack_latents(tokens, 8, 8), latents)
    assert torch.equal(FluxPipeline._unpack_latents(tokens, 64, 64, 8), latents)  # 64 px, VAE factor 8
    assert torch.equal(latent_image_ids(8, 8), FluxPipeline._prepare_latent_image_ids(2, 4, 4, "cpu", torch.float32))
    inputs = dict(tiny_flux_inputs(0, batch=2), hidden_states=tokens)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).sample, original(**inputs).sample)


# ------------------------------------------------------------------------------------------ VAE and text encoders


def test_ae_file_is_the_ldm_layout_diffusers_converts_back(dev_files):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = tiny_flux_vae(0)
    ae = load_file(str(dev_files["vae"]))
    _equal_dicts(ae, tiny_ae_state(0))
    _equal_dicts(convert_ldm_vae_checkpoint(dict(ae), vae.config), vae.state_dict())
    assert ae["encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert ae["encoder.conv_out.weight"].shape[0] == 32 and ae["decoder.conv_in.weight"].shape[1] == 16
    assert {"encoder.down.0.block.0.conv1.weight", "decoder.up.3.upsample.conv.weight", "encoder.norm_out.bias",
            "decoder.mid.block_2.norm2.weight", "decoder.mid.attn_1.proj_out.weight"} <= ae.keys()
    assert not any("quant_conv" in k for k in ae)  # Flux's ae has none
    with torch.no_grad():
        z = vae.encode(torch.rand(1, 3, 64, 64) * 2 - 1).latent_dist.mean
    assert z.shape == (1, 16, 8, 8)
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (0.3611, 0.1159)


def test_text_encoder_files_load_into_transformers_models(dev_files):
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    clip_ref, t5_ref = tiny_clip_l(0), tiny_t5(0)
    clip_sd, t5_sd = load_file(str(dev_files["clip_l"])), load_file(str(dev_files["t5xxl"]))
    assert all(k.startswith("text_model.") for k in clip_sd) and {v.dtype for v in clip_sd.values()} == {torch.float16}
    clip = CLIPTextModel(clip_ref.config)
    clip.load_state_dict(_as_model_names(clip, clip_sd), strict=True)
    assert all(torch.equal(v, clip_ref.state_dict()[k].half()) for k, v in _as_model_names(clip, clip_sd).items())

    block = "encoder.block.1.layer.1."
    assert {"shared.weight", "encoder.final_layer_norm.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", f"{block}layer_norm.weight",
            f"{block}DenseReluDense.wi_0.weight", f"{block}DenseReluDense.wi_1.weight",
            f"{block}DenseReluDense.wo.weight"} <= t5_sd.keys()
    assert len(t5_sd) == 2 + 2 * 9 + 1  # t5xxl: 2 + 24 * 9 + 1 = 219
    t5 = T5EncoderModel(t5_ref.config).eval()
    result = t5.load_state_dict(t5_sd, strict=False)
    # strict but for the tied alias of shared.weight, which transformers itself never saves
    assert result.missing_keys == ["encoder.embed_tokens.weight"] and result.unexpected_keys == []
    assert torch.equal(t5.encoder.embed_tokens.weight, t5.shared.weight)
    assert all(torch.equal(v, t5_ref.state_dict()[k].half()) for k, v in t5_sd.items())
    tokenizer = AutoTokenizer.from_pretrained(str(REPO_ROOT / "trainers" / "assets" / "t5_tokenizer"))  # the real one
    ids = tokenizer(["a photo of a person"], return_tensors="pt")
    assert int(ids.input_ids.max()) < T5_VOCAB
    with torch.no_grad():
        assert t5(input_ids=ids.input_ids).last_hidden_state.shape == (1, ids.input_ids.shape[1], 32)


def test_diffusers_folder_holds_the_same_weights(dev_files):
    from diffusers import FluxPipeline

    folder = tiny_flux_diffusers_folder(0)
    pipe = FluxPipeline.from_pretrained(str(folder), tokenizer=None, tokenizer_2=None)
    assert json.loads((folder / "model_index.json").read_text())["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    assert {k: pipe.scheduler.config[k] for k in FLUX_SCHEDULER} == FLUX_SCHEDULER
    bfl = flux_to_bfl(pipe.transformer.state_dict(), pipe.transformer.config)
    _equal_dicts(load_file(str(dev_files["diffusion_model"])), {k: v.bfloat16() for k, v in bfl.items()})
    clip = _as_model_names(pipe.text_encoder, load_file(str(dev_files["clip_l"])))
    assert all(torch.equal(v, pipe.text_encoder.state_dict()[k].half()) for k, v in clip.items())
    t5 = load_file(str(dev_files["t5xxl"]))
    assert all(torch.equal(v, pipe.text_encoder_2.state_dict()[k].half()) for k, v in t5.items())
    _equal_dicts(load_file(str(dev_files["vae"])), tiny_ae_state(0))
    _equal_dicts(pipe.vae.state_dict(), tiny_flux_vae(0).state_dict())


# ------------------------------------------------------------------------------------------ ComfyUI's view

_COMFY_SCRIPT = r"""
import json, sys
comfy_dir, io_path, ae_path, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, comfy_dir)
import comfy.options
comfy.options.enable_args_parsing()
import torch
from safetensors.torch import load_file
import comfy.model_detection as md, comfy.ops, comfy.utils
from comfy.ldm.flux.model import Flux
from comfy.ldm.models.autoencoder import AutoencodingEngine

report, models = {"detected": []}, []
for path in paths:
    sd = load_file(path)  # as comfy.sd.load_diffusion_model_state_dict strips a checkpoint prefix:
    sd = comfy.utils.state_dict_prefix_replace(sd, {md.unet_prefix_from_state_dict(sd): ""}, filter_keys=True) or sd
    config = md.detect_unet_config(sd, "")
    model_config = md.model_config_from_unet(sd, "")
    report["detected"].append({**{k: v for k, v in config.items() if not isinstance(v, torch.dtype)},
                               "model_config": type(model_config).__name__})
    tiny = {**config, "hidden_size": sd["img_in.weight"].shape[0], "num_heads": 2,
            "context_in_dim": sd["txt_in.weight"].shape[1], "axes_dim": [4, 14, 14]}
    del tiny["image_model"]
    model = Flux(operations=comfy.ops.disable_weight_init, **tiny)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    models.append(model)
io = load_file(io_path)
b = io["hidden_states"].shape[0]
with torch.no_grad():
    out = models[0].forward_orig(io["hidden_states"], io["img_ids"].expand(b, -1, -1), io["encoder_hidden_states"],
                                 io["txt_ids"].expand(b, -1, -1), io["timestep"], io["pooled_projections"],
                                 guidance=io["guidance"])
report["flux_max_diff"] = float((out - io["expected"]).abs().max())
ddconfig = {"double_z": True, "z_channels": 16, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
vae = AutoencodingEngine(  # the no-quant-conv branch of comfy.sd.VAE.__init__, at the tiny sizes
    regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
    encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": ddconfig},
    decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": ddconfig})
vae.load_state_dict(load_file(ae_path), strict=True)
with torch.no_grad():
    report["vae_max_diff"] = float((vae.decode(io["latents"]) - io["decoded"]).abs().max())
print("REPORT " + json.dumps(report))
"""


@pytest.mark.comfy
def test_comfyui_detects_flux_and_its_modules_load_the_files(tmp_path, dev_files, schnell_prefixed):
    if os.environ.get("VITRUVIAN_SKIP_COMFY", "") not in ("", "0"):
        pytest.skip("VITRUVIAN_SKIP_COMFY is set")
    try:
        comfy_dir, python = find_host()
    except HostUnavailable as exc:
        pytest.skip(str(exc))
    model, vae = tiny_flux_transformer(0), tiny_flux_vae(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.bfloat16().float())
        inputs = tiny_flux_inputs(0, batch=2)
        latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(7))
        io = {**inputs, "expected": model(**inputs).sample, "latents": latents,
              "decoded": vae.decode(latents).sample}
    save_file({k: v.contiguous() for k, v in io.items()}, str(tmp_path / "io.safetensors"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(
        [str(python), "-c", _COMFY_SCRIPT, str(comfy_dir), str(tmp_path / "io.safetensors"),
         str(dev_files["vae"]), str(dev_files["diffusion_model"]), str(schnell_prefixed["diffusion_model"])],
        cwd=str(comfy_dir), env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))[7:])
    dev, schnell = report["detected"]
    for detected in (dev, schnell):
        assert detected["image_model"] == "flux"
        assert (detected["depth"], detected["depth_single_blocks"]) == (1, 1)
        assert (detected["in_channels"], detected["patch_size"], detected["vec_in_dim"]) == (16, 2, 32)
        assert detected["hidden_size"] == 3072  # hard-coded by ComfyUI: it cannot build the tiny model itself
    assert (dev["guidance_embed"], dev["model_config"]) == (True, "Flux")
    assert (schnell["guidance_embed"], schnell["model_config"]) == (False, "FluxSchnell")
    assert report["flux_max_diff"] < 1e-5  # ComfyUI's Flux, given the tiny sizes, computes what diffusers does
    assert report["vae_max_diff"] < 1e-5
