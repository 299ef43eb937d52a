"""Encode each image and prompt once: VAE latents and text conditioning, cached by content + model.

The VAE and text encoders are frozen, so their outputs are a pure function of (image content,
augmentation, model weights) and (prompt, text-encoder weights). :class:`BatchEncoder` turns a
collated batch into model-ready tensors and memoises them in a :class:`LatentCache`:

- **latents** = ``models.encode_images`` (the posterior mean × vae_scale; TAESD latents as they come) — the distribution *mean*, not a
  sample. The diffusers DPO script samples, but a cached sample is frozen anyway, so sampling would
  only make the cache (and a resumed run) depend on when an item was first seen; the mean keeps
  latents deterministic, as PatchDPO's code does. Stored fp32.
- **text** = ``models.encode_prompt(base, [prompt])`` (SDXL: with ``added_cond_kwargs``).

Every image and prompt is encoded on its own (never in a batch with others) and stored contiguous,
so a cached value and a recomputed one are bit-identical, values and memory layout, whatever batches
they first appeared in (exact resume).

Keys hash the item key (content hash of record + image bytes), the augmentation, the pixel shape
and a fingerprint of the encoder (config + every tensor's name, shape, dtype, float64 sum and a
strided sample of values), so changing the model or an image invalidates its entries.

Storage: in memory while the cache holds less than ``memory_limit_bytes`` (small sets); past that,
new entries spill to safetensors shards under ``directory`` (large sets), indexed at start-up from
the shard headers so a later run reuses them.

Up front: ``trainers.run`` fills the cache before the first step with :meth:`BatchEncoder.encode_item` (the
same per-item calls a step makes, so the values are the same bits), then :meth:`BatchEncoder.offload`-s the
encoders. With several processes each encodes its share, :meth:`LatentCache.persist`-s it to shards, and after
a barrier every process :meth:`LatentCache.refresh`-es its index and reads the others' shares from disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import atomic_save_safetensors
from .models import encode_images

__all__ = ["LatentCache", "BatchEncoder", "PixelBatch", "module_fingerprint"]

_SEP = "/"


def module_fingerprint(*modules: torch.nn.Module, samples: int = 256) -> str:
    """A short hex digest identifying the weights (and config) of ``modules``.

    Cheap for large models: per tensor it hashes name, shape, dtype, the float64 sum and up to
    ``samples`` strided values, not every byte.
    """
    h = hashlib.sha256()
    for m in modules:
        h.update(type(m).__name__.encode())
        config = getattr(m, "config", None)
        if config is not None:
            as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            # without the private keys: diffusers' "_use_default_values" lists a set (its order changes with
            # PYTHONHASHSEED, so two processes of one run disagreed), "_name_or_path" the folder it came from
            as_dict = {k: v for k, v in as_dict.items() if not str(k).startswith("_")}
            h.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
        for name, t in m.state_dict().items():
            flat = t.detach().reshape(-1)
            stride = max(1, flat.numel() // samples)
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|{flat.double().sum().item()!r}".encode())
            h.update(flat[::stride][:samples].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class LatentCache:
    """key → dict of CPU tensors; memory first, safetensors shards on disk past a memory budget.

    Args:
        directory: shard folder, or None for memory only.
        memory_limit_bytes: entries are kept in memory until this many bytes are held.
        shard_size: entries per shard file written to disk.
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, memory_limit_bytes: int = 1 << 30,
                 shard_size: int = 256):
        self.directory = Path(directory) if directory else None
        self.memory_limit_bytes = memory_limit_bytes
        self.shard_size = shard_size
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self._memory_bytes = 0
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        self._index: dict[str, tuple[Path, list[str]]] = {}
        self.hits = self.misses = 0
        if self.directory is not None and self.directory.is_dir():
            self._read_index()

    def __contains__(self, key: str) -> bool:
        return key in self._memory or key in self._pending or key in self._index

    def __len__(self) -> int:
        return len(self._memory.keys() | self._pending.keys() | self._index.keys())

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The cached tensors of ``key``, or None (counted as a miss)."""
        entry = self._memory.get(key) or self._pending.get(key)
        if entry is None and key in self._index:
            from safetensors import safe_open

            shard, names = self._index[key]
            with safe_open(str(shard), framework="pt") as f:
                entry = {n: f.get_tensor(f"{key}{_SEP}{n}") for n in names}
            self._remember(key, entry)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Store CPU copies of ``tensors`` under ``key``."""
        entry = {n: t.detach().cpu().contiguous() for n, t in tensors.items()}
        if self._remember(key, entry) or self.directory is None:
            return
        self._pending[key] = entry
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write pending (spilled) entries to a new shard, atomically."""
        if not self._pending or self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        shard = self.directory / f"shard-{secrets.token_hex(8)}.safetensors"
        atomic_save_safetensors({f"{k}{_SEP}{n}": t for k, e in self._pending.items() for n, t in e.items()}, shard)
        for k, e in self._pending.items():
            self._index[k] = (shard, list(e))
        self._pending.clear()

    def persist(self) -> None:
        """Write every entry not on disk yet (memory and pending) to a shard, keeping the memory copies."""
        if self.directory is None:
            return
        self._pending.update({k: e for k, e in self._memory.items() if k not in self._index})
        self.flush()

    def refresh(self) -> None:
        """Index the shards on disk again (after other processes :meth:`persist`-ed theirs)."""
        if self.directory is not None and self.directory.is_dir():
            self._read_index()

    def _remember(self, key: str, entry: dict[str, torch.Tensor]) -> bool:
        size = sum(t.numel() * t.element_size() for t in entry.values())
        if key in self._memory or self._memory_bytes + size > self.memory_limit_bytes:
            return key in self._memory
        self._memory[key] = entry
        self._memory_bytes += size
        return True

    def _read_index(self) -> None:
        from safetensors import safe_open

        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    names = list(f.keys())
            except Exception:  # a foreign or damaged file is not ours to read: skip it
                continue
            grouped: dict[str, list[str]] = {}
            for full in names:
                key, _, n = full.partition(_SEP)
                grouped.setdefault(key, []).append(n)
            for key, ns in grouped.items():
                self._index.setdefault(key, (shard, ns))


class BatchEncoder:
    """Collated batch → ``{"latents": (B, N, C, h, w) fp32, "cond": {...}, ...}`` on ``device``.

    Args:
        base: MODELS' ``BaseModel`` (``vae``, ``vae_scale``, text encoders, tokenizers).
        device: where the UNet runs; latents and conditioning are returned there.
        cache: a :class:`LatentCache`, or None to encode every step (``cache_latents = false``).
    """

    def __init__(self, base: Any, *, device: torch.device | str, cache: LatentCache | None):
        from .models import encode_prompt

        self.base = base
        self.device = torch.device(device)
        self.cache = cache
        self._encode_prompt = encode_prompt
        self._vae_fp = module_fingerprint(base.vae)
        self._text_fp = module_fingerprint(*base.text_encoders)
        self._on_device = True
        self._items_seen: set[str] = set()

    # -- public -------------------------------------------------------------------------------------

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        pixels = batch["pixels"]  # (B, N, 3, R, R) in [-1, 1]
        keys, augs, prompts = batch["key"], batch["aug"], batch["prompt"]
        decoded = batch.get("decoded") or [True] * pixels.shape[0]
        latents = torch.stack([self._latents(pixels[i], keys[i], augs[i], decoded[i]) for i in range(pixels.shape[0])])
        conds = [self.text(p) for p in prompts]
        out = {k: v for k, v in batch.items() if k not in ("pixels", "decoded")}
        out["latents"] = latents.to(self.device)
        out["cond"] = _cat_cond(conds)
        added = out["cond"].get("added_cond_kwargs")
        if added is not None and "time_ids" in added:
            # SDXL micro-conditioning per item (not per prompt): (orig_h, orig_w, crop_top, crop_left,
            # target_h, target_w) = (R, R, crop_y, crop_x, R, R) with the crop this item was cut at
            R = pixels.shape[-1]
            rows = [[R, R, int(a[2]), int(a[1]), R, R] if a is not None else [R, R, 0, 0, R, R] for a in augs]
            added["time_ids"] = torch.tensor(rows, dtype=added["time_ids"].dtype, device=added["time_ids"].device)
        out["keys"] = list(keys)
        out["prompts"] = list(prompts)
        return out

    def text(self, prompt: str) -> dict:
        """Conditioning of one prompt, one row, on ``device`` (cached)."""
        key = _digest("txt", prompt, self._text_fp)
        flat = self.cache.get(key) if self.cache is not None else None
        if flat is None:
            self._ensure_on_device()
            with torch.no_grad():
                cond = self._encode_prompt(self.base, [prompt])
            flat = _flatten(cond)
            if self.cache is not None:
                self.cache.put(key, flat)
        return _unflatten({n: t.to(self.device) for n, t in flat.items()})

    def encode_item(self, item: Mapping[str, Any], *, both_flips: bool = False) -> None:
        """Cache one dataset item ahead of training: its latents (``item["pixels"]`` (N, 3, R, R)) and prompt.

        The same calls a step makes for it, so the cached bits are those a step would have cached.
        ``both_flips``: also the mirrored pixels under the mirrored ``aug`` (random_flip: an epoch may draw
        either; a flip is an exact permutation of the pixels, so these are the bits a flipped item gives).
        """
        aug = item["aug"]
        self._latents(item["pixels"], item["key"], aug)
        if both_flips:
            self._latents(item["pixels"].flip(-1), item["key"], (not aug[0], *aug[1:]))
        self.text(item["prompt"])

    @property
    def items_seen(self) -> int:
        """Distinct (item, augmentation) latents produced so far."""
        return len(self._items_seen)

    def offload(self, *, keep_vae: bool = False) -> None:
        """Move the VAE (unless ``keep_vae``: an objective decodes with it) and the text encoders off the
        accelerator; call once the cache covers the data. Without a cache nothing moves (every step encodes)."""
        if self.cache is None or not self._on_device:
            return
        if self.device.type != "cpu":
            for m in ((() if keep_vae else (self.base.vae,)) + tuple(self.base.text_encoders)):
                m.to("cpu")
            torch.cuda.empty_cache()
        self._on_device = False

    # -- internals ----------------------------------------------------------------------------------

    def _latents(self, pixels: torch.Tensor, key: str, aug: Any, decoded: bool = True) -> torch.Tensor:
        ck = _digest("lat", key, repr(tuple(aug) if aug is not None else None), tuple(pixels.shape), self._vae_fp)
        self._items_seen.add(ck)
        entry = self.cache.get(ck) if self.cache is not None else None
        if entry is not None:
            return entry["latents"]
        if not decoded:
            raise RuntimeError(f"BatchEncoder: item {key} (augmentation {aug}) came without decoded pixels, which is "
                               "only done once the up-front pass cached every item's latents, but its latents are "
                               "not in the cache; report this with the run's config")
        self._ensure_on_device()
        vae = self.base.vae
        with torch.no_grad():
            # encode_images handles both VAE kinds (AutoencoderKL posterior mean, TAESD latents)
            lat = encode_images(self.base, pixels.to(self.device, vae.dtype))
            # contiguous: the VAE may return channels-last tensors, and the UNet's kernels round
            # differently for another memory layout, so a cached and a fresh latent must match in it too
            lat = lat.float().cpu().contiguous()  # (N, C, h, w)
        if self.cache is not None:
            self.cache.put(ck, {"latents": lat})
        return lat

    def _ensure_on_device(self) -> None:
        if not self._on_device:
            for m in (self.base.vae, *self.base.text_encoders):  # (a kept VAE is there already: no-op)
                m.to(self.device)
            self._on_device = True


class PixelBatch:
    """The encoder of a run without a diffusion model (``needs_base = False``, e.g. train-scorer): the collated
    batch with ``pixels`` (B, N, 3, R, R) in [-1, 1] moved to ``device``, plus ``keys`` and ``prompts``."""

    items_seen = 0

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        out["pixels"] = batch["pixels"].to(self.device)
        out["keys"], out["prompts"] = list(batch["key"]), list(batch["prompt"])
        return out

    def offload(self) -> None:
        """Nothing to move."""


def _digest(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _flatten(cond: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    flat = {}
    for k, v in cond.items():
        if isinstance(v, Mapping):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v.detach().cpu().contiguous()
    return flat


def _unflatten(flat: Mapping[str, torch.Tensor]) -> dict:
    out: dict = {}
    for name, t in flat.items():
        *path, leaf = name.split(".")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = t
    return out


def _cat_cond(conds: Sequence[Mapping[str, Any]]) -> dict:
    first = conds[0]
    return {k: _cat_cond([c[k] for c in conds]) if isinstance(first[k], Mapping) else torch.cat([c[k] for c in conds])
            for k in first}
