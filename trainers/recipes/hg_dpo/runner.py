"""The HG-DPO stage runner: ``vitruvian-train hg-dpo`` on a folder of real captioned images.

For each stage of ``hg_stages`` (easy → normal → hard), in ``<out>/stages/<i>-<stage>/``:

1. **pairs** (``pairs/metadata.jsonl``, cached): for every real image and its caption, a pool of
   ``hg_pool_size`` samples from the *current* model (base + the previous stages' merged LoRAs),
   ranked by ``hg_scorer``. Winner / loser:

   - ``easy``: best / worst sample of the pool;
   - ``normal``: the real image partly noised (``hg_strength``) and re-denoised by the current model
     (SDEdit) / worst sample;
   - ``hard``: the real image / worst sample.

2. **train** (``objective = hg-dpo-stage``, one ``trainers.loop.train`` run): Diffusion-DPO + statistics matching for the stage's steps
   with the previous stages' LoRAs merged into the base (``hg_prior_loras``), so the adapter-off
   reference is the previous stage's model. A stage whose LoRA exists is skipped; one with
   checkpoints resumes from its latest.

The result ``<out>/<name>.safetensors`` is the sum of the stage LoRAs written as one LoRA (their ranks
concatenated), which ComfyUI loads like any other.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ....core.errors import ConfigError
from ....core.atomic import atomic_write_text
from ...checkpoint import checkpoint_dirs
from ...loop import TrainResult, train
from .pools import build_pipelines, load_square, resolve_scorer, save_png, to_tensor, write_json

__all__ = ["HGDPOCurriculum", "stage_plan", "build_stage_pairs", "combine_lora_files"]


def stage_plan(config) -> list[tuple[str, int]]:
    """``[(stage, steps), ...]`` from ``hg_stages`` and ``hg_stage_steps`` (empty → ``steps`` each)."""
    steps = config.hg_stage_steps or (config.steps,) * len(config.hg_stages)
    return list(zip(config.hg_stages, steps))


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def build_stage_pairs(config, stage: str, folder: Path, prior_loras: Sequence[str], *,
                      scorer: Callable | None = None) -> Path:
    """Write the stage's pair folder (``folder/metadata.jsonl`` + images) unless it exists; return it."""
    from ...data import validate_dataset
    from ...models import load_base
    from ...objectives.hg_dpo import merge_lora_files

    meta = folder / "metadata.jsonl"
    if meta.is_file():
        return folder
    records = validate_dataset(config.data)
    if not records:
        raise ConfigError(f"hg-dpo: data must be a metadata.jsonl folder of real images with captions, got "
                          f"{config.data!r}; fix: single-image records {{\"prompt\", \"image\"}}")
    scorer = scorer or resolve_scorer(config.hg_scorer)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if config.mixed_precision == "fp16" and device == "cuda" else (
        torch.bfloat16 if config.mixed_precision == "bf16" and device == "cuda" else torch.float32)
    base = load_base(config.base, tokenizer=config.tokenizer, device=device, dtype=dtype,
                     text_encoders=config.text_encoders, vae=config.vae)
    if dtype == torch.float16:
        base.vae.to(torch.float32)
    merge_lora_files(base.unet, prior_loras)
    t2i, i2i = build_pipelines(base, device=device)
    R = config.resolution
    # the transformer families' image-to-image pipelines default to 1024² whatever the input; SD's take the input's
    size = {"height": R, "width": R} if "height" in inspect.signature(i2i.__call__).parameters else {}
    lines = []
    for i, rec in enumerate(records):
        item_dir = folder / "pool" / f"{i:05d}"
        item_dir.mkdir(parents=True, exist_ok=True)
        scores_file = item_dir / "scores.json"
        if scores_file.is_file():
            scores = json.loads(scores_file.read_text())
        else:
            g = torch.Generator(device).manual_seed(_seed(config.seed, stage, i, "pool"))
            images = t2i(prompt=[rec.prompt] * config.hg_pool_size, height=R, width=R, generator=g,
                         num_inference_steps=config.hg_sample_steps, guidance_scale=config.hg_guidance).images
            for k, im in enumerate(images):
                save_png(im, item_dir / f"{k}.png")
            with torch.no_grad():
                s = scorer(to_tensor(images), [rec.prompt] * len(images))
            scores = [float(x) for x in torch.as_tensor(s).reshape(-1)]
            if len(scores) != len(images) or not all(math.isfinite(x) for x in scores):
                raise ConfigError(f"hg-dpo: hg_scorer must return one finite score per image, got {scores!r}")
            write_json(scores_file, scores)
        best, worst = max(range(len(scores)), key=scores.__getitem__), min(range(len(scores)), key=scores.__getitem__)
        loser = f"pool/{i:05d}/{worst}.png"
        if stage == "easy":
            chosen, source = f"pool/{i:05d}/{best}.png", "generated"
        elif stage == "normal":
            recon = item_dir / "recon.png"
            if not recon.is_file():
                g = torch.Generator(device).manual_seed(_seed(config.seed, stage, i, "recon"))
                out = i2i(prompt=rec.prompt, image=load_square(rec.images[0], R), strength=config.hg_strength,
                          generator=g, num_inference_steps=config.hg_sample_steps,
                          guidance_scale=config.hg_guidance, **size).images[0]
                save_png(out, recon)
            chosen, source = f"pool/{i:05d}/recon.png", "reconstructed"
        else:  # hard
            real = item_dir / "real.png"
            if not real.is_file():
                save_png(load_square(rec.images[0], R), real)
            chosen, source = f"pool/{i:05d}/real.png", "real"
        lines.append({"prompt": rec.prompt, "chosen": chosen, "rejected": loser, "chosen_source": source})
    atomic_write_text(meta, "".join(json.dumps(x) + "\n" for x in lines))
    del t2i, i2i, base
    return folder


def combine_lora_files(paths: Sequence[Path], dest: Path, *, metadata: dict | None = None) -> Path:
    """Write the sum of the LoRAs in ``paths`` (same modules) as one LoRA of rank Σ r_i, atomically.

    ΔW = Σ_i (α_i/r_i)·B_i A_i = [ (α_1/r_1)B_1 … ] · [A_1; …]: downs are stacked along the rank,
    ups concatenated and pre-scaled, and alpha = the new rank (scale 1).
    """
    from safetensors.torch import load_file

    from ....core.atomic import atomic_save_safetensors
    from ....core.lora_io import read_lora_metadata

    if not paths:
        raise ConfigError("combine_lora_files: paths must name at least one LoRA file, got none")
    states = [load_file(str(p)) for p in paths]
    modules = {k[: -len(".lora_down.weight")] for k in states[0] if k.endswith(".lora_down.weight")}
    for p, s in zip(paths, states):
        mods = {k[: -len(".lora_down.weight")] for k in s if k.endswith(".lora_down.weight")}
        if mods != modules:
            raise ConfigError(f"combine_lora_files: every LoRA must adapt the same modules, got {p} differing "
                              f"in {sorted(mods ^ modules)[:3]}")
    out: dict[str, torch.Tensor] = {}
    total = 0
    for m in sorted(modules):
        downs, ups = [], []
        for s in states:
            down, up = s[f"{m}.lora_down.weight"], s[f"{m}.lora_up.weight"]
            r = down.shape[0]
            alpha = float(s[f"{m}.alpha"]) if f"{m}.alpha" in s else float(r)
            downs.append(down.float())
            ups.append(up.float() * (alpha / r))
        out[f"{m}.lora_down.weight"] = torch.cat(downs, 0).contiguous()
        out[f"{m}.lora_up.weight"] = torch.cat(ups, 1).contiguous()
        total = out[f"{m}.lora_down.weight"].shape[0]
        out[f"{m}.alpha"] = torch.tensor(float(total))
    meta = read_lora_metadata(paths[-1])
    meta.update({"ss_network_dim": str(total), "ss_network_alpha": str(float(total)),
                 "vitruvian_stage_loras": json.dumps([str(p) for p in paths])})
    meta.update({str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()})
    atomic_save_safetensors(out, dest, meta)
    return dest


class HGDPOCurriculum:
    """HG-DPO: an easy → normal → hard curriculum of Diffusion-DPO stages on real captioned images."""

    name = "hg-dpo"
    def run(self, config, *, callbacks=()) -> TrainResult:
        """Run every stage (building its pairs first); return the final ``TrainResult``."""
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        priors: list[str] = []
        steps_done, result = 0, None
        checkpoints: list[Path] = []
        for i, (stage, steps) in enumerate(stage_plan(config)):
            stage_dir = out / "stages" / f"{i}-{stage}"
            stage_dir.mkdir(parents=True, exist_ok=True)
            pairs = build_stage_pairs(config, stage, stage_dir / "pairs", priors)
            stage_out = stage_dir / "train"
            lora = stage_out / f"{config.name}.safetensors"
            if not lora.is_file():
                resume = "latest" if checkpoint_dirs(stage_out) else ""
                stage_cfg = dataclasses.replace(config, objective="hg-dpo-stage", data=str(pairs), out=str(stage_out),
                                                steps=steps, hg_prior_loras=tuple(priors), resume=resume,
                                                lr_warmup_steps=min(config.lr_warmup_steps, steps), cache_dir="")
                result = train(stage_cfg, callbacks=callbacks)
                checkpoints += list(result.checkpoints)
                if result.interrupted:
                    return dataclasses.replace(result, steps=steps_done + result.steps)
            steps_done += steps
            priors.append(str(lora))
        final = combine_lora_files([Path(p) for p in priors], out / f"{config.name}.safetensors",
                                   metadata={"vitruvian_config": json.dumps(config.to_dict(), sort_keys=True)})
        atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        return TrainResult(lora_path=final, steps=steps_done, final_loss=result.final_loss if result else math.nan,
                           metrics=dict(result.metrics) if result else {}, out_dir=out, checkpoints=tuple(checkpoints))
