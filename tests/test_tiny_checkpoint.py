"""The tiny SD1.5 checkpoint generator (runs without ComfyUI; ``tests/nodes/test_host.py`` loads the file in it).

The expected parameter counts are those of ComfyUI 0.3.64's own modules built with the same sizes:
``UNetModel`` (model_channels 320, channel_mult [1], one res block, transformer depth 1, context 768),
``SDClipModel`` without ``text_projection``/``logit_scale`` (ComfyUI treats those two as optional), ``TAESD``.
"""

from __future__ import annotations

import math

import pytest
import torch

from .tiny_checkpoint import build_state_dict, checkpoint_shapes, clip_shapes, taesd_shapes, unet_shapes


def _count(shapes) -> int:
    return sum(math.prod(shape) for _, shape in shapes)


def test_parameter_counts_match_comfyui_modules():
    assert _count(unet_shapes()) == 25_789_444
    assert _count(clip_shapes()) == 123_060_480
    assert _count(taesd_shapes()) == 2_445_065


def test_keys_comfyui_detects():
    """The keys ComfyUI's detection reads: SD1.x proj_in is a 1x1 conv, attn2 reads 768-wide context, TAESD."""
    table = checkpoint_shapes()
    prefix = "model.diffusion_model."
    assert table[prefix + "input_blocks.1.1.proj_in.weight"][0] == (320, 320, 1, 1)
    assert table[prefix + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"][0] == (320, 768)
    assert table[prefix + "input_blocks.0.0.weight"][0] == (320, 4, 3, 3)
    assert not any(key.startswith(prefix + "label_emb") for key in table)
    assert table["first_stage_model.taesd_decoder.1.weight"][0] == (64, 4, 3, 3)
    assert table["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"][1] == torch.float8_e4m3fn


@pytest.mark.slow
def test_deterministic_and_finite():
    first, second = build_state_dict(seed=0), build_state_dict(seed=0)
    assert first.keys() == second.keys() == checkpoint_shapes().keys()
    as_bytes = lambda t: t.flatten().view(torch.uint8)  # noqa: E731  (float8 has no torch.equal)
    assert all(torch.equal(as_bytes(first[k]), as_bytes(second[k])) for k in first)
    assert all(torch.isfinite(t).all() for t in first.values() if t.dtype == torch.float16)
    assert first["first_stage_model.vae_scale"].item() == 1.0
