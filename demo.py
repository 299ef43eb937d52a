"""The main demo, headless, on a tiny random model: ``make demo`` (= ``python -m vitruvian.demo``).

1. Pose: read the real MediaPipe keypoints of ``tests/data/astronaut.png``, build its skeleton graph,
   render the preview over the photo.
2. Preference pairs from real photos: chosen = a real face crop, rejected = the same crop degraded
   (blurred, washed out); written as a trainer dataset (``metadata.jsonl``).
3. Train a few Diffusion-DPO steps with LoRA on a tiny SD1.5-layout diffusers model built from a
   config with seeded random weights (no download, no GPU), then plot the loss curve.

Run from the repository root: the tiny model comes from the test kit (``tests/tiny.py``).
Every output goes under ``--out`` (default ``demo_out/``); the last lines say where.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "tests" / "data"


def pose_step(out: Path) -> Path:
    """Astronaut keypoints → skeleton graph → preview PNG; returns the PNG path."""
    import networkx as nx
    import numpy as np
    import torch
    from PIL import Image

    from .core.pose import build_pose_graph, load_pose, overlay_pose

    detections = json.loads((DATA / "detections.json").read_text())
    loaded = load_pose(detections["images"]["astronaut.png"]["pose_33"], format="mediapipe33",
                       canvas=(512, 512))
    person = loaded.pose[0].people[0]
    graph = build_pose_graph(person, min_confidence=0.5)
    print(f"[pose] {loaded.message}")
    print(f"[pose] skeleton graph: {graph.number_of_nodes()} joints, {graph.number_of_edges()} bones, "
          f"{nx.number_connected_components(graph)} connected parts (confidence ≥ 0.5)")
    photo = torch.from_numpy(np.array(Image.open(DATA / "astronaut.png").convert("RGB"))).permute(2, 0, 1)
    preview = overlay_pose(photo[None].float() / 255, loaded.pose)[0]
    path = out / "pose_preview.png"
    Image.fromarray((preview.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def pairs_step(out: Path, *, n: int = 8, size: int = 64) -> Path:
    """Real face crops (chosen) vs degraded copies (rejected) → a trainer dataset folder."""
    from PIL import Image, ImageEnhance, ImageFilter

    folder = out / "pairs"
    (folder / "img").mkdir(parents=True, exist_ok=True)
    sources = [Image.open(DATA / name).convert("RGB") for name in ("trainer_astronaut_face.png",
                                                                  "trainer_camera_face.png")]
    lines = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        dx, dy = (i * 5) % max(1, w - h), (i * 3) % 4          # a few distinct crops per photo
        real = src.crop((dx, dy, dx + h - 4, dy + h - 4)).resize((size, size), Image.BICUBIC)
        bad = ImageEnhance.Contrast(real.filter(ImageFilter.GaussianBlur(2.5))).enhance(0.5)
        real.save(folder / "img" / f"{i:03d}_real.png")
        bad.save(folder / "img" / f"{i:03d}_bad.png")
        lines.append({"prompt": "a photo of a face", "chosen": f"img/{i:03d}_real.png",
                      "rejected": f"img/{i:03d}_bad.png", "chosen_source": "real"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    print(f"[pairs] {n} pairs (real winner, degraded loser) → {folder}")
    return folder


def plot_losses(progress: Path, png: Path) -> None:
    """A small loss-curve image from ``progress.jsonl`` (PIL only; no plotting library needed)."""
    from PIL import Image, ImageDraw

    records = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    losses = [float(r["loss"]) for r in records]
    W, H, pad = 480, 240, 30
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = min(losses), max(losses)
    span = (hi - lo) or 1.0
    pts = [(pad + i * (W - 2 * pad) / max(1, len(losses) - 1), H - pad - (v - lo) / span * (H - 2 * pad))
           for i, v in enumerate(losses)]
    draw.rectangle((pad, pad, W - pad, H - pad), outline="black")
    if len(pts) > 1:
        draw.line(pts, fill="red", width=2)
    for p in pts:
        draw.ellipse((p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3), fill="red")
    draw.text((pad, 8), f"DPO loss per step: {losses[0]:.4f} → {losses[-1]:.4f}", fill="black")
    img.save(png)


def train_step(out: Path, data: Path, *, steps: int) -> Path:
    """Tiny model + DPO LoRA for ``steps`` steps; returns the LoRA path."""
    from tests.tiny import make_tiny_diffusers_folder  # the test kit: seeded random tiny SD1.5 model

    from .trainers import train
    from .trainers.config import load_config

    model = out / "tiny_model"
    if not (model / "model_index.json").exists():
        make_tiny_diffusers_folder(model)
    config = load_config("dpo", overrides=[
        f"base={model}", f"data={data}", f"out={out / 'run'}", f"steps={steps}", "resolution=64",
        "batch_size=2", "rank=4", "alpha=4", "learning_rate=1e-4", "checkpoint_every=2", "name=demo-dpo"])
    t0 = time.perf_counter()
    result = train(config)
    print(f"[train] {result.steps} DPO steps in {time.perf_counter() - t0:.1f} s, final loss "
          f"{result.final_loss:.4f}, implicit accuracy {result.metrics.get('implicit_acc', float('nan')):.2f}")
    plot_losses(result.out_dir / "progress.jsonl", out / "loss_curve.png")
    return result.lora_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitruvian.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (created)")
    parser.add_argument("--steps", type=int, default=4, help="DPO steps on the tiny model")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    preview = pose_step(out)
    data = pairs_step(out)
    lora = train_step(out, data, steps=args.steps)
    print("\nOutputs:")
    print(f"  pose preview   {preview}")
    print(f"  pairs dataset  {data}")
    print(f"  LoRA           {lora}  (kohya keys: drop it into ComfyUI/models/loras)")
    print(f"  loss curve     {out / 'loss_curve.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
