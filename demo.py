"""The main demo, headless, on a tiny random model: ``make demo`` (= ``python -m vitruvian.demo``).

The closed loop the ComfyUI workflow ``closed_loop`` runs, without ComfyUI:

1. Pose: read the real MediaPipe keypoints of ``tests/data/astronaut.png``, build its skeleton graph,
   render the preview over the photo.
2. Generate: four images of one prompt from a tiny SD1.5-layout diffusers model with seeded random
   weights (no download, no GPU), seeds 0–3.
3. Score: face sharpness (Laplacian variance, ``core.scoring``) on face regions found from keypoints, for
   real photos (astronaut, cameraman: their own MediaPipe poses) and the generated images (the
   astronaut's pose scaled to 64×64).
4. Pairs (``core.pairs``): real photos win against the worst generated images (HG-DPO), the best
   generated image against the worst (with face boxes), and real face crops against degraded copies;
   appended to a trainer dataset (``metadata.jsonl``, images stored once by content hash).
5. Train a few Diffusion-DPO steps with LoRA on that dataset; plot the loss curve.
6. After: the LoRA applied to the same model, the same prompt and seeds generated again and scored;
   a before/after grid and a score-distribution plot (``core.compare``).

Run from the repository root: the tiny model comes from the test kit (``tests/tiny.py``).
Every output goes under ``--out`` (default ``demo_out/``); the last lines say where, and how long each
stage took.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "tests" / "data"
PROMPT = "a photo of an astronaut, detailed face"
SIZE = 64
STAGES: dict[str, float] = {}


@contextmanager
def stage(name: str):
    t0 = time.perf_counter()
    yield
    STAGES[name] = STAGES.get(name, 0.0) + time.perf_counter() - t0


def _save(image, path: Path) -> Path:
    from .core.compare import to_pil

    to_pil(image).save(path)
    return path


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


def load_pipeline(model: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, *, n: int = 4, steps: int = 8):
    """``n`` images of PROMPT, seed i for image i: ``(n, 3, 64, 64)`` in [0, 1]."""
    import torch

    generators = [torch.Generator().manual_seed(i) for i in range(n)]
    with torch.no_grad():
        return pipe([PROMPT] * n, height=SIZE, width=SIZE, num_inference_steps=steps, generator=generators,
                    output_type="pt").images.float()


def _poses(name: str, n: int):
    """``n`` frames of a photo's MediaPipe pose, canvas 512 (rescaled to the image by the region finder)."""
    from .core.pose import PoseBatch, load_pose

    detections = json.loads((DATA / "detections.json").read_text())
    frame = load_pose(detections["images"][name]["pose_33"], format="mediapipe33", canvas=(512, 512)).pose[0]
    return PoseBatch((frame,) * n)


def score_faces(images, pose):
    """Face sharpness per image: ``(scored RegionBatch, [mean per image])``."""
    from .core.regions import regions_from_pose
    from .core.scoring import SharpnessScorer, score_regions

    b, _, h, w = images.shape
    regions = regions_from_pose(pose, [(h, w)] * b, labels=("face",))
    result = score_regions(images, regions, SharpnessScorer())
    return result.regions, result.per_image[result.name].mean


def _photo(name: str, size: int = SIZE):
    from PIL import Image

    from .core.compare import from_pil

    return from_pil(Image.open(DATA / name).convert("RGB").resize((size, size), Image.BICUBIC))


def score_photos(names):
    """Real photos at 64×64, each with the face regions of its own pose: ``(images, RegionBatch, scores)``."""
    import torch

    from .core.regions import RegionBatch

    images, regions, scores = [], [], []
    for name in names:
        image = _photo(name)[None]
        scored, values = score_faces(image, _poses(name, 1))
        images.append(image[0])
        regions.append(scored.regions[0])
        scores.append(values[0])
    return torch.stack(images), RegionBatch(tuple(regions), ((SIZE, SIZE),) * len(names)), scores


def _degraded_crop_pairs(n: int = 6):
    """Real face crops (chosen) and blurred, washed-out copies (rejected)."""
    from PIL import Image, ImageEnhance, ImageFilter

    from .core.compare import from_pil
    from .core.pairs import PairRecord

    sources = [Image.open(DATA / name).convert("RGB") for name in ("trainer_astronaut_face.png",
                                                                  "trainer_camera_face.png")]
    pairs = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        dx, dy = (i * 5) % max(1, w - h), (i * 3) % 4  # a few distinct crops per photo
        real = src.crop((dx, dy, dx + h - 4, dy + h - 4)).resize((SIZE, SIZE), Image.BICUBIC)
        bad = ImageEnhance.Contrast(real.filter(ImageFilter.GaussianBlur(2.5))).enhance(0.5)
        pairs.append(PairRecord("a photo of a face", from_pil(real), from_pil(bad), chosen_source="real"))
    return pairs


def _faces(regions, i: int) -> list:
    return [list(r.box) for r in regions.regions[i] if r.label == "face"]


def pairs_step(out: Path, generated, gen_regions, gen_scores, real, real_regions, real_scores) -> Path:
    """Real winners vs the worst generated images, best vs worst generated, real vs degraded crops."""
    from .core.pairs import PairRecord, append_pairs, choose_pairs, choose_real_pairs

    records = []
    for r, g in choose_real_pairs(gen_scores, real.shape[0], max_pairs=2):
        records.append(PairRecord(PROMPT, real[r], generated[g], chosen_source="real",
                                  face_boxes={"chosen": _faces(real_regions, r), "rejected": _faces(gen_regions, g)}))
    for w, l in choose_pairs(gen_scores, max_pairs=1):
        records.append(PairRecord(PROMPT, generated[w], generated[l],
                                  face_boxes={"chosen": _faces(gen_regions, w), "rejected": _faces(gen_regions, l)}))
    records += _degraded_crop_pairs()
    folder = out / "pairs"
    result = append_pairs(folder, records)
    print(f"[pairs] face sharpness: real photos {[round(v, 1) for v in real_scores]}, generated "
          f"{[round(v, 1) for v in gen_scores]}")
    print(f"[pairs] {result.added} pairs added ({result.duplicates} already there): 2 real winners vs the worst "
          f"generated, best vs worst generated, {len(records) - 3} real vs degraded crops → {folder}")
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
    draw.text((pad, 8), f"DPO loss per step: {losses[0]:.4f} -> {losses[-1]:.4f}", fill="black")
    img.save(png)


def train_step(out: Path, model: Path, data: Path, *, steps: int) -> Path:
    """DPO LoRA for ``steps`` steps on the tiny model; returns the LoRA path. A previous demo run's
    ``run/`` folder is replaced (the trainer refuses to start fresh over another run's checkpoints)."""
    import shutil

    from .trainers import train
    from .trainers.config import load_config

    if (out / "run").exists():
        print(f"[train] replacing the previous demo run in {out / 'run'}")
        shutil.rmtree(out / "run")
    config = load_config("dpo", overrides=[
        f"base={model}", f"data={data}", f"out={out / 'run'}", f"steps={steps}", f"resolution={SIZE}",
        "batch_size=2", "rank=4", "alpha=4", "learning_rate=1e-3", f"checkpoint_every={steps}", "name=demo-dpo"])
    result = train(config)
    print(f"[train] {result.steps} DPO steps, final loss {result.final_loss:.4f}, implicit accuracy "
          f"{result.metrics.get('implicit_acc', float('nan')):.2f}")
    plot_losses(result.out_dir / "progress.jsonl", out / "loss_curve.png")
    return result.lora_path


def apply_lora(pipe, lora: Path) -> None:
    """The trained LoRA on the pipeline's UNet (peft layers, the file's rank, alpha and targets)."""
    from .core.lora_io import load_lora_state
    from .trainers.models import add_lora, apply_lora_state

    state = load_lora_state(lora)
    add_lora(pipe.unet, rank=state.rank, alpha=state.alpha, targets=tuple(state.config["lora_targets"]))
    apply_lora_state(pipe.unet, state.unet)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitruvian.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (created)")
    parser.add_argument("--steps", type=int, default=4, help="DPO steps on the tiny model")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    STAGES.clear()
    started = time.perf_counter()

    with stage("pose"):
        preview = pose_step(out)
    with stage("model"):
        from tests.tiny import make_tiny_diffusers_folder  # the test kit: seeded random tiny SD1.5 model

        model = out / "tiny_model"
        if not (model / "model_index.json").exists():
            make_tiny_diffusers_folder(model)
        pipe = load_pipeline(model)
    with stage("generate"):
        before = generate(pipe)
    with stage("score"):
        gen_regions, gen_scores = score_faces(before, _poses("astronaut.png", len(before)))
        real, real_regions, real_scores = score_photos(("astronaut.png", "camera.png"))
    with stage("pairs"):
        data = pairs_step(out, before, gen_regions, gen_scores, real, real_regions, real_scores)
    with stage("train"):
        lora = train_step(out, model, data, steps=args.steps)
    with stage("after"):
        apply_lora(pipe, lora)
        after = generate(pipe)
        _, after_scores = score_faces(after, _poses("astronaut.png", len(after)))
    with stage("compare"):
        from .core.compare import before_after_grid, score_plot

        grid = _save(before_after_grid(before, after, scores_before=gen_scores, scores_after=after_scores),
                     out / "compare_grid.png")
        plot = _save(score_plot(gen_scores, after_scores, name="face sharpness"), out / "compare_scores.png")
    changed = float((after - before).abs().mean())
    print(f"[after] same prompt and seeds with the LoRA: mean pixel change {changed:.4f}; face sharpness "
          f"{[round(v, 1) for v in gen_scores]} → {[round(v, 1) for v in after_scores]}")

    print("\nOutputs:")
    print(f"  pose preview      {preview}")
    print(f"  pairs dataset     {data}  (metadata.jsonl + images/)")
    print(f"  LoRA              {lora}  (kohya keys: drop it into ComfyUI/models/loras)")
    print(f"  loss curve        {out / 'loss_curve.png'}")
    print(f"  before / after    {grid}")
    print(f"  score plot        {plot}")
    print("\nTime per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in STAGES.items())
          + f"; total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
