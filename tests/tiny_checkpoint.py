"""A tiny SD1.5-layout single-file checkpoint that ComfyUI loads as ``SD15``.

ComfyUI sizes the UNet from its weights and recognises SD1.5 by model_channels 320, context_dim 768, a
1x1-conv ``proj_in``, no ``label_emb`` and 4 input channels (``comfy/model_detection.py``,
``comfy/supported_models.py``); the depth is free. So the UNet here has one level (channel_mult [1]), one
res block, transformer depth 1 and the middle block: 25.8M parameters instead of 860M. The CLIP-L text
encoder has a fixed config in ComfyUI, so all 123M parameters are present (stored as fp8 to keep the file
small; ComfyUI up-casts on load). The VAE is a TAESD (``first_stage_model.taesd_encoder.*``,
``taesd_decoder.*``, ``vae_scale``, ``vae_shift``), which ``comfy/sd.py`` ``VAE.__init__`` accepts with the
same 8x / 4-channel latent as the SD VAE, and decodes ten times faster on a CPU.

Only torch and safetensors are needed (no ComfyUI): the key/shape tables below were checked against
ComfyUI's own ``UNetModel``, ``SDClipModel`` and ``TAESD`` state dicts (ComfyUI 0.3.64).

The weights are seeded random numbers: the file is deterministic for a given seed and torch version,
written atomically, and cached outside git at ``~/.cache/vitruvian/test-assets/`` (``VITRUVIAN_TEST_CACHE``
overrides the folder). Building takes a few seconds.

    >>> from tests.tiny_checkpoint import tiny_sd15_checkpoint   # doctest: +SKIP
    >>> path = tiny_sd15_checkpoint()                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "CHECKPOINT_NAME",
    "cache_dir",
    "checkpoint_shapes",
    "build_state_dict",
    "write_checkpoint",
    "tiny_sd15_checkpoint",
    "txt2img_prompt",
]

#: File name of the cached checkpoint; bump the version when the layout or the init changes.
CHECKPOINT_NAME = "tiny_sd15_taesd-v1.safetensors"
CACHE_ENV = "VITRUVIAN_TEST_CACHE"

# SD1.5 sizes that ComfyUI's detection needs (model_channels, context_dim) and CLIP-L's fixed config.
CH = 320
TIME_DIM = 4 * CH
CONTEXT = 768
CLIP_WIDTH, CLIP_LAYERS, CLIP_MLP, CLIP_VOCAB, CLIP_POSITIONS = 768, 12, 3072, 49408, 77
TAESD_CH = 64
LATENT_CH = 4

Shapes = Iterator[tuple[str, tuple[int, ...]]]


def cache_dir() -> Path:
    """Folder for generated test assets: ``$VITRUVIAN_TEST_CACHE`` or ``~/.cache/vitruvian/test-assets``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vitruvian" / "test-assets"


# ---------------------------------------------------------------------------------------------- UNet


def _norm(prefix: str, c: int) -> Shapes:
    yield f"{prefix}.weight", (c,)
    yield f"{prefix}.bias", (c,)


def _layer(prefix: str, c_out: int, c_in: int, *kernel: int, bias: bool = True) -> Shapes:
    yield f"{prefix}.weight", (c_out, c_in, *kernel)
    if bias:
        yield f"{prefix}.bias", (c_out,)


def _res_block(prefix: str, c_in: int, c_out: int) -> Shapes:
    """LDM ``ResBlock``: in_layers (GroupNorm, SiLU, conv3x3), emb_layers (SiLU, Linear), out_layers."""
    yield from _norm(f"{prefix}.in_layers.0", c_in)
    yield from _layer(f"{prefix}.in_layers.2", c_out, c_in, 3, 3)
    yield from _layer(f"{prefix}.emb_layers.1", c_out, TIME_DIM)
    yield from _norm(f"{prefix}.out_layers.0", c_out)
    yield from _layer(f"{prefix}.out_layers.3", c_out, c_out, 3, 3)
    if c_in != c_out:
        yield from _layer(f"{prefix}.skip_connection", c_out, c_in, 1, 1)


def _spatial_transformer(prefix: str, c: int) -> Shapes:
    """LDM ``SpatialTransformer`` with a 1x1-conv proj_in/proj_out (SD1.x) and one transformer block."""
    yield from _norm(f"{prefix}.norm", c)
    yield from _layer(f"{prefix}.proj_in", c, c, 1, 1)
    block = f"{prefix}.transformer_blocks.0"
    for attn, kv_dim in (("attn1", c), ("attn2", CONTEXT)):
        yield f"{block}.{attn}.to_q.weight", (c, c)
        yield f"{block}.{attn}.to_k.weight", (c, kv_dim)
        yield f"{block}.{attn}.to_v.weight", (c, kv_dim)
        yield from _layer(f"{block}.{attn}.to_out.0", c, c)
    yield from _layer(f"{block}.ff.net.0.proj", 8 * c, c)  # GEGLU: 2 x (4 * c)
    yield from _layer(f"{block}.ff.net.2", c, 4 * c)
    for norm in ("norm1", "norm2", "norm3"):
        yield from _norm(f"{block}.{norm}", c)
    yield from _layer(f"{prefix}.proj_out", c, c, 1, 1)


def unet_shapes(prefix: str = "model.diffusion_model") -> Shapes:
    """Keys and shapes of the one-level SD1.5-layout UNet (25.8M parameters)."""
    yield from _layer(f"{prefix}.time_embed.0", TIME_DIM, CH)
    yield from _layer(f"{prefix}.time_embed.2", TIME_DIM, TIME_DIM)
    yield from _layer(f"{prefix}.input_blocks.0.0", CH, LATENT_CH, 3, 3)
    yield from _res_block(f"{prefix}.input_blocks.1.0", CH, CH)
    yield from _spatial_transformer(f"{prefix}.input_blocks.1.1", CH)
    yield from _res_block(f"{prefix}.middle_block.0", CH, CH)
    yield from _spatial_transformer(f"{prefix}.middle_block.1", CH)
    yield from _res_block(f"{prefix}.middle_block.2", CH, CH)
    for i in range(2):  # num_res_blocks + 1 output blocks, each fed a skip connection
        yield from _res_block(f"{prefix}.output_blocks.{i}.0", 2 * CH, CH)
        yield from _spatial_transformer(f"{prefix}.output_blocks.{i}.1", CH)
    yield from _norm(f"{prefix}.out.0", CH)
    yield from _layer(f"{prefix}.out.2", LATENT_CH, CH, 3, 3)


# ---------------------------------------------------------------------------------------------- CLIP-L


def clip_shapes(prefix: str = "cond_stage_model.transformer.text_model") -> Shapes:
    """Keys and shapes of the full CLIP-L text encoder (123M parameters; ComfyUI's config is fixed)."""
    yield f"{prefix}.embeddings.token_embedding.weight", (CLIP_VOCAB, CLIP_WIDTH)
    yield f"{prefix}.embeddings.position_embedding.weight", (CLIP_POSITIONS, CLIP_WIDTH)
    for i in range(CLIP_LAYERS):
        layer = f"{prefix}.encoder.layers.{i}"
        yield from _norm(f"{layer}.layer_norm1", CLIP_WIDTH)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield f"{layer}.self_attn.{proj}.weight", (CLIP_WIDTH, CLIP_WIDTH)
            yield f"{layer}.self_attn.{proj}.bias", (CLIP_WIDTH,)
        yield from _norm(f"{layer}.layer_norm2", CLIP_WIDTH)
        yield f"{layer}.mlp.fc1.weight", (CLIP_MLP, CLIP_WIDTH)
        yield f"{layer}.mlp.fc1.bias", (CLIP_MLP,)
        yield f"{layer}.mlp.fc2.weight", (CLIP_WIDTH, CLIP_MLP)
        yield f"{layer}.mlp.fc2.bias", (CLIP_WIDTH,)
    yield from _norm(f"{prefix}.final_layer_norm", CLIP_WIDTH)


# ---------------------------------------------------------------------------------------------- TAESD


def _taesd_block(prefix: str) -> Shapes:
    for j in (0, 2, 4):  # conv, ReLU, conv, ReLU, conv; the skip is Identity (64 -> 64)
        yield from _layer(f"{prefix}.conv.{j}", TAESD_CH, TAESD_CH, 3, 3)


def taesd_shapes(prefix: str = "first_stage_model") -> Shapes:
    """Keys and shapes of a TAESD (tiny autoencoder, 2.4M parameters) as ComfyUI's ``comfy/taesd`` names them."""
    yield f"{prefix}.vae_scale", ()
    yield f"{prefix}.vae_shift", ()
    enc = f"{prefix}.taesd_encoder"
    yield from _layer(f"{enc}.0", TAESD_CH, 3, 3, 3)
    yield from _taesd_block(f"{enc}.1")
    index = 2
    for _ in range(3):  # three stride-2 downsamples, each followed by three blocks
        yield from _layer(f"{enc}.{index}", TAESD_CH, TAESD_CH, 3, 3, bias=False)
        for k in range(1, 4):
            yield from _taesd_block(f"{enc}.{index + k}")
        index += 4
    yield from _layer(f"{enc}.{index}", LATENT_CH, TAESD_CH, 3, 3)

    dec = f"{prefix}.taesd_decoder"  # 0 = Clamp, 1 = conv, 2 = ReLU, then 3 x (3 blocks, Upsample, conv)
    yield from _layer(f"{dec}.1", TAESD_CH, LATENT_CH, 3, 3)
    index = 3
    for _ in range(3):
        for k in range(3):
            yield from _taesd_block(f"{dec}.{index + k}")
        yield from _layer(f"{dec}.{index + 4}", TAESD_CH, TAESD_CH, 3, 3, bias=False)  # after the Upsample
        index += 5
    yield from _taesd_block(f"{dec}.{index}")
    yield from _layer(f"{dec}.{index + 1}", 3, TAESD_CH, 3, 3)


# ---------------------------------------------------------------------------------------------- file


def checkpoint_shapes() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Every key of the checkpoint → (shape, storage dtype): UNet and TAESD fp16, CLIP fp8 (e4m3fn)."""
    table: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for key, shape in unet_shapes():
        table[key] = (shape, torch.float16)
    for key, shape in taesd_shapes():
        table[key] = (shape, torch.float16)
    for key, shape in clip_shapes():
        table[key] = (shape, torch.float8_e4m3fn)
    return table


def _init(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Seeded values that keep activations O(1): norms 1/0, biases 0, weights N(0, 1/fan_in)."""
    if key.endswith("vae_scale"):
        return torch.ones(shape)
    if key.endswith("vae_shift") or key.endswith(".bias"):
        return torch.zeros(shape)
    if len(shape) == 1:  # GroupNorm / LayerNorm weight
        return torch.ones(shape)
    if "embedding" in key:
        return torch.randn(shape, generator=generator) * 0.02
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    return torch.randn(shape, generator=generator) * fan_in**-0.5


def build_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, deterministic for ``seed`` (keys drawn in sorted order)."""
    generator = torch.Generator().manual_seed(seed)
    table = checkpoint_shapes()
    state = {}
    for key in sorted(table):
        shape, dtype = table[key]
        state[key] = _init(key, shape, generator).to(dtype)
    return state


def write_checkpoint(path: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write the tiny checkpoint to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = build_state_dict(seed)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", "vitruvian.test_asset": f"{CHECKPOINT_NAME} seed={seed}"})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def tiny_sd15_checkpoint() -> Path:
    """Path of the cached tiny checkpoint (seed 0), built on first use (a few seconds)."""
    path = cache_dir() / CHECKPOINT_NAME
    if not path.is_file():
        write_checkpoint(path, seed=0)
    return path


def txt2img_prompt(ckpt_name: str, *, seed: int = 0, steps: int = 2, size: int = 64, prefix: str = "tiny") -> dict:
    """A ComfyUI API-format txt2img prompt: CheckpointLoaderSimple → CLIPTextEncode ×2 → KSampler → VAEDecode → SaveImage.

    ``ckpt_name`` is the file name as the host's ``checkpoints`` folder lists it; node "7" is the SaveImage.
    """
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a person standing", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


if __name__ == "__main__":  # python tests/tiny_checkpoint.py → build (or find) the cached file
    print(tiny_sd15_checkpoint())
