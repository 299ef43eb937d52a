"""Seed objectives vs ``sft``: seconds per optimizer step and memory, in one process, interleaved.

    python -m benchmarks.objectives [--preset small|sd15] [--rounds 3] [--steps 8] [--threads 1] [--write-docs]

Every variant trains the same LoRA (rank 8 on to_q/k/v/out.0) of the same randomly initialised UNet
on the same synthetic latents, for ``--steps`` optimizer steps per round; the variants run one after
the other inside each of ``--rounds`` rounds (interleaved), and each variant's ratio to ``sft`` is the
median over rounds of (its time / sft's time in that round), so load from other processes on a shared
machine cancels to first order. On a CPU the time is the process's CPU time (user + system, all its
threads; ``time.process_time``), far less sensitive to other processes than wall time; on CUDA it is wall
time after a synchronize. The step includes the objective (forward passes, losses), the backward
(or MPD's combiner) and AdamW. Every variant sees 2 images per step: ``sft`` and ``mpd`` a batch of 2
images, the pair objectives one pair.

Memory: on CUDA the peak allocated memory of a step (``torch.cuda.max_memory_allocated``); on a CPU the
bytes saved for backward during the step (``torch.autograd.graph.saved_tensors_hooks``, distinct
storages, a proxy for the activation peak) plus MPD's K per-task gradient copies.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PRESETS = {
    # (UNet kwargs, latent side, text width)
    "small": (dict(block_out_channels=(32, 64, 64), down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2, layers_per_block=1,
                   cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16, sample_size=32), 32, 64),
    "sd15": (dict(cross_attention_dim=768, sample_size=64), 64, 768),
}


@dataclass(frozen=True)
class Variant:
    key: str
    objective: str
    options: dict
    pair: bool


VARIANTS = (
    Variant("sft", "sft", {}, False),
    Variant("dpo", "dpo", {}, True),
    Variant("patch-dpo (weighted)", "patch-dpo", {"form": "weighted"}, True),
    Variant("patch-dpo (dpo form)", "patch-dpo", {"form": "dpo"}, True),
    Variant("mpd, every step (official K backward)", "mpd", {"every": 1}, False),
    Variant("mpd, mpd_every=4", "mpd", {"every": 4}, False),
    Variant("mpd, mpd_every=8", "mpd", {"every": 8}, False),
    Variant("mpd, sum", "mpd", {"combiner": "sum"}, False),
    Variant("face-guidance", "face-guidance", {}, True),
    Variant("hg-dpo stage (+L_stat)", "hg-dpo-stage", {"stat_weight": 1.0}, True),
)


def build(preset: str, device: str):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from vitruvian.trainers.lora_layers import add_lora

    kwargs, side, width = PRESETS[preset]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**kwargs).to(device)
    unet = add_lora(unet, rank=8, alpha=8.0, targets=("to_q", "to_k", "to_v", "to_out.0"))
    return unet, DDPMScheduler(num_train_timesteps=1000), side, width


def make_batch(pair: bool, side: int, width: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    R = side * 8
    B, N = (1, 2) if pair else (2, 1)
    face = torch.tensor([[R * 0.3, R * 0.1, R * 0.55, R * 0.4]])
    hand = torch.tensor([[R * 0.6, R * 0.6, R * 0.75, R * 0.8]])
    quality = torch.ones(B, N, 1, R, R)
    if pair:
        quality[:, 1, :, int(R * 0.1):int(R * 0.4), int(R * 0.3):int(R * 0.55)] = 0.0
    return {"latents": torch.randn(B, N, 4, side, side, generator=g).to(device),
            "cond": {"encoder_hidden_states": torch.randn(B, 77, width, generator=g).to(device)},
            "face_boxes": [[face] * N for _ in range(B)], "hand_boxes": [[hand] * N for _ in range(B)],
            "quality": quality.to(device)}


def make_objective(v: Variant, resolution: int):
    from vitruvian.trainers.objectives import OBJECTIVES

    obj = OBJECTIVES[v.objective](None)
    if v.options or v.objective in ("mpd", "face-guidance"):
        import dataclasses

        extra = {"resolution": resolution} if v.objective in ("mpd", "face-guidance") else {}
        obj = dataclasses.replace(obj, **v.options, **extra)
    return obj


class SavedBytes:
    """Bytes of distinct storages saved for backward while active."""

    def __init__(self):
        self.seen, self.total = set(), 0

    def pack(self, t):
        try:
            key = t.untyped_storage().data_ptr()
            if key not in self.seen:
                self.seen.add(key)
                self.total += t.untyped_storage().nbytes()
        except RuntimeError:
            pass
        return t


def run_variant(v: Variant, unet, scheduler, batch, steps: int, accelerator, device: str, *, memory=False):
    from vitruvian.trainers.objectives import ObjectiveContext

    obj = make_objective(v, batch["latents"].shape[-1] * 8)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    ctx = ObjectiveContext(unet=unet, scheduler=scheduler, generator=torch.Generator(device).manual_seed(0))
    probe = SavedBytes()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        ctx.step = step
        if memory:
            with torch.autograd.graph.saved_tensors_hooks(probe.pack, lambda t: t):
                out = obj(batch, ctx)
        else:
            out = obj(batch, ctx)
        backward = getattr(obj, "backward", None)
        if backward is None:
            out.loss.backward()
        else:
            backward(out, params, accelerator, step=step)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps
    if device == "cuda":
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        tasks = 3 if v.objective == "mpd" and v.options.get("combiner") != "sum" else 0
        mem = (probe.total + tasks * sum(p.numel() * 4 for p in params)) / 2**20
    return (cpu if device == "cpu" else seconds), mem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.objectives", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="steps per variant and round; a multiple of every mpd_every measured (the objective is rebuilt each round, so a round starts with a solve)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--write-docs", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=args.device == "cpu")
    unet, scheduler, side, width = build(args.preset, args.device)
    batches = {p: make_batch(p, side, width, args.device) for p in (False, True)}
    mem = {}
    for v in VARIANTS:  # warm-up + memory
        _, mem[v.key] = run_variant(v, unet, scheduler, batches[v.pair], 1, accelerator, args.device, memory=True)
    times = {v.key: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS:
            s, _ = run_variant(v, unet, scheduler, batches[v.pair], args.steps, accelerator, args.device)
            times[v.key].append(s)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {t[-1]:.3f}s" for k, t in times.items()),
              file=sys.stderr, flush=True)
    rows = []
    for v in VARIANTS:
        ratio = statistics.median(a / b for a, b in zip(times[v.key], times["sft"]))
        rows.append((v.key, statistics.median(times[v.key]), ratio, mem[v.key]))
    mem_kind = "peak CUDA MiB" if args.device == "cuda" else "saved-for-backward MiB (+ MPD G)"
    lines = [f"| variant (2 images per step) | {'CPU' if args.device == 'cpu' else 'wall'} s/step (median) | × sft (median of per-round ratios) | {mem_kind} |",
             "|---|---|---|---|"]
    lines += [f"| {k} | {s:.3f} | {r:.2f} | {m:.1f} |" for k, s, r, m in rows]
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        doc = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
        with open(doc, "a", encoding="utf-8") as f:
            f.write(f"\n### Run: preset {args.preset}, {args.device}, {args.rounds} rounds × {args.steps} steps, "
                    f"{args.threads} threads\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
