"""trainers.latent_cache: memory/disk cache, keys by content + augmentation + model, the batch encoder."""
from __future__ import annotations

import os

import pytest
import torch

from vitruvian.trainers.latent_cache import BatchEncoder, LatentCache, module_fingerprint

from ..tiny import tiny_diffusers_folder
from .engine_kit import make_pair_folder


@pytest.fixture(scope="module")
def base():
    from vitruvian.trainers.models import load_base

    return load_base(tiny_diffusers_folder())


class TestLatentCache:
    def test_memory(self, tmp_path):
        cache = LatentCache(tmp_path / "c")
        assert cache.get("a") is None and cache.misses == 1
        cache.put("a", {"latents": torch.ones(2, 4, 8, 8)})
        assert torch.equal(cache.get("a")["latents"], torch.ones(2, 4, 8, 8)) and cache.hits == 1
        cache.flush()
        assert not (tmp_path / "c").exists()  # small sets never touch the disk

    def test_spill_to_disk_and_reuse(self, tmp_path):
        entry_bytes = 2 * 4 * 8 * 8 * 4
        cache = LatentCache(tmp_path / "c", memory_limit_bytes=3 * entry_bytes, shard_size=4)
        values = {f"k{i}": torch.full((2, 4, 8, 8), float(i)) for i in range(10)}
        for k, v in values.items():
            cache.put(k, {"latents": v})
        assert len(cache) == 10
        shards = sorted((tmp_path / "c").glob("shard-*.safetensors"))
        assert len(shards) == 1  # 7 spilled entries: one full shard of 4, 3 pending
        cache.flush()
        assert len(sorted((tmp_path / "c").glob("shard-*.safetensors"))) == 2
        assert not list((tmp_path / "c").glob("*.tmp"))
        assert all(torch.equal(cache.get(k)["latents"], v) for k, v in values.items())

        again = LatentCache(tmp_path / "c", memory_limit_bytes=0)  # a later run finds the shards
        assert len(again) == 7
        assert torch.equal(again.get("k9")["latents"], values["k9"]) and again.get("k0") is None


class TestFingerprint:
    def test_changes_with_weights(self, base):
        import copy

        vae = copy.deepcopy(base.vae)
        fp = module_fingerprint(vae)
        assert fp == module_fingerprint(base.vae)
        with torch.no_grad():
            next(vae.parameters()).view(-1)[0] += 1e-3
        assert module_fingerprint(vae) != fp
        with torch.no_grad():
            next(vae.parameters()).view(-1)[0] -= 1e-3
            list(vae.parameters())[-1].view(-1)[-1] *= 1.0001  # a value the strided sample may skip
        assert module_fingerprint(vae) != fp
        assert module_fingerprint(base.text_encoders[0]) != fp


class TestBatchEncoder:
    def batch(self, tmp_path, flip: bool):
        from vitruvian.trainers.data import collate, open_dataset

        data = make_pair_folder(tmp_path / "pairs", 2)
        ds = open_dataset(data, resolution=64, random_flip=False, random_crop=False, seed=0)
        items = [ds[i] for i in range(2)]
        if flip:
            for it in items:
                it["pixels"], it["aug"] = it["pixels"].flip(-1), (True, *it["aug"][1:])
        return collate(items)

    def test_value_and_cache(self, base, tmp_path):
        cache = LatentCache(None)
        enc = BatchEncoder(base, device="cpu", cache=cache)
        batch = self.batch(tmp_path, flip=False)
        out = enc(batch)
        lat = out["latents"]
        assert lat.shape == (2, 2, 4, 8, 8) and lat.dtype == torch.float32 and lat.is_contiguous()
        with torch.no_grad():
            expected = base.vae.encode(batch["pixels"][0]).latent_dist.mean * base.vae_scale
        torch.testing.assert_close(lat[0], expected)
        assert out["cond"]["encoder_hidden_states"].shape == (2, 77, 32)
        assert out["keys"] == batch["key"] and out["prompts"] == batch["prompt"]
        misses = cache.misses
        again = enc(batch)
        assert cache.misses == misses  # everything came from the cache ...
        assert torch.equal(again["latents"], lat)  # ... bit-identical
        enc(self.batch(tmp_path, flip=True))
        assert cache.misses == misses + 2  # another augmentation is another entry (prompts are cached)

    def test_model_change_invalidates(self, base, tmp_path):
        cache = LatentCache(None)
        batch = self.batch(tmp_path, flip=False)
        BatchEncoder(base, device="cpu", cache=cache)(batch)
        n = len(cache)
        with torch.no_grad():
            next(base.vae.parameters()).view(-1)[0] += 1e-2
        try:
            BatchEncoder(base, device="cpu", cache=cache)(batch)
        finally:
            with torch.no_grad():
                next(base.vae.parameters()).view(-1)[0] -= 1e-2
        assert len(cache) == n + 2  # new latents for the changed VAE; text entries reused


def test_sdxl_time_ids_follow_each_items_crop(tmp_path):
    from vitruvian.trainers.data import collate, open_dataset
    from vitruvian.trainers.models import load_base

    from .engine_kit import make_pair_folder as pairs

    base = load_base(tiny_diffusers_folder("sdxl"))
    data = pairs(tmp_path / "wide", 2, size=64)
    ds = open_dataset(data, resolution=64, random_flip=False, random_crop=False, seed=0)
    items = [ds[0], ds[1]]
    items[1]["aug"] = (False, 8, 4)  # as if cut at x=8, y=4
    out = BatchEncoder(base, device="cpu", cache=LatentCache(None))(collate(items))
    assert out["cond"]["added_cond_kwargs"]["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64], [64, 64, 4, 8, 64, 64]]
    assert out["cond"]["encoder_hidden_states"].shape == (2, 77, 64)


def test_fingerprint_is_the_same_in_every_process(tmp_path):
    """Processes of one run (and runs resuming a disk cache) must agree: a diffusers config built in code lists
    ``_use_default_values`` from a set, whose order follows PYTHONHASHSEED (DDP ranks then missed each other's
    cached latents)."""
    import subprocess
    import sys

    code = ("from diffusers import AutoencoderKL\n"
            "from vitruvian.trainers.latent_cache import module_fingerprint\n"
            "import torch; torch.manual_seed(0)\n"
            "print(module_fingerprint(AutoencoderKL(block_out_channels=(32,), norm_num_groups=8, latent_channels=4)))\n")
    prints = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True,
                             text=True, check=True).stdout.strip() for seed in ("1", "2", "3")}
    assert len(prints) == 1 and len(next(iter(prints))) == 16
