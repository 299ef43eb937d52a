"""Inputs of the trainer benchmark: model folders with random weights and a Pick-a-Pic parquet set.

Both trainers (ours and diffusers' ``train_diffusion_dpo.py``) read the same two things:

- a **diffusers pipeline folder** (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``), seeded random weights, written by :func:`make_model_folder`;
- a **parquet folder** with the Pick-a-Pic columns ``jpg_0``, ``jpg_1`` (JPEG bytes), ``label_0``
  and ``caption``, written by :func:`make_pair_parquet`. Ours reads it as a Pick-a-Pic stream, the
  baseline through ``datasets.load_dataset(folder, split="train")``.

Model presets (``MODELS``):

- ``tiny``: ``tests/tiny.py``'s SD1.5-layout model (UNet 32/64 channels), 64 px, latents 8 x 8.
- ``mid``: SD1.5's own configs (``trainers/model_configs/sd15``) with the UNet cut to half width,
  ``block_out_channels=(160, 320, 640, 640)``, ``layers_per_block=1`` (148 M parameters instead of
  860 M): the same four levels, block types, 8 attention heads and 768-wide cross attention, at
  128 px (latents 16 x 16), so a DPO step takes seconds, not minutes, on 2 cores. The VAE and text
  encoder are shrunk with it so that their cost *relative to one UNet forward* stays close to
  SD1.5 at 512 px (``torch.utils.flop_counter``: SD1.5 VAE encode 1117 GFLOP = 1.39 UNet forwards
  of 803 GFLOP; CLIP-L 13 GFLOP = 0.017). Here: VAE (64, 128, 256, 256) x 1 layer, 9.2 GFLOP =
  1.13 UNet forwards of 8.1 GFLOP (a little *under* SD1.5, so the saving from cached latents is not
  overstated); CLIP-L's layer shape (768 wide, 12 heads) with 1 layer, 1.1 GFLOP = 0.14 forwards.
  The tokenizer is the tiny one (no CLIP vocabulary is downloaded).
- ``sd15``: the full SD1.5 shapes (CLIP-L with the tiny vocabulary) at 512 px, for ``--device cuda``
  only (too slow for a CPU). Untested here: this machine has no GPU.
"""
from __future__ import annotations

import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ModelPreset", "MODELS", "make_model_folder", "make_pair_parquet", "SD15_CONFIGS"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SD15_CONFIGS = REPO_ROOT / "trainers" / "model_configs" / "sd15"


@dataclass(frozen=True)
class ModelPreset:
    """One model size of the benchmark.

    Attributes:
        name: preset key. resolution: training resolution R (pixels). batch: pairs per step.
        unet, vae, text: changes to SD1.5's UNet / VAE / text-encoder configs (unet None: the tiny
            test model instead).
        steps: (short, long) optimizer-step counts; s/step = (T_long - T_short) / (long - short).
        note: one line for the docs table.
    """

    name: str
    resolution: int
    batch: int
    unet: dict | None
    vae: dict
    text: dict
    steps: tuple[int, int]
    note: str


MODELS = {
    "tiny": ModelPreset("tiny", 64, 2, None, {}, {}, (5, 105),
                        "`tests/tiny.py`: UNet (32, 64) ch, 1 layer/block; VAE 4 x 32 ch; CLIP 2 x 32; 64 px"),
    "small": ModelPreset("small", 128, 2, {"block_out_channels": [64, 128, 256, 256], "layers_per_block": 1},
                         {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 1},
                         {"num_hidden_layers": 1}, (3, 23),
                         "SD1.5 UNet at a fifth of its width (64, 128, 256, 256), 1 layer/block; VAE (32, 64, 128, "
                         "128) x 1; CLIP-L layer x 1; 128 px"),
    "mid": ModelPreset("mid", 128, 2, {"block_out_channels": [160, 320, 640, 640], "layers_per_block": 1},
                       {"block_out_channels": [64, 128, 256, 256], "layers_per_block": 1},
                       {"num_hidden_layers": 1}, (3, 13),
                       "SD1.5 UNet at half width (160, 320, 640, 640), 1 layer/block, 148 M; VAE (64, 128, "
                       "256, 256) x 1; CLIP-L layer x 1; 128 px"),
    "sd15": ModelPreset("sd15", 512, 1, {}, {}, {}, (3, 13),
                        "full SD1.5 shapes (UNet 860 M, VAE, CLIP-L), 512 px [GPU only, untested]"),
}


def make_model_folder(preset: ModelPreset, directory: str | Path, *, seed: int = 0) -> Path:
    """Write the diffusers folder of ``preset`` into ``directory`` (created) and return it."""
    directory = Path(directory)
    if preset.unet is None:
        from vitruvian.tests.tiny import make_tiny_diffusers_folder

        return make_tiny_diffusers_folder(directory, "sd15", seed=seed)
    return _make_sd15_shaped(directory, preset, seed)


def _config(part: str, name: str = "config.json") -> dict:
    cfg = json.loads((SD15_CONFIGS / part / name).read_text(encoding="utf-8"))
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _make_sd15_shaped(directory: Path, preset: ModelPreset, seed: int) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from vitruvian.tests.tiny import tiny_tokenizer, tiny_vocab_size

    unet_cfg = {**_config("unet"), **preset.unet, "sample_size": preset.resolution // 8}
    vae_cfg = {**_config("vae"), **preset.vae, "sample_size": preset.resolution}
    text_cfg = {k: v for k, v in _config("text_encoder").items() if k not in ("architectures", "model_type",
                                                                              "torch_dtype")}
    n = tiny_vocab_size()  # the tiny tokenizer's vocabulary: BOS = n - 2, EOS = pad = n - 1
    text_cfg.update(preset.text, vocab_size=n, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1)
    sched = {k: v for k, v in _config("scheduler", "scheduler_config.json").items()
             if k not in ("skip_prk_steps", "set_alpha_to_one")}
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    tok_dir = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    try:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(tok_dir),
                                       unet=unet, scheduler=DDPMScheduler(**sched), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        directory.mkdir(parents=True, exist_ok=True)
        pipe.save_pretrained(str(directory), safe_serialization=True)
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
    return directory


def make_pair_parquet(directory: str | Path, n: int, *, resolution: int, seed: int = 0,
                      row_group_size: int = 8) -> Path:
    """Write ``n`` preference pairs as ``<directory>/train-00000-of-00001.parquet``; returns ``directory``.

    Pair ``i`` is the same whatever ``n`` (a smaller set is a prefix of a larger one). Images are
    JPEGs of ``1.25 R x 1.5 R`` pixels (so both trainers resize and centre-crop, as with real
    Pick-a-Pic images), a colour field with soft blobs; captions are unique per pair; ``label_0``
    alternates 1, 0 (no ties: the baseline does not drop them, ours does).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    w, h = round(1.25 * resolution), round(1.5 * resolution)
    words = ("a photo of a person", "a portrait of a woman", "a man smiling", "a face", "hands of a man")
    cols: dict[str, list] = {"jpg_0": [], "jpg_1": [], "label_0": [], "caption": []}
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        cols["jpg_0"].append(_jpeg(rng, w, h))
        cols["jpg_1"].append(_jpeg(rng, w, h))
        cols["label_0"].append(float(1 - i % 2))
        cols["caption"].append(f"{words[i % len(words)]} {i}")
    table = pa.table({"jpg_0": pa.array(cols["jpg_0"], pa.binary()), "jpg_1": pa.array(cols["jpg_1"], pa.binary()),
                      "label_0": pa.array(cols["label_0"], pa.float64()), "caption": pa.array(cols["caption"])})
    path = directory / "train-00000-of-00001.parquet"
    tmp = directory / ".train.parquet.tmp"
    pq.write_table(table, tmp, row_group_size=row_group_size)
    tmp.replace(path)
    return directory


def _jpeg(rng: np.random.Generator, w: int, h: int) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.ones((h, w, 3)) * rng.uniform(0.1, 0.9, size=3)
    for _ in range(4):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 1.1), rng.uniform(0.05, 0.25)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        img = img + 0.4 * blob * rng.uniform(-1, 1, size=3)
    img = img + rng.normal(0, 0.02, size=img.shape)
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
