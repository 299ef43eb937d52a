"""FaceScore (Liao et al., arXiv 2406.17100): an ImageReward-style face quality model, in plain torch.

Architecture (as ImageReward builds it, methods.md §4): a BLIP ViT-L/16 image encoder (24 blocks,
width 1024, 224 px), a BLIP BERT-base text encoder whose every layer cross-attends to the image
tokens, fed the fixed text "A face.", its [CLS] output through a linear MLP head
768 → 1024 → 128 → 64 → 16 → 1 (ImageReward's head has no activations; its dropouts are inactive
at inference). Module and parameter names are the official ones (``blip.visual_encoder.*``,
``blip.text_encoder.*``, ``blip.vision_proj`` / ``blip.text_proj`` (unused for the score, present in
the checkpoint), ``mlp.layers.*``), so the user's ``FS_model.pt`` loads with strict key matching.

Text: the BERT vocabulary is not available offline (the FaceScore checkpoint does not ship it), so
the ids of ``[CLS] a face . [SEP]`` in bert-base-uncased are constants here
(:data:`FACE_TEXT_IDS`, written down from the public vocabulary, not recomputed at run time). The
official code pads them to 35 tokens with an attention mask; masked padding does not change the
[CLS] output, so only the 5 real tokens are used.

Score: FaceScore reports the head's raw output (its ``score`` does not apply ImageReward's
normalisation); ``FaceScoreConfig.mean`` / ``std`` default to 0 / 1 and can be set to
ImageReward's ``0.16717362830052426`` / ``1.0333394966054072`` to score with an ImageReward checkpoint.

Shape:
    - pixels: ``(P, 3, S, S)`` CLIP-normalised, S = ``image_size``; scores ``(P,)``
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .weights import match_keys, read_state_dict

__all__ = [
    "FACE_TEXT_IDS", "CLIP_MEAN", "CLIP_STD", "IMAGEREWARD_MEAN", "IMAGEREWARD_STD", "OPTIONAL_KEYS",
    "FaceScoreConfig", "FaceScoreModel", "config_from_state_dict", "load_facescore",
]

#: bert-base-uncased ids of "[CLS] a face . [SEP]" (lower-cased, as BLIP's tokenizer does).
FACE_TEXT_IDS = (101, 1037, 2227, 1012, 102)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072
#: May be absent from a file: a derivable buffer, and BLIP's contrastive projections, which the score never uses.
OPTIONAL_KEYS = (
    "blip.text_encoder.embeddings.position_ids",
    "blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias",
)


@dataclass(frozen=True)
class FaceScoreConfig:
    """Sizes of the model; the defaults are the official FaceScore / ImageReward ones.

    Head counts cannot be read from weights; the defaults give 64-wide heads (ViT-L 16, BERT 12).
    """

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 1024
    vision_depth: int = 24
    vision_heads: int = 16
    vision_mlp: int = 4096
    text_width: int = 768
    text_depth: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    vocab_size: int = 30524  # bert-base-uncased 30522 + BLIP's [DEC] and [ENC]
    max_positions: int = 512
    embed_dim: int = 256
    head_dims: tuple[int, ...] = (1024, 128, 64, 16)
    text_ids: tuple[int, ...] = FACE_TEXT_IDS
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        for name, width, heads in (("vision", self.vision_width, self.vision_heads), ("text", self.text_width, self.text_heads)):
            if heads < 1 or width % heads:
                raise ValueError(f"FaceScoreConfig: {name}_width ({width}) must be a multiple of {name}_heads ({heads})")
        if self.image_size % self.patch_size:
            raise ValueError(f"FaceScoreConfig: image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if max(self.text_ids) >= self.vocab_size or len(self.text_ids) > self.max_positions:
            raise ValueError(f"FaceScoreConfig: text_ids {self.text_ids} must be < vocab_size ({self.vocab_size})")
        if not self.std > 0:
            raise ValueError(f"FaceScoreConfig: std must be > 0, got {self.std}")


# ---------------------------------------------------------------- image encoder (BLIP ViT)
class _VisionAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (P, N, D)
        p, n, d = x.shape
        q, k, v = self.qkv(x).view(p, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(p, n, d))


class _VisionMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _VisionBlock(nn.Module):
    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.vision_width, eps=1e-6)
        self.attn = _VisionAttention(c.vision_width, c.vision_heads)
        self.norm2 = nn.LayerNorm(c.vision_width, eps=1e-6)
        self.mlp = _VisionMlp(c.vision_width, c.vision_mlp)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, c.vision_width, c.patch_size, stride=c.patch_size)

    def forward(self, x):  # (P, 3, S, S) -> (P, N, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """``(P, 3, S, S) -> (P, 1 + (S / patch)², vision_width)`` image tokens, [CLS] first."""

    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.patch_embed = _PatchEmbed(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.vision_width))
        self.pos_embed = nn.Parameter(torch.zeros(1, (c.image_size // c.patch_size) ** 2 + 1, c.vision_width))
        self.blocks = nn.ModuleList(_VisionBlock(c) for _ in range(c.vision_depth))
        self.norm = nn.LayerNorm(c.vision_width, eps=1e-6)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed[:, : x.shape[1] + 1]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ---------------------------------------------------------------- text encoder (BLIP BERT with cross-attention)
class _BertAttentionCore(nn.Module):
    def __init__(self, width: int, heads: int, key_width: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key, self.value = nn.Linear(key_width, width), nn.Linear(key_width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        def split(t):
            return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(context)), split(self.value(context)))
        return out.transpose(1, 2).reshape(x.shape)


class _BertResidual(nn.Module):
    """``dense`` then LayerNorm over the residual sum (BERT's "output" modules)."""

    def __init__(self, in_width: int, width: int):
        super().__init__()
        self.dense = nn.Linear(in_width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _BertAttention(nn.Module):
    def __init__(self, c: FaceScoreConfig, key_width: int):
        super().__init__()
        self.self = _BertAttentionCore(c.text_width, c.text_heads, key_width)
        self.output = _BertResidual(c.text_width, c.text_width)

    def forward(self, x, context):
        return self.output(self.self(x, context), x)


class _BertIntermediate(nn.Module):
    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.dense = nn.Linear(c.text_width, c.text_intermediate)

    def forward(self, x):
        return F.gelu(self.dense(x))


class _BertLayer(nn.Module):
    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.attention = _BertAttention(c, c.text_width)
        self.crossattention = _BertAttention(c, c.vision_width)
        self.intermediate = _BertIntermediate(c)
        self.output = _BertResidual(c.text_intermediate, c.text_width)

    def forward(self, x, image_tokens):
        x = self.attention(x, x)
        x = self.crossattention(x, image_tokens)
        return self.output(self.intermediate(x), x)


class _BertEmbeddings(nn.Module):
    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.text_width, padding_idx=0)
        self.position_embeddings = nn.Embedding(c.max_positions, c.text_width)
        self.LayerNorm = nn.LayerNorm(c.text_width, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(c.max_positions).expand(1, -1), persistent=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(positions))


class _BertEncoder(nn.Module):
    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(c) for _ in range(c.text_depth))


class TextEncoder(nn.Module):
    """``ids (1, T)``, ``image_tokens (P, N, vision_width) -> (P, T, text_width)``."""

    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.embeddings = _BertEmbeddings(c)
        self.encoder = _BertEncoder(c)

    def forward(self, ids: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids).expand(len(image_tokens), -1, -1)
        for layer in self.encoder.layer:
            x = layer(x, image_tokens)
        return x


class _Blip(nn.Module):
    def __init__(self, c: FaceScoreConfig):
        super().__init__()
        self.visual_encoder = VisionTransformer(c)
        self.text_encoder = TextEncoder(c)
        self.vision_proj = nn.Linear(c.vision_width, c.embed_dim)
        self.text_proj = nn.Linear(c.text_width, c.embed_dim)


class _Head(nn.Module):
    """ImageReward's MLP: Linear/Dropout pairs then two Linear layers, no activations."""

    def __init__(self, width: int, dims: Sequence[int]):
        super().__init__()
        layers, previous = [], width
        for i, d in enumerate(dims):
            layers.append(nn.Linear(previous, d))
            if i < len(dims) - 1:
                layers.append(nn.Dropout(0.1 if i == len(dims) - 2 else 0.2))
            previous = d
        layers.append(nn.Linear(previous, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class FaceScoreModel(nn.Module):
    """FaceScore: ``pixels (P, 3, S, S)`` CLIP-normalised → ``(P,)`` scores (higher = better face).

    Example:
        >>> c = FaceScoreConfig(image_size=32, vision_width=16, vision_depth=1, vision_heads=2, vision_mlp=32,
        ...                     text_width=16, text_depth=1, text_heads=2, text_intermediate=32, max_positions=8)
        >>> FaceScoreModel(c).eval()(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(self, config: FaceScoreConfig = FaceScoreConfig()):
        super().__init__()
        self.config = config
        self.blip = _Blip(config)
        self.mlp = _Head(config.text_width, config.head_dims)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        c = self.config
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, c.image_size, c.image_size):
            raise ValueError(f"FaceScoreModel: pixels must be (P, 3, {c.image_size}, {c.image_size}), got {tuple(pixels.shape)}")
        image_tokens = self.blip.visual_encoder(pixels)
        ids = torch.tensor([c.text_ids], dtype=torch.long, device=pixels.device)
        cls = self.blip.text_encoder(ids, image_tokens)[:, 0].float()
        return ((self.mlp(cls) - c.mean) / c.std)[:, 0]


def config_from_state_dict(state_dict, **overrides) -> FaceScoreConfig:
    """The :class:`FaceScoreConfig` whose shapes a state dict has (head counts: width / 64 unless given).

    ``overrides`` set any field (``mean``, ``std``, ``vision_heads``, …)."""
    def shape(key):
        if key not in state_dict:
            raise KeyError(key)
        return tuple(state_dict[key].shape)

    def depth(prefix):
        found = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
        return max(found) + 1 if found else 0

    try:
        vision_width = shape("blip.visual_encoder.cls_token")[-1]
        patch = shape("blip.visual_encoder.patch_embed.proj.weight")[-1]
        tokens = shape("blip.visual_encoder.pos_embed")[1]
        vocab, text_width = shape("blip.text_encoder.embeddings.word_embeddings.weight")
        heads = [k for k in state_dict if k.startswith("mlp.layers.") and k.endswith(".weight")]
        head_dims = tuple(shape(k)[0] for k in sorted(heads, key=lambda k: int(k.split(".")[2])))[:-1]
        values = dict(
            image_size=int(round(math.sqrt(tokens - 1))) * patch, patch_size=patch,
            vision_width=vision_width, vision_depth=depth("blip.visual_encoder.blocks."),
            vision_heads=max(1, vision_width // 64), vision_mlp=shape("blip.visual_encoder.blocks.0.mlp.fc1.weight")[0],
            text_width=text_width, text_depth=depth("blip.text_encoder.encoder.layer."), text_heads=max(1, text_width // 64),
            text_intermediate=shape("blip.text_encoder.encoder.layer.0.intermediate.dense.weight")[0], vocab_size=vocab,
            max_positions=shape("blip.text_encoder.embeddings.position_embeddings.weight")[0],
            embed_dim=shape("blip.vision_proj.weight")[0] if "blip.vision_proj.weight" in state_dict else 256,
            head_dims=head_dims,
        )
    except KeyError as exc:
        from .weights import WeightsError

        raise WeightsError(
            f"config_from_state_dict: weights must be a FaceScore / ImageReward state dict, key {exc.args[0]!r} is "
            "missing (expected names like blip.visual_encoder.*, blip.text_encoder.*, mlp.layers.*)"
        ) from None
    unknown = set(overrides) - {f.name for f in fields(FaceScoreConfig)}
    if unknown:
        raise ValueError(f"config_from_state_dict: unknown config fields {sorted(unknown)}")
    return FaceScoreConfig(**{**values, **overrides})


def load_facescore(path: str | os.PathLike, *, config: FaceScoreConfig | None = None, device="cpu",
                   dtype: torch.dtype = torch.float32, **overrides) -> FaceScoreModel:
    """Load ``FS_model.pt`` (or a ``.safetensors`` conversion) safely and strictly, in eval mode.

    Args:
        path: the weights file; PyTorch files are read with ``weights_only=True``.
        config: the sizes; default read from the weights' shapes (:func:`config_from_state_dict`,
            ``overrides`` passed on).

    Raises:
        ModelNotFoundError, WeightsError: missing file, unsafe file, or keys/shapes that differ
            from the model (the message lists them).
    """
    state = read_state_dict(path, where="load_facescore")
    config = config or config_from_state_dict(state, **overrides)
    with torch.device("meta"):
        model = FaceScoreModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    match_keys(expected, state, optional=OPTIONAL_KEYS, where="load_facescore", what=f"{os.path.basename(path)}")
    state.setdefault(OPTIONAL_KEYS[0], torch.arange(config.max_positions).expand(1, -1).clone())
    for key in OPTIONAL_KEYS[1:]:
        if key not in state:
            state[key] = torch.zeros(expected[key])  # unused by the score
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()
