"""Training step of the flow-matching families: seconds per step and peak memory, sft vs dpo, bf16 vs fp8 base.

    python -m benchmarks.flow_step --device cuda                      # Flux.1-dev shapes, 512² and 1024²
    python -m benchmarks.flow_step --device cpu --family flux,chroma,sd3 --preset tiny --sizes 64
    python -m benchmarks.flow_step --device cpu --family flux,chroma,sd3 --preset mid --sizes 128

Each configuration runs in a fresh process (``--one``), so peak memory is its own and an out-of-memory one is
reported, not fatal. The step is the trainer's (``trainers.objectives`` sft / dpo through the family's
forward process and model call, ``accelerator``-free: backward, clipping at 1.0, AdamW): LoRA rank ``--rank`` (16) on the
default attention targets, one pair (dpo) or one image (sft) per step, the base built on the device with random
weights of the preset's shapes (no file: a 12 B-parameter checkpoint would take minutes to write and read), and
the conditioning a latent-cache hit gives (random, of the family's shapes: Flux T5 (1, 512, 4096) + CLIP pooled
(1, 768); Chroma T5 + its mask; SD3.5 CLIP+T5 (1, 77 + 512, 4096) + pooled (1, 2048)) — text encoders and VAE are
not resident while training, as in a real run. ``--low-memory`` variants add gradient
checkpointing; ``fp8`` stores base weights in float8 e4m3, up-cast per layer (``base_storage = "fp8"``).
Peak memory: ``torch.cuda.max_memory_allocated`` (GPU) or the process's peak RSS (CPU). Medians of ``--steps``
steps after ``--warmup``.

Presets per family: ``full`` = the released shapes (FLUX.1-dev 11.9 B, Chroma 8.9 B, SD3.5 Large 8.1 B);
``mid`` = width 1024 (8 heads of 128; SD3: 16 of 64), a few blocks, T5 width 4096 (CPU-sized); ``tiny`` = the
test fixtures' sizes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time

_FLUX = dict(joint_attention_dim=4096, axes_dims_rope=(16, 56, 56))
#: family → preset → transformer config
PRESETS = {
    "flux": {
        "full": dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                     pooled_projection_dim=768, guidance_embeds=True, **_FLUX),
        "mid": dict(num_layers=2, num_single_layers=4, attention_head_dim=128, num_attention_heads=8,
                    pooled_projection_dim=768, guidance_embeds=True, **_FLUX),
        "tiny": dict(num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=2,
                     joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 14, 14)),
    },
    "chroma": {
        "full": dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24, **_FLUX),
        "mid": dict(num_layers=2, num_single_layers=4, attention_head_dim=128, num_attention_heads=8,
                    approximator_hidden_dim=1024, **_FLUX),
        "tiny": dict(num_layers=1, num_single_layers=1, attention_head_dim=32, num_attention_heads=2,
                     joint_attention_dim=32, axes_dims_rope=(4, 14, 14), approximator_hidden_dim=32,
                     approximator_layers=1),
    },
    "sd3": {
        "full": dict(num_layers=38, attention_head_dim=64, num_attention_heads=38, caption_projection_dim=2432,
                     pos_embed_max_size=192, qk_norm="rms_norm"),
        "mid": dict(num_layers=4, attention_head_dim=64, num_attention_heads=16, caption_projection_dim=1024,
                    pos_embed_max_size=96, qk_norm="rms_norm"),
        "tiny": dict(num_layers=2, attention_head_dim=64, num_attention_heads=2, caption_projection_dim=128,
                     joint_attention_dim=32, pooled_projection_dim=64, pos_embed_max_size=16, qk_norm="rms_norm"),
    },
}
TEXT_TOKENS = {"full": 512, "mid": 512, "tiny": 16}


def _model_and_cond(family: str, preset: str, device, dtype, g):
    """(transformer, the family object, the schedule dict, cond) for one configuration."""
    import torch
    from diffusers import ChromaTransformer2DModel, FluxTransformer2DModel, SD3Transformer2DModel

    from vitruvian.trainers.families import FAMILIES

    cfg = PRESETS[family][preset]
    cls = {"flux": FluxTransformer2DModel, "chroma": ChromaTransformer2DModel, "sd3": SD3Transformer2DModel}[family]
    with torch.device(device):
        model = cls(**cfg).to(dtype)
    width = cfg.get("joint_attention_dim", 4096)
    tokens = TEXT_TOKENS[preset] + (77 if family == "sd3" else 0)
    cond = {"encoder_hidden_states": torch.randn(1, tokens, width, generator=g, device=device).to(dtype)}
    if family == "flux":
        cond["pooled_projections"] = torch.randn(1, cfg["pooled_projection_dim"], generator=g, device=device).to(dtype)
        schedule = {"use_dynamic_shifting": True, "guidance": True}
    elif family == "sd3":
        pooled = cfg.get("pooled_projection_dim", 2048)
        cond["pooled_projections"] = torch.randn(1, pooled, generator=g, device=device).to(dtype)
        schedule = {"shift": 3.0, "use_dynamic_shifting": False}
    else:
        cond["attention_mask"] = torch.ones(1, tokens, dtype=torch.bool, device=device)
        schedule = {"use_dynamic_shifting": True}
    return model, FAMILIES[family], schedule, cond


def one(spec: dict) -> dict:
    """Build, warm up and time one configuration in this process; returns its row."""
    import torch

    from vitruvian.trainers.lora_layers import add_lora
    from vitruvian.trainers.objectives import DPO, SFT, ObjectiveContext

    cuda = spec["device"] == "cuda"
    device = torch.device(spec["device"])
    compute = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    g = torch.Generator(device).manual_seed(0)
    model, family, schedule, cond = _model_and_cond(spec["family"], spec["preset"], device, compute, g)
    model.requires_grad_(False)
    if spec["storage"] == "fp8":
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
    if spec["low_memory"]:
        model.enable_gradient_checkpointing()
    add_lora(model, rank=spec["rank"], alpha=spec["rank"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, foreach=True)
    size, n = spec["size"] // 8, 2 if spec["objective"] == "dpo" else 1
    batch = {"latents": torch.randn(1, n, 16, size, size, generator=g, device=device), "cond": cond}
    settings = argparse.Namespace(resolution=spec["size"], flow_shift="auto", flow_logit_mean=0.0, flow_logit_std=1.0,
                                  flux_guidance=1.0, gradient_checkpointing=False, low_memory=False)
    process = family.process(schedule, settings)
    ctx = ObjectiveContext(unet=model, scheduler=None, generator=g, process=process)
    objective = DPO(beta=5000.0) if spec["objective"] == "dpo" else SFT()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=compute, enabled=cuda):
            result = objective(batch, ctx)
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {**spec, "s_per_step": statistics.median(times), "peak_gib": peak, "loss": float(result.loss),
            "params_b": sum(p.numel() for p in model.parameters()) / 1e9}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--family", default="flux", help="comma-separated: flux, chroma, sd3 (default flux)")
    p.add_argument("--preset", default=None, choices=("full", "mid", "tiny"), help="default: full on cuda, mid on cpu")
    p.add_argument("--sizes", default=None, help="pixels, comma-separated (default: 512,1024 on cuda, 256 on cpu)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print("RESULT " + json.dumps(one(json.loads(a.one))), flush=True)
        return 0
    preset = a.preset or ("full" if a.device == "cuda" else "mid")
    sizes = [int(s) for s in (a.sizes or ("512,1024" if a.device == "cuda" else "256")).split(",")]
    rows = []
    for family, size, (storage, low), objective in itertools.product(
            a.family.split(","), sizes, (("auto", False), ("fp8", True)), ("sft", "dpo")):
        spec = dict(device=a.device, family=family, preset=preset, size=size, storage=storage, low_memory=low,
                    objective=objective, rank=a.rank, steps=a.steps, warmup=a.warmup)
        proc = subprocess.run([sys.executable, "-m", "benchmarks.flow_step", "--one", json.dumps(spec)],
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        row = json.loads(line[7:]) if line else {**spec, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(render(rows, " ".join(["python -m benchmarks.flow_step", *(argv if argv is not None else sys.argv[1:])])))
    return 0


def render(rows: list[dict], command: str) -> str:
    lines = [f"`{command}`:", "", "| family | preset | px | base | low_memory | objective | s/step | dpo ÷ sft | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    sft = {(r["family"], r["size"], r["storage"]): r.get("s_per_step") for r in rows if r["objective"] == "sft"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['preset']} | {r['size']} | {r['storage']} | {r['low_memory']} | "
                         f"{r['objective']} | failed: {r['error'][:80]} | | |")
            continue
        key = (r["family"], r["size"], r["storage"])
        ratio = f"{r['s_per_step'] / sft[key]:.2f}" if r["objective"] == "dpo" and sft.get(key) else ""
        base = "fp8" if r["storage"] == "fp8" else ("bf16" if r["device"] == "cuda" else "fp32")
        lines.append(f"| {r['family']} | {r['preset']} | {r['size']} | {base} "
                     f"| {r['low_memory']} | {r['objective']} | {r['s_per_step']:.3f} | {ratio} | {r['peak_gib']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
