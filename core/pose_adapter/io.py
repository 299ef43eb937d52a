"""Pose-adapter files: safetensors weights with the config and vocabularies in the metadata; an ``init`` CLI.

A file holds the adapter's full state dict plus metadata::

    format          "vitruvian.pose_adapter"      format_version  "1"
    config          PoseAdapterConfig as JSON      joint_vocab / bone_vocab  JSON lists (table rows)
    source          what the weights were initialised from (free text)
    (trained files) vitruvian_config  the trainer's resolved config as JSON; vitruvian_step  optimizer steps

Writes are atomic (a temp file in the same folder, then ``os.replace``); reads check the format and
load the weights strictly, naming missing and unexpected tensors.

Create an untrained adapter for a checkpoint (its encoder copied, every output convolution at zero, so it
leaves sampling unchanged until trained)::

    python -m vitruvian.core.pose_adapter.io init --unet sd15.safetensors --out pose_adapter.safetensors
    python -m vitruvian.core.pose_adapter.io init --unet diffusers_model/unet --out a.safetensors --plain

``--unet`` takes a single-file LDM checkpoint (``.safetensors``) or a diffusers UNet folder.
``--perturb STD`` fills the zero convolutions with seeded noise (a stand-in for a trained adapter, tests only).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..atomic import atomic_save_safetensors
from ..errors import ConfigError, ModelNotFoundError
from .config import PoseAdapterConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "save_pose_adapter", "load_pose_adapter", "read_pose_adapter_metadata",
           "init_pose_adapter", "main"]

FORMAT = "vitruvian.pose_adapter"
FORMAT_VERSION = "1"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def save_pose_adapter(path: str | os.PathLike, adapter, *, dtype: torch.dtype | None = None, source: str = "",
                      metadata: dict[str, str] | None = None) -> Path:
    """Write ``adapter`` (a :class:`~.adapter.PoseGraphAdapter`) to ``path`` atomically; returns the path.

    Args:
        dtype: store the floating tensors in this dtype (default: as they are).
        source: free text kept in the metadata (e.g. the checkpoint it was initialised from).
        metadata: more string entries for the metadata (e.g. the trainer's ``vitruvian_config``); they may
            not replace the format's own keys.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"save_pose_adapter: path must end in .safetensors, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in adapter.state_dict().items():
        v = v.detach().to("cpu")
        tensors[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": adapter.config.to_json(),
            "joint_vocab": json.dumps(list(adapter.skeleton.joint_vocab)),
            "bone_vocab": json.dumps(list(adapter.skeleton.bone_vocab)), "source": source}
    clash = sorted(set(metadata or {}) & set(meta))
    if clash:
        raise ConfigError(f"save_pose_adapter: metadata must not replace the format's keys, got {clash}")
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    return atomic_save_safetensors(tensors, path, meta)


def read_pose_adapter_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The file's metadata; ConfigError when it is not a pose-adapter file (saying what it seems to be)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"pose adapter {str(path)!r}", [str(path.parent)])
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            first = next(iter(f.keys()), "")
    except Exception as exc:
        raise ConfigError(f"load_pose_adapter: {str(path)!r} must be a .safetensors file, got an unreadable "
                          f"file ({exc})") from exc
    if meta.get("format") != FORMAT:
        hint = " (it looks like a ControlNet/checkpoint; load it with ControlNetLoader)" if first else ""
        raise ConfigError(f"load_pose_adapter: {path.name} must be a Vitruvian pose adapter (metadata format "
                          f"{FORMAT!r}), got format {meta.get('format')!r}{hint}; create one with "
                          "`python -m vitruvian.core.pose_adapter.io init` or the pose-adapter trainer")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"load_pose_adapter: {path.name} has format_version {meta.get('format_version')!r}, this "
                          f"pack reads {FORMAT_VERSION!r}; update the pack")
    return meta


def load_pose_adapter(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                      dtype: torch.dtype | None = None):
    """Read a pose-adapter file into a :class:`~.adapter.PoseGraphAdapter` (eval mode).

    Args:
        device, dtype: where and in which dtype the module lives (default: the stored dtype).
    """
    from safetensors.torch import load_file

    from .adapter import PoseGraphAdapter

    meta = read_pose_adapter_metadata(path)
    config = PoseAdapterConfig.from_dict(json.loads(meta["config"]), where="load_pose_adapter")
    with torch.device("meta"):
        adapter = PoseGraphAdapter(config, joint_vocab=json.loads(meta["joint_vocab"]),
                                   bone_vocab=json.loads(meta["bone_vocab"]))
    state = load_file(str(path), device=str(device))
    own = adapter.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ConfigError(f"load_pose_adapter: {Path(path).name} must hold exactly the tensors its config describes, "
                          f"got {len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                          f"{len(wrong)} mis-shaped {wrong[:3]}; the file is damaged or was edited")
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    adapter.load_state_dict(state, assign=True)
    return adapter.eval()


def init_pose_adapter(unet: str | os.PathLike, *, seed: int = 0, perturb: float = 0.0, **pose_options):
    """An untrained adapter initialised from a UNet: a single-file checkpoint or a diffusers UNet folder.

    ``seed`` seeds the new (non-UNet) weights; ``perturb`` > 0 fills the zero convolutions with N(0, perturb²).
    """
    path = Path(unet)
    torch.manual_seed(seed)
    if path.is_dir():
        from diffusers import UNet2DConditionModel

        from .adapter import PoseGraphAdapter

        adapter = PoseGraphAdapter.from_unet(UNet2DConditionModel.from_pretrained(str(path)), **pose_options)
    elif path.is_file():
        from .ldm import adapter_from_ldm

        adapter = adapter_from_ldm(path, **pose_options)
    else:
        raise ModelNotFoundError(f"UNet {str(path)!r} (a .safetensors checkpoint or a diffusers UNet folder)",
                                 [str(path.parent)])
    if perturb > 0:
        adapter.perturb_zero_init_(perturb, seed=seed)
    return adapter.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitruvian.core.pose_adapter.io",
                                     description="Create pose-adapter files.")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="An untrained adapter initialised from a UNet's encoder.")
    init.add_argument("--unet", required=True, help="Single-file .safetensors checkpoint or diffusers UNet folder.")
    init.add_argument("--out", required=True, help="Output .safetensors path.")
    init.add_argument("--plain", action="store_true", help="A plain ControlNet (no graph layers), for comparison.")
    init.add_argument("--seed", type=int, default=0, help="Seed of the new weights.")
    init.add_argument("--perturb", type=float, default=0.0, help="Fill zero convolutions with N(0, STD²) (tests).")
    init.add_argument("--skeleton-dim", type=int, default=32, help="Skeleton embedding width D.")
    init.add_argument("--knn-chunk", type=int, default=1024, help="kNN query rows per chunk.")
    init.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32", help="Stored dtype.")
    args = parser.parse_args(argv)
    adapter = init_pose_adapter(args.unet, seed=args.seed, perturb=args.perturb, graph=not args.plain,
                                skeleton_dim=args.skeleton_dim, knn_chunk=args.knn_chunk)
    out = save_pose_adapter(args.out, adapter, dtype=_DTYPES[args.dtype], source=os.path.basename(args.unet))
    n = sum(p.numel() for p in adapter.parameters())
    print(f"wrote {out} ({n / 1e6:.1f}M parameters, {'plain ControlNet' if args.plain else 'pose-graph adapter'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
