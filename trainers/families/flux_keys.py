"""Flux.1 weights from the BFL layout (the release files, ComfyUI's ``models/diffusion_models``) to diffusers'.

``bfl_to_diffusers(state)`` renames and splits the fused tensors (``qkv`` of both streams; a single block's
``linear1`` = q, k, v and the MLP input) and swaps the final adaLN's (shift, scale) halves into diffusers'
(scale, shift). ``flux_config(shapes)`` sizes a ``FluxTransformer2DModel`` from the tensor shapes.

Written here rather than calling diffusers' ``convert_flux_transformer_checkpoint_to_diffusers`` because that
one hard-codes Flux's width (``inner_dim = 3072``) when it splits ``linear1``, so it cannot read a narrower
model (our test models, distilled variants); ``tests/trainers/test_flow_process.py`` checks both give the same
tensors at width 3072.

Shapes: ``img_in.weight`` (D, 64) → D = hidden size; ``…img_attn.norm.query_norm.scale`` (head_dim,);
``txt_in.weight`` (D, T5 width); ``vector_in.in_layer.weight`` (D, CLIP pooled width).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ...core.errors import ConfigError

__all__ = ["BFL_MARKER", "strip_prefix", "bfl_to_diffusers", "flux_config"]

#: a key every Flux.1 / Chroma diffusion model has (ComfyUI's ``model_detection`` tests the same one)
BFL_MARKER = "double_blocks.0.img_attn.norm.key_norm.scale"
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")

_TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2", "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
}
_SINGLE = {"modulation.lin": "norm.linear", "norm.query_norm.scale": "attn.norm_q.weight",
           "norm.key_norm.scale": "attn.norm_k.weight", "linear2": "proj_out"}
_QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
        "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors without a checkpoint prefix (``model.diffusion_model.`` in full checkpoints)."""
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + BFL_MARKER) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def _rename(name: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if name == old:
            return new
        for end in (".weight", ".bias"):
            if name == old + end:
                return new + end
    return None


def bfl_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BFL-layout tensors (prefix already stripped) → ``FluxTransformer2DModel`` state dict; ConfigError for a key
    it does not know (a file of another model family or a newer variant)."""
    hidden = state["img_in.weight"].shape[0]
    out, unknown = {}, []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in ("double_blocks", "single_blocks"):
            index, _, name = rest.partition(".")
            block = f"{'transformer_blocks' if head == 'double_blocks' else 'single_transformer_blocks'}.{index}."
            if head == "double_blocks" and name.rsplit(".", 1)[0] in _QKV:
                for part, new in zip(value.chunk(3, dim=0), _QKV[name.rsplit(".", 1)[0]]):
                    out[block + new + "." + name.rsplit(".", 1)[1]] = part
                continue
            if head == "single_blocks" and name.startswith("linear1."):
                end = name.rsplit(".", 1)[1]
                q, k, v, mlp = value.split([hidden, hidden, hidden, value.shape[0] - 3 * hidden], dim=0)
                for part, new in zip((q, k, v, mlp), ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")):
                    out[f"{block}{new}.{end}"] = part
                continue
            new = _rename(name, _DOUBLE if head == "double_blocks" else _SINGLE)
            if new is None:
                unknown.append(key)
            else:
                out[block + new] = value
        elif key.startswith("final_layer.adaLN_modulation.1."):
            shift, scale = value.chunk(2, dim=0)
            out["norm_out.linear." + key.rsplit(".", 1)[1]] = torch.cat([scale, shift], dim=0)
        else:
            new = _rename(key, _TOP)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
    if unknown:
        raise ConfigError(f"load_base: a Flux.1 diffusion model must have only Flux.1 tensors, got {len(unknown)} "
                          f"others (e.g. {unknown[:3]}); is it another model family or a newer variant?")
    return out


def _count(shapes: Mapping[str, tuple], head: str) -> int:
    return len({k.split(".")[1] for k in shapes if k.startswith(head + ".")})


def flux_config(shapes: Mapping[str, tuple]) -> dict:
    """``FluxTransformer2DModel`` config from BFL tensor shapes (prefix stripped).

    The head size is the q-norm's length; RoPE's axes split it as Flux does (16, 56, 56 of 128: 1/8, 7/16, 7/16).
    """
    hidden, packed = shapes["img_in.weight"]
    head = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    axes = (head // 8, 7 * head // 16, 7 * head // 16)
    if hidden % head or sum(axes) != head or any(a % 2 for a in axes):
        raise ConfigError(f"load_base: a Flux.1 model must have a head size that divides its width {hidden} and "
                          f"splits into even RoPE axes (1/8, 7/16, 7/16), got head size {head}")
    return {
        "patch_size": 1, "in_channels": packed, "out_channels": shapes["final_layer.linear.weight"][0],
        "num_layers": _count(shapes, "double_blocks"), "num_single_layers": _count(shapes, "single_blocks"),
        "attention_head_dim": head, "num_attention_heads": hidden // head,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes, "axes_dims_rope": list(axes),
    }
