"""Cost of the pose-graph adapter: denoising-step time beside a plain ControlNet, and the kNN's peak memory.

    python -m benchmarks.pose_adapter [--cases tiny,sd15] [--resolution 256] [--repeat 5] [--memory]

1. **Step time.** One denoising step of a CFG batch (B = 2) on the CPU, fp32, random weights (timing only),
   measured as this process's CPU time on ``--threads`` threads (default 1; see ``_interleaved``):
   the UNet alone; the UNet fed by a plain ControlNet of the same depth (``PoseAdapterConfig(graph=False)``:
   the same encoder copy and pose encoder, no graph layers); the UNet fed by the pose-graph adapter. The pose
   side (rendering, skeleton tokens, pose encoder, the integrators' pose branches) is computed once per
   sampling run and is timed apart. The three step kinds run interleaved (rotating order) ``--repeat``
   times; reported are the minimum (the least-disturbed run on a shared machine) and the median, and the
   overhead ratio ``(adapter step − UNet step) / (ControlNet step − UNet step)`` of each; target ≤ 1.1.
   Cases: ``tiny`` = the test kit's ComfyUI checkpoint UNet (SD1.5 widths, one level, 64² pixels);
   ``sd15`` = the full SD1.5 UNet shapes at ``--resolution`` pixels (4 levels; 256² → 32² latents).
   ``--flops``: the same three steps' FLOPs, counted on the meta device (any resolution, machine-independent);
   the adapter's and the ControlNet's own FLOPs and their ratio (the UNet's are the same for both); for
   SDXL also the adapter without an integrator on level 0 (``graph_levels=(1, 2)``).
2. **kNN memory** (``--memory``). One GraphBlock (C = 320, k = 9) on a 64×64 latent (N = 4096 nodes, B = 2,
   SD1.5 level 0 at 512²), each chunk size in a fresh process: the peak resident memory the forward adds
   (``VmHWM`` after − before), its CPU time (one thread), and the similarity buffer B·chunk·N·4 bytes; plus the textbook
   EdgeConv that builds the (B, 2C, N, k) edge tensor, for comparison.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES = ("tiny", "sd15", "sdxl")
CHUNKS = (256, 512, 1024, 2048, 4096)


def _unet_config(case: str) -> dict:
    if case == "tiny":  # tests/tiny_checkpoint.py: SD1.5 widths, channel_mult [1], 1 res block, depth 1
        return dict(block_out_channels=(320,), layers_per_block=1, down_block_types=("CrossAttnDownBlock2D",),
                    up_block_types=("CrossAttnUpBlock2D",), cross_attention_dim=768, attention_head_dim=8)
    cfg = json.loads((REPO_ROOT / "trainers" / "model_configs" / case / "unet" / "config.json").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _median(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _interleaved(fns: dict, repeat: int, clock=time.process_time) -> dict:
    """Min and median ``clock`` seconds of each function, run in rotating order so load swings hit all alike.

    The default clock is this process's CPU time: on a shared, overloaded machine wall time mostly
    measures the other tenants, CPU time the work done (with one thread, the two agree on an idle machine).
    """
    for fn in fns.values():
        fn()  # warm-up
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = clock()
            fns[name]()
            times[name].append(clock() - t)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def step_times(case: str, resolution: int, repeat: int) -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    from vitruvian.core.pose import Part, Person, PoseBatch, PoseFrame
    from vitruvian.core.pose_adapter import PoseGraphAdapter, prepare_pose_condition

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_unet_config(case)).eval()
    models = {"controlnet": PoseGraphAdapter.from_unet(unet, graph=False).eval(),
              "adapter": PoseGraphAdapter.from_unet(unet).eval(),
              "adapter_full_width": PoseGraphAdapter.from_unet(unet, graph_reduction=1).eval()}
    for m in models.values():
        m.perturb_zero_init_(0.01)  # non-zero outputs, as after training (no effect on cost)
    h = resolution // 8
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(17, 3, generator=g)
    kp[:, 2] = 1.0
    pose = PoseBatch((PoseFrame((Person(body=Part("coco17", kp)),), 1, 1, "normalized"),))
    x = torch.randn(2, 4, h, h, generator=g)
    t = torch.tensor([500, 500])
    ctx = torch.randn(2, 77, 768, generator=g)
    out = {"case": case, "resolution": resolution, "latent": h, "levels": len(unet.config.block_out_channels),
           "params_unet_M": sum(p.numel() for p in unet.parameters()) / 1e6,
           **{f"params_{name}_M": sum(p.numel() for p in m.parameters()) / 1e6 for name, m in models.items()}}
    with torch.inference_mode():
        feats = {}
        for name, m in models.items():
            def encode(m=m, name=name):
                feats[name] = m.encode_pose(prepare_pose_condition(pose, (h, h), m.skeleton))
            out[f"pose_side_{name}_s"] = _median(encode, max(1, repeat // 2))
        fns = {"unet": lambda: unet(x, t, ctx)}
        for name, m in models.items():
            fns[name] = lambda m=m, name=name: unet(x, t, ctx, **m(x, t, ctx, feats[name]).to_diffusers())
        for name, (best, median) in _interleaved(fns, repeat).items():
            out[f"{name}_min_s"], out[f"{name}_median_s"] = best, median
    for stat in ("min", "median"):
        base = out[f"unet_{stat}_s"]
        for name in ("adapter", "adapter_full_width"):
            out[f"{name}_overhead_ratio_{stat}"] = ((out[f"{name}_{stat}_s"] - base)
                                                   / (out[f"controlnet_{stat}_s"] - base))
    return out


def step_flops(case: str, resolution: int) -> dict:
    """Multiply-add FLOPs of one step (``torch.utils.flop_counter``; matmuls and convolutions, so the
    kNN similarity is counted, its top-k and gathers are not), on the meta device: no weights, any size."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from vitruvian.core.pose_adapter import PoseAdapterConfig, PoseGraphAdapter

    cfg = _unet_config(case)
    h = resolution // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
        variants = [("controlnet", {"graph": False}), ("adapter", {}), ("adapter_full_width", {"graph_reduction": 1})]
        if case == "sdxl":  # level 0 has 16384 positions at 1024²: the integrators can skip it
            variants.append(("adapter_levels_1_2", {"graph_levels": (1, 2)}))
        models = {name: PoseGraphAdapter(PoseAdapterConfig.from_unet_config(cfg, **opts)) for name, opts in variants}
        x, t = torch.empty(2, 4, h, h), torch.tensor([1, 1])
        ctx = torch.empty(2, 77, cfg["cross_attention_dim"])
        sdxl = {"added_cond_kwargs": {"text_embeds": torch.empty(2, 1280), "time_ids": torch.empty(2, 6)}} \
            if case == "sdxl" else {}
        added = torch.empty(2, 2816) if case == "sdxl" else None
    out = {"case": case, "resolution": resolution, "latent": h}

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e9

    with torch.no_grad():
        out["unet_GFLOP"] = count(lambda: unet(x, t, ctx, **sdxl))
        for name, m in models.items():
            sizes = [(-(-h // 2 ** lv), -(-h // 2 ** lv)) for lv in range(m.config.levels)]
            if m.config.graph:
                feats = tuple(torch.empty(2, c // m.config.graph_reduction, *s, device="meta")
                              if lv in m.config.graph_levels else None
                              for lv, (c, s) in enumerate(zip(m.config.block_out_channels, sizes)))
            else:
                feats = (torch.empty(2, m.config.block_out_channels[0], h, h, device="meta"),)
            out[f"{name}_GFLOP"] = count(lambda m=m, feats=feats: m(x, t, ctx, feats, added_embeds=added))
    for name in models:
        if name != "controlnet":
            out[f"{name}_ratio_flops"] = out[f"{name}_GFLOP"] / out["controlnet_GFLOP"]
    return out


_MEMORY_PROBE = r"""
import json, sys, time, torch
torch.set_num_threads(1)
def hwm():  # this process's peak RSS in kB (VmHWM; ru_maxrss would include a parent's peak from before exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
from vitruvian.core.pose_adapter.graph_conv import GraphBlock, knn_indices
chunk, mode = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
block = GraphBlock(320, k=9, chunk=chunk).eval()
x = torch.randn(2, 320, 64, 64)
def textbook(x):  # the (B, 2C, N, k) edge tensor of the usual implementation
    b, c, h, w = x.shape
    y = block.norm(block.proj(x)).reshape(b, c, h * w)
    idx = knn_indices(y, 9, chunk=chunk)
    yt = y.transpose(1, 2)
    x_j = torch.stack([yt[i][idx[i]] for i in range(b)])
    x_i = yt[:, :, None, :].expand_as(x_j)
    edge = torch.cat([x_i, x_j - x_i], dim=-1).permute(0, 3, 1, 2)
    out = torch.relu(torch.nn.functional.conv2d(edge, block.edge.linear.weight[..., None], block.edge.linear.bias))
    return x + out.amax(-1).reshape(b, c, h, w)
fn = block if mode == "split" else textbook
with torch.inference_mode():
    fn(x[:, :, :8, :8])  # load kernels
    before = hwm()
    t = time.process_time(); fn(x); seconds = time.process_time() - t
    after = hwm()
print(json.dumps({"chunk": chunk, "mode": mode, "peak_added_MiB": (after - before) / 1024, "seconds": seconds}))
"""


def knn_memory() -> list[dict]:
    rows = []
    for mode, chunks in (("split", CHUNKS), ("textbook", (1024,))):
        for chunk in chunks:
            done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(chunk), mode], capture_output=True,
                                  text=True, timeout=600, cwd=REPO_ROOT)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            row = json.loads(done.stdout.splitlines()[-1])
            row["similarity_MiB"] = 2 * min(chunk, 4096) * 4096 * 4 / 2**20
            rows.append(row)
    return rows


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks.pose_adapter", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tiny,sd15")
    parser.add_argument("--resolution", type=int, default=256, help="Pixels for the sd15 case (tiny: 64).")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time = work done).")
    parser.add_argument("--memory", action="store_true", help="Also measure the kNN's peak memory per chunk size.")
    parser.add_argument("--flops", default="64:tiny,256:sd15,512:sd15,1024:sdxl",
                        help="resolution:case pairs to count FLOPs for ('' for none).")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for item in filter(None, args.flops.split(",")):
        resolution, case = item.split(":")
        print(json.dumps(step_flops(case, int(resolution))))
    for case in filter(None, args.cases.split(",")):
        if case not in ("tiny", "sd15"):
            parser.error(f"--cases must list tiny and/or sd15 (step timing on the CPU), got {case!r}")
        res = step_times(case, 64 if case == "tiny" else args.resolution, args.repeat)
        print(json.dumps(res))
    if args.memory:
        for row in knn_memory():
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
