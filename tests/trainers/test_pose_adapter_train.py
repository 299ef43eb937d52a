"""``vitruvian-train pose-adapter`` end to end on the tiny diffusers model: pose records, flips, the loop, resume.

Datasets are real PNG folders whose records carry keypoints (POSE_KEYPOINT files and inline JSON); the
perception loss's pose network is a tiny seeded :class:`HeatmapPoseNet` saved at test time.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vitruvian.core.errors import ConfigError, DatasetError
from vitruvian.core.pose import Part, Person, PoseFrame, get_format, mirror_frame, mirror_permutation
from vitruvian.core.pose.formats import FORMATS

from .objective_kit import CONFIGS

COCO18 = get_format("coco18").joints
SIZE = (96, 64)  # W, H of the source images: resized to 96 x 64 at R = 64, centre crop x = 16
TINY_POSE = ["--set", "pose_channels=32,64", "--set", "pose_skeleton_dim=4", "--set", "pose_graph_reduction=2"]


def _body(rng: np.random.Generator) -> list[float]:
    """coco18 ``pose_keypoints_2d``: every joint inside the centre crop (x in [24, 72), y in [8, 56))."""
    return [v for _ in COCO18 for v in (float(rng.uniform(24, 72)), float(rng.uniform(8, 56)), 1.0)]


def _hand(x: float, y: float) -> list[float]:
    return [v for j in range(21) for v in (x + (j % 5), y + j // 5, 0.9)]


def pose_json(body: list[float], *, left_hand: list[float] | None = None, size=SIZE) -> list[dict]:
    person = {"pose_keypoints_2d": body}
    if left_hand is not None:
        person["hand_left_keypoints_2d"] = left_hand
    return [{"people": [person], "canvas_width": size[0], "canvas_height": size[1]}]


def make_pose_folder(root, n: int = 4, *, seed: int = 0, size=SIZE) -> Path:
    """``n`` single-image records with a coco18 body each; even records name a pose file, odd ones inline it."""
    from PIL import Image

    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "poses").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        pose = pose_json(_body(rng), left_hand=_hand(30, 20) if i == 0 else None, size=size)
        record = {"prompt": "a photo of a person", "image": f"img/{i}.png"}
        if i % 2:
            record["pose"] = pose
        else:
            (root / "poses" / f"{i}.json").write_text(json.dumps(pose), encoding="utf-8")
            record["pose"] = f"poses/{i}.json"
        lines.append(record)
    (root / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return root


def tiny_pose_net(path) -> Path:
    from vitruvian.core.pose_adapter.pose_net import HeatmapPoseNet, PoseNetConfig, save_pose_net

    torch.manual_seed(1)
    return save_pose_net(path, HeatmapPoseNet(PoseNetConfig(channels=(8,), input_size=32)))


def _progress(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]


# ---- data: pose records, augmentation, collate ----------------------------------------------------------


def test_smoke_pose_records_items_and_collate(tmp_path):
    from vitruvian.core.pose import PoseBatch
    from vitruvian.trainers.data import collate, open_dataset, validate_dataset

    data = make_pose_folder(tmp_path / "data", 3)
    records = validate_dataset(data)
    assert [r.pose is not None for r in records] == [True, False, True]
    assert [r.pose_json is not None for r in records] == [False, True, False]
    ds = open_dataset(data, resolution=64, random_flip=False, random_crop=False, seed=0)
    items = [ds[i] for i in range(3)]
    frame = items[0]["pose"]
    assert isinstance(frame, PoseFrame) and (frame.canvas_width, frame.canvas_height, frame.space) == (64, 64, "pixels")
    source = json.loads((data / "poses" / "0.json").read_text())[0]["people"][0]["pose_keypoints_2d"]
    expected = torch.tensor(source).view(18, 3) - torch.tensor([16.0, 0.0, 0.0])  # centre crop of 96 x 64
    assert torch.allclose(frame.people[0].body.keypoints, expected)
    batch = collate(items)
    assert isinstance(batch["pose"], PoseBatch) and len(batch["pose"]) == 3
    plain = {k: v for k, v in items[1].items() if k != "pose"}
    assert collate([plain])["pose"] is None and collate([items[0], plain])["pose"][1] is None
    # the keypoints are part of the content key: another pose file is another item
    other = make_pose_folder(tmp_path / "other", 3)
    (other / "poses" / "0.json").write_text(json.dumps(pose_json([1.0, 1.0, 1.0] * 18)))
    assert open_dataset(other, resolution=64, random_flip=False, random_crop=False, seed=0)[0]["key"] != items[0]["key"]


def test_exception_bad_pose_records_in_one_error(tmp_path):
    from vitruvian.trainers.data import validate_dataset

    data = make_pose_folder(tmp_path / "data", 1)
    good = json.loads((data / "metadata.jsonl").read_text())
    frame = pose_json([30.0, 30.0, 1.0] * 18)[0]
    bad_values = ["poses/missing.json", {"people": 5}, [{"people": [], "canvas_width": 96, "canvas_height": 64}],
                  [frame, frame], 3, "{not json"]
    lines = [good] + [dict(good, pose=v) for v in bad_values]
    (data / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(DatasetError) as info:
        validate_dataset(data)
    text = str(info.value)
    assert "got 6 bad line(s)" in text and "line 1:" not in text
    for line, pattern in [(2, r"pose: file not found 'poses/missing.json'"),
                          (3, r"pose: load_pose: .*people"),
                          (4, r"pose: must hold at least one person, got none"),
                          (5, r"pose: must hold the poses of exactly one image, got 2 images"),
                          (6, r"pose must be a path to a keypoint JSON file .* got 3"),
                          (7, r"pose: load_pose: json_text is not valid JSON")]:
        assert any(ln.startswith(f"  line {line}: ") and re.search(pattern, ln)
                   for ln in text.splitlines()), (line, pattern, text)


def test_exception_pose_adapter_needs_a_pose_in_every_record(tmp_path):
    """Checked before any model loads: the base path does not even exist."""
    from vitruvian.trainers import train
    from vitruvian.trainers.config import TrainConfig

    data = make_pose_folder(tmp_path / "data", 3)
    lines = [json.loads(x) for x in (data / "metadata.jsonl").read_text().splitlines()]
    del lines[1]["pose"], lines[2]["pose"]
    (data / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = TrainConfig(objective="pose-adapter", base=str(tmp_path / "no-model"), data=str(data),
                      out=str(tmp_path / "out"), steps=1)
    with pytest.raises(DatasetError, match=r"every record must carry a 'pose'.*got 2 without one: line\(s\) 2, 3"):
        train(cfg)


def test_value_flip_moves_keypoints_with_the_image_and_swaps_left_right(tmp_path):
    """A white square drawn at the left wrist stays under the (now right) wrist after crop + flip."""
    from PIL import Image

    from vitruvian.trainers.data import open_dataset

    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[28:33, 48:53] = 255  # pixels 48..52 x 28..32, centre (50.5, 30.5)
    Image.fromarray(rgb).save(root / "img" / "0.png")
    body = [0.0] * 54
    lw, rw = COCO18.index("left_wrist"), COCO18.index("right_wrist")
    body[3 * lw:3 * lw + 3] = [50.5, 30.5, 1.0]
    body[3 * rw:3 * rw + 3] = [70.0, 40.0, 0.8]
    record = {"prompt": "p", "image": "img/0.png", "pose": pose_json(body, left_hand=_hand(40, 10))}
    (root / "metadata.jsonl").write_text(json.dumps(record) + "\n")

    plain = open_dataset(root, resolution=64, random_flip=False, random_crop=False, seed=0)[0]
    flipping = open_dataset(root, resolution=64, random_flip=True, random_crop=False, seed=0)
    flipped = next(it for it in (flipping[(e, 0)] for e in range(20)) if it["aug"][0])
    a, b = plain["pose"].people[0], flipped["pose"].people[0]
    assert a.body.keypoints[lw].tolist() == [34.5, 30.5, 1.0]  # centre crop: x - 16
    assert b.body.keypoints[rw].tolist() == [64 - 34.5, 30.5, 1.0]  # mirrored, and now the right wrist
    assert b.body.keypoints[lw].tolist() == pytest.approx([64 - 54.0, 40.0, 0.8])
    assert b.right_hand is not None and b.left_hand is None
    assert torch.allclose(b.right_hand.keypoints[:, 0], 64 - a.left_hand.keypoints[:, 0])
    missing = COCO18.index("nose")
    assert b.body.keypoints[missing].tolist() == [0.0, 0.0, 0.0]  # a missing point is not moved to x = 64
    for item, (x, y) in ((plain, (34.5, 30.5)), (flipped, (29.5, 30.5))):  # the square is under the wrist
        assert item["pixels"][0, :, int(y), int(x)].min() > 0.9


def test_value_real_photo_flip_keeps_a_frontal_persons_left_on_the_right(tmp_path):
    """astronaut.png with its real MediaPipe landmarks (inline, normalised): facing the camera, her left
    shoulder is on the image's right; a flipped item shows a person facing the camera too, so with the labels
    swapped the left shoulder is still on the right (without the swap it would jump to the left)."""
    import shutil

    from vitruvian.trainers.data import open_dataset

    tests_data = Path(__file__).resolve().parents[1] / "data"
    astronaut = json.loads((tests_data / "detections.json").read_text())["images"]["astronaut.png"]
    w, h = astronaut["size"]
    landmarks = [{"x": x / w, "y": y / h, "visibility": v} for x, y, v in astronaut["pose_33"]]
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(tests_data / "astronaut.png", root / "astronaut.png")
    record = {"prompt": "a woman", "image": "astronaut.png", "pose": landmarks}
    (root / "metadata.jsonl").write_text(json.dumps(record) + "\n")
    mp = get_format("mediapipe33").joints
    left, right = mp.index("left_shoulder"), mp.index("right_shoulder")
    plain = open_dataset(root, resolution=128, random_flip=False, random_crop=False, seed=0)[0]["pose"]
    flipping = open_dataset(root, resolution=128, random_flip=True, random_crop=False, seed=0)
    flipped = next(it for it in (flipping[(e, 0)] for e in range(20)) if it["aug"][0])["pose"]
    a, b = plain.people[0].body.keypoints, flipped.people[0].body.keypoints
    assert a[left, 0] == pytest.approx(306 / 4) and a[right, 0] == pytest.approx(112 / 4)  # 512 → 128
    assert a[left, 0] > 64 > a[right, 0] and b[left, 0] > 64 > b[right, 0]
    assert b[left].tolist() == pytest.approx([128 - a[right, 0].item(), a[right, 1].item(), a[right, 2].item()])


def test_value_mirror_tables():
    """Every format mirrors onto itself (an involution); the iBUG face reverses its contours."""
    for name in FORMATS:
        perm = mirror_permutation(name)
        assert [perm[i] for i in perm] == list(range(len(perm))), name
    face = get_format("face68").joints
    perm = mirror_permutation("face68")
    pairs = {face[i]: face[perm[i]] for i in range(68)}
    assert pairs["jaw_0"] == "jaw_16" and pairs["nose_bridge_2"] == "nose_bridge_2"
    assert pairs["right_brow_0"] == "left_brow_4" and pairs["right_eye_0"] == "left_eye_3"  # outer corners
    assert pairs["outer_lip_0"] == "outer_lip_6" and pairs["inner_lip_5"] == "inner_lip_7"
    mp = get_format("mediapipe33").joints
    assert {mp[i]: mp[j] for i, j in enumerate(mirror_permutation("mediapipe33"))}["mouth_left"] == "mouth_right"
    g = torch.Generator().manual_seed(0)
    frame = PoseFrame((Person(body=Part("coco17", torch.rand(17, 3, generator=g)),
                              face=Part("face68", torch.rand(68, 3, generator=g)),
                              left_hand=Part("hand21", torch.rand(21, 3, generator=g))),), 1, 1, "normalized")
    assert mirror_frame(mirror_frame(frame)).people[0].equal(frame.people[0])


# ---- config ---------------------------------------------------------------------------------------------


def test_exception_config(tmp_path):
    from vitruvian.trainers.config import load_config
    from vitruvian.trainers.objectives import get_objective

    req = ["base=/m", "data=/d", "out=/o"]
    with pytest.raises(ConfigError, match=r"pose_net must be set when perception_weight > 0 .*fix: --set pose_net="):
        load_config("pose-adapter", CONFIGS / "pose-adapter.toml", [*req, "perception_weight=0.5"])
    with pytest.raises(ConfigError, match=r"pose_mask_kernel must be an odd integer >= 1, got 12; fix: --set "
                                          r"pose_mask_kernel=13"):
        load_config("pose-adapter", None, [*req, "pose_mask_kernel=12"])
    with pytest.raises(ConfigError, match=r"pose_graph_levels must be .* empty when pose_graph is false"):
        load_config("pose-adapter", None, [*req, "pose_graph=false", "pose_graph_levels=0"])
    with pytest.raises(ConfigError, match=r"pose_mask_alpha must be a number >= 1"):
        load_config("pose-adapter", None, [*req, "pose_mask_alpha=0.5"])
    pickle = tmp_path / "phi.pt"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(ConfigError, match=r"pose_net must be a .safetensors file \(pickled .pt/.pth files are refused\)"):
        get_objective("pose-adapter", load_config("pose-adapter", None, [*req, "perception_weight=0.5",
                                                                         f"pose_net={pickle}"]))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match=r"other.safetensors must be a pose network \(metadata format "
                                          r"'vitruvian.pose_net'"):
        get_objective("pose-adapter", load_config("pose-adapter", None, [*req, "perception_weight=0.5",
                                                                         f"pose_net={tmp_path / 'other.safetensors'}"]))
    cfg = load_config("pose-adapter", CONFIGS / "pose-adapter.toml", req)
    obj = get_objective("pose-adapter", cfg)
    assert (obj.alpha, obj.mask_kernel, obj.perception_weight, obj.proportion_empty_prompts) == (5.0, 13, 0.0, 0.5)
    assert obj.pose_options == {"graph": True, "skeleton_dim": 32, "graph_reduction": 4, "knn": 9, "knn_chunk": 1024}


# ---- training -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_value_two_steps_from_the_cli(tmp_path):
    """``vitruvian-train pose-adapter --config trainers/configs/pose-adapter.toml --set ...``: a pose-adapter
    file (final and per checkpoint) with finite losses, a live perception term and changed output convolutions."""
    from safetensors import safe_open

    from vitruvian.core.pose_adapter.io import load_pose_adapter

    from .objective_kit import run_cli

    data, out = make_pose_folder(tmp_path / "data"), tmp_path / "out"
    phi = tiny_pose_net(tmp_path / "phi.safetensors")
    assert run_cli("pose-adapter", data, out, "--set", "perception_weight=0.5", "--set", f"pose_net={phi}",
                   *TINY_POSE) == 0  # the example config's gradient checkpointing stays on
    records = _progress(out)
    assert [r["step"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["metrics"]["pose_perception"] > 0 for r in records)
    assert {p.name for p in out.iterdir()} >= {"vitruvian.safetensors", "vitruvian-step2.safetensors", "config.json"}
    assert not list(out.glob("*lora*"))
    assert {p.name for p in (out / "checkpoints" / "step-2").iterdir()} == {
        "state.json", "pose_adapter.safetensors", "optimizer.pt", "scheduler.pt", "rng-rank0.safetensors"}
    adapter = load_pose_adapter(out / "vitruvian.safetensors")
    assert adapter.config.pose_channels == (32, 64) and adapter.config.graph
    assert adapter.controlnet_mid_block.weight.abs().max() > 0  # zero-initialised, moved by training
    with safe_open(str(out / "vitruvian.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["vitruvian_config"])["objective"] == "pose-adapter" and meta["vitruvian_step"] == "2"
    step2 = load_pose_adapter(out / "vitruvian-step2.safetensors").state_dict()
    assert all(torch.equal(v, step2[k]) for k, v in adapter.state_dict().items())


@pytest.mark.slow
def test_value_perception_gradient_reaches_the_adapter(tmp_path):
    """With the loop's own pieces (base VAE decoder, pose net file, augmented poses from the data), the
    perception term's gradient on the adapter is finite and not zero: same draws, λ_p = 0.5 minus λ_p = 0."""
    from vitruvian.trainers.config import TrainConfig
    from vitruvian.trainers.data import make_loader, open_dataset
    from vitruvian.trainers.latent_cache import BatchEncoder
    from vitruvian.trainers.models import load_base
    from vitruvian.trainers.objectives import ObjectiveContext, get_objective

    from ..tiny import tiny_diffusers_folder

    data = make_pose_folder(tmp_path / "data")
    cfg = TrainConfig(objective="pose-adapter", base=str(tiny_diffusers_folder()), data=str(data), out=str(tmp_path),
                      resolution=64, perception_weight=0.5, pose_net=str(tiny_pose_net(tmp_path / "phi.safetensors")),
                      pose_channels=(32, 64), pose_skeleton_dim=4, pose_graph_reduction=2)
    base = load_base(cfg.base)
    objective = get_objective("pose-adapter", cfg)
    objective.prepare_base(base)
    torch.manual_seed(0)
    params = objective.setup(base.unet)
    loader = make_loader(open_dataset(data, resolution=64, random_flip=True, random_crop=False, seed=0),
                         batch_size=2, seed=0)
    batch = BatchEncoder(base, device="cpu", cache=None)(next(loader))
    grads = []
    for weight in (0.0, 0.5):
        objective.perception_weight = weight
        ctx = ObjectiveContext(unet=base.unet, scheduler=base.scheduler, generator=torch.Generator().manual_seed(3),
                               modules=objective.modules)
        out = objective(batch, ctx)
        assert torch.isfinite(out.loss)
        grads.append(torch.autograd.grad(out.loss, params, allow_unused=True))
    percept = [(b - a) for a, b in zip(*grads) if a is not None and b is not None]
    assert all(torch.isfinite(g).all() for g in percept)
    assert max(g.abs().max() for g in percept) > 0
    assert all(p.grad is None for p in base.unet.parameters())  # the UNet stays frozen


@pytest.mark.slow
def test_value_resume_equals_uninterrupted(tmp_path):
    """4 steps straight == 2 steps, then --resume latest to 4: the same losses and the same adapter."""
    from vitruvian.core.pose_adapter.io import load_pose_adapter

    from .objective_kit import run_cli

    data = make_pose_folder(tmp_path / "data")
    extra = ["--set", "random_flip=true", "--set", "seed=5", "--set", "checkpoint_every=2", *TINY_POSE]
    assert run_cli("pose-adapter", data, tmp_path / "a", "--set", "steps=4", *extra) == 0
    assert run_cli("pose-adapter", data, tmp_path / "b", *extra) == 0  # run_cli's steps=2
    assert run_cli("pose-adapter", data, tmp_path / "b", "--set", "steps=4", "--resume", "latest", *extra) == 0
    a, b = _progress(tmp_path / "a"), _progress(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-6, abs=1e-7)
    assert len({round(r["loss"], 6) for r in a}) > 1
    wa = load_pose_adapter(tmp_path / "a" / "vitruvian.safetensors").state_dict()
    wb = load_pose_adapter(tmp_path / "b" / "vitruvian.safetensors").state_dict()
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa)
    from vitruvian.trainers import train
    from vitruvian.trainers.config import load_config

    with pytest.raises(ConfigError, match=r"(?s)resume must use the settings.*pose_skeleton_dim: checkpoint 4, now 8"):
        train(load_config("pose-adapter", None, [f"base={tmp_path}", f"data={data}", f"out={tmp_path / 'b'}",
                                                 "steps=6", "resume=latest", "random_flip=true", "seed=5",
                                                 "resolution=64", "pose_channels=32,64", "pose_skeleton_dim=8",
                                                 "pose_graph_reduction=2", "proportion_empty_prompts=0.5",
                                                 "batch_size=1", "mixed_precision=no"]))


@pytest.mark.slow
def test_value_objective_may_also_want_a_lora(tmp_path, monkeypatch):
    """``wants_lora = True``: the adapter and a LoRA train together; both are checkpointed, the adapter is the
    run's output and the LoRA is ``<name>-lora.safetensors``."""
    from vitruvian.core.pose_adapter.io import load_pose_adapter
    from vitruvian.trainers import train
    from vitruvian.trainers.config import load_config
    from vitruvian.trainers.models import load_lora_state
    from vitruvian.trainers.objectives import OBJECTIVES, PoseAdapterObjective

    def with_lora(config=None):
        objective = PoseAdapterObjective.from_config(config)
        objective.wants_lora = True
        return objective

    monkeypatch.setitem(OBJECTIVES, "pose-adapter", with_lora)
    from ..tiny import tiny_diffusers_folder

    data, out = make_pose_folder(tmp_path / "data", 2), tmp_path / "out"
    result = train(load_config("pose-adapter", None, [
        f"base={tiny_diffusers_folder()}", f"data={data}", f"out={out}", "steps=2", "resolution=64",
        "learning_rate=1e-3", "pose_channels=32,64", "pose_skeleton_dim=4", "pose_graph_reduction=2", "rank=2"]))
    assert result.lora_path == out / "vitruvian.safetensors" and result.output_kind == "pose adapter"
    assert load_pose_adapter(result.lora_path).controlnet_mid_block.weight.abs().max() > 0
    lora = load_lora_state(out / "vitruvian-lora.safetensors")
    assert lora.step == 2 and any(v.abs().max() > 0 for k, v in lora.unet.items() if "lora_B" in k)
    assert {"lora.safetensors", "pose_adapter.safetensors"} <= {p.name for p in (out / "checkpoints" / "step-2").iterdir()}
    load_pose_adapter(out / "vitruvian-step2.safetensors")


_DDP_DRIVER = '''
import hashlib, json, sys
from pathlib import Path
from vitruvian.trainers import train
from vitruvian.trainers.config import TrainConfig

config = TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
seen = {}
def record(event):
    h = hashlib.sha256()
    for module in event.extras["modules"].values():
        for _, p in sorted(module.named_parameters()):
            h.update(p.detach().cpu().numpy().tobytes())
    seen.update(rank=event.rank, digest=h.hexdigest(), keys=seen.get("keys", []) + list(event.keys))
train(config, callbacks=[record])
Path(config.out, f"rank{seen['rank']}.json").write_text(json.dumps(seen))
'''


@pytest.mark.slow
def test_value_two_processes_keep_one_adapter(tmp_path):
    """DDP on the CPU (gloo, accelerate's torchrun launcher): the frozen UNet is not wrapped, the adapter is;
    the ranks train on disjoint records and end with bit-identical adapters."""
    import os
    import shutil
    import subprocess
    import sys

    from vitruvian.trainers.config import load_config

    import socket

    from ..tiny import tiny_diffusers_folder

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = make_pose_folder(tmp_path / "data", 4)
    base = shutil.copytree(tiny_diffusers_folder(), tmp_path / "base")  # the cached folder dies with this process
    cfg = load_config("pose-adapter", None, [
        f"base={base}", f"data={data}", f"out={tmp_path / 'out'}", "steps=2", "resolution=64", "learning_rate=1e-3",
        "perception_weight=0.5", f"pose_net={tiny_pose_net(tmp_path / 'phi.safetensors')}", "pose_channels=32,64",
        "pose_skeleton_dim=4", "pose_graph_reduction=2", "checkpoint_every=1"])
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "driver.py").write_text(_DDP_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(tmp_path / "driver.py"), str(tmp_path / "cfg.json")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # gradients were all-reduced: one adapter
    assert ranks[0]["keys"] and not set(ranks[0]["keys"]) & set(ranks[1]["keys"])
    assert {"rng-rank0.safetensors", "rng-rank1.safetensors", "pose_adapter.safetensors"} <= {
        p.name for p in (tmp_path / "out" / "checkpoints" / "step-2").iterdir()}
