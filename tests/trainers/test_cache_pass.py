"""The latent cache is filled before the first step (``trainers.run._fill_cache``), with the lazy path's bits.

After ``open_run`` the cache holds every item's latents (both flips with ``random_flip``) and every prompt;
training steps then call neither the VAE nor the text encoder (counted on the real tiny model's modules), and
the losses equal those of a run that encodes every step anew (``cache_latents = false``: the per-item values
by definition). ``random_crop`` falls back to filling lazily, and says so.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vitruvian.trainers.latent_cache import LatentCache

from .engine_kit import PROMPTS, make_pair_folder, tiny_config


def _train_counting(tmp: Path, data: Path, steps: int = 3, **overrides) -> tuple[int, dict, list[float]]:
    """Open a tiny dpo run, count VAE and text-encoder calls and the items whose pixels were decoded during
    ``steps`` steps.

    Returns (cache entries after open_run, {"vae": n, "text": n, "decoded": n} during the steps, the losses)."""
    from vitruvian.trainers.loop import _step
    from vitruvian.trainers.objectives import get_objective
    from vitruvian.trainers.run import open_run

    cfg = tiny_config(tmp, data, "dpo", steps=steps, batch_size=2, seed=7, rank=4, alpha=4, **overrides)
    run = open_run(cfg, get_objective(cfg.objective, cfg))
    entries = len(run.cache) if run.cache is not None else 0
    calls = {"vae": 0, "text": 0, "decoded": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call

    run.base.vae.encode = counted("vae", run.base.vae.encode)  # the real module's method, counted
    for te in run.base.text_encoders:
        te.forward = counted("text", te.forward)
    encode_batch = run.encoder

    def encoder(batch):
        calls["decoded"] += sum(batch["decoded"])
        return encode_batch(batch)

    run.encoder = encoder
    losses = []
    while run.step < steps:
        _step(run)
        losses.append(run.loss)
    return entries, calls, losses


@pytest.mark.slow
def test_pass_with_flips_leaves_steps_nothing_to_encode(tmp_path):
    n = 4
    data = make_pair_folder(tmp_path / "data", n)
    # 3 steps x 2 pairs = 6 samples: the second epoch draws new flips, all encoded ahead of time
    entries, calls, losses = _train_counting(tmp_path / "a", data, random_flip=True)
    assert entries == 2 * n + len(PROMPTS)  # each pair under both flips + each prompt
    assert calls == {"vae": 0, "text": 0, "decoded": 0}  # steps read the cache, and only the images' headers
    _, fresh_calls, fresh = _train_counting(tmp_path / "b", data, random_flip=True, cache_latents=False)
    assert fresh_calls == {"vae": 3 * 2, "text": 3 * 2, "decoded": 3 * 2}  # no cache: every step decodes, encodes
    assert losses == fresh and len(set(losses)) == 3  # bit for bit
    # DataLoader workers copy the dataset when the first batch is drawn, after the pass: they skip decoding too
    _, worker_calls, worker_losses = _train_counting(tmp_path / "c", data, random_flip=True, num_workers=2)
    assert worker_calls == {"vae": 0, "text": 0, "decoded": 0} and worker_losses == losses


def _pickapic(folder: Path, rows: int) -> Path:
    """A Pick-a-Pic parquet folder of ``rows`` rows (every third a tie), 2 row groups, distinct images."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)

    def jpeg(i: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        return buf.getvalue()

    folder.mkdir(parents=True)
    table = pa.table({"caption": [f"a photo {i}" for i in range(rows)], "jpg_0": [jpeg(i) for i in range(rows)],
                      "jpg_1": [jpeg(i) for i in range(rows)], "label_0": [(1.0, 0.0, 0.5)[i % 3] for i in range(rows)]})
    pq.write_table(table, folder / "train-00000.parquet", row_group_size=rows // 2)
    return folder


@pytest.mark.slow
def test_pass_over_a_parquet_stream(tmp_path):
    data = _pickapic(tmp_path / "data", 6)  # 4 kept pairs, 4 prompts
    entries, calls, losses = _train_counting(tmp_path / "a", data, random_flip=False)
    assert entries == 4 + 4 and calls == {"vae": 0, "text": 0, "decoded": 0}
    _, fresh_calls, fresh = _train_counting(tmp_path / "b", data, random_flip=False, cache_latents=False)
    assert losses == fresh and fresh_calls["decoded"] == 3 * 2
    _, worker_calls, worker_losses = _train_counting(tmp_path / "c", data, random_flip=False, num_workers=2)
    assert worker_calls["decoded"] == 0 and worker_losses == losses


@pytest.mark.slow
def test_random_crop_fills_lazily_and_says_so(tmp_path, capsys):
    data = make_pair_folder(tmp_path / "data", 4, size=80)  # 80 px images: a 64 px crop has room to move
    entries, calls, _ = _train_counting(tmp_path / "a", data, steps=1, random_crop=True)
    assert entries == 0 and calls["vae"] == 2  # the step encodes its two pairs
    assert "no up-front latent-cache pass" in capsys.readouterr().out


def test_persist_and_refresh_share_entries_through_the_shards(tmp_path):
    """Several processes: each persists its share, then indexes the others' (bits unchanged)."""
    a, b = LatentCache(tmp_path / "c"), LatentCache(tmp_path / "c")
    x, y = torch.randn(2, 4, 8, 8), torch.randn(1, 77, 32)
    a.put("x", {"latents": x})
    b.put("y", {"hidden": y})
    assert not (tmp_path / "c").exists()  # small: memory only, until persisted
    a.persist()
    b.persist()
    a.refresh()
    b.refresh()
    assert torch.equal(a.get("y")["hidden"], y) and torch.equal(b.get("x")["latents"], x)
    assert a.get("x")["latents"] is not None and len(a) == len(b) == 2
    a.persist()  # nothing new: no new shard
    assert len(list((tmp_path / "c").glob("shard-*.safetensors"))) == 2
    assert json.dumps(sorted(p.name for p in (tmp_path / "c").iterdir())).count(".tmp") == 0


def test_a_run_shorter_than_an_epoch_fills_lazily(tmp_path, capsys):
    """1 step of 2 pairs over 8 pairs: encoding all 8 up front would cost more than the run (Pick-a-Pic scale)."""
    data = make_pair_folder(tmp_path / "data", 8)
    entries, calls, _ = _train_counting(tmp_path / "a", data, steps=1)
    assert entries == 0 and calls["vae"] == 2
    assert "the run takes 2 of the 8 samples (less than one epoch)" in capsys.readouterr().out
