"""``pose-adapter``: train a pose-graph adapter (GRPose, methods.md §5) beside the frozen UNet.

Per sample: draw (t, ε), noise the latent, drop the prompt with probability ``proportion_empty_prompts``
(GRPose: 0.5), run the adapter on the pose and feed its residuals to the UNet, then

    loss = mean((α·M + (1 − M)) ⊙ (ε̂ − ε)²) + λ_p · ᾱ_t · ‖φ(D(x̂0)) − φ(D(x0))‖²

with M the blurred-skeleton latent mask (α = 5) and, when ``perception_weight`` λ_p > 0, a pose
perception term through a *torch* pose network φ on the VAE-decoded x̂0, so the term has a real gradient
(GRPose's released code has none; methods.md §5(g)). The reference image is the decoded clean latent
D(x0) (no pixels are carried past the latent cache); ᾱ_t makes low-noise steps count more. φ is read
from the ``pose_net`` file (:mod:`vitruvian.core.pose_adapter.pose_net`).

Only the adapter trains. The objective owns it through the loop's optional hooks
(:mod:`.base`): ``prepare_base`` (the VAE decoder for φ), ``setup`` (build the adapter from the UNet and
return its parameters; no LoRA is added), ``modules`` (what the loop accelerate-prepares and hands back
as ``ctx.modules``), ``export``/``restore`` (a pose-adapter file: checkpoints, ``<name>-step<N>`` and the
final ``<name>.safetensors``, loadable by ``VitruvianLoadPoseAdapter``) and ``check_dataset`` (every
record carries a ``pose``). From the command line::

    vitruvian-train pose-adapter --config trainers/configs/pose-adapter.toml --set base=... --set data=...

From Python without the loop::

    objective = PoseAdapterObjective(alpha=5.0, perception_weight=0.5, pose_net=net, decode=decode)
    params = objective.setup(unet)                 # the adapter, initialised from the UNet's encoder
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    out = objective(batch, ctx); out.loss.backward(); optimizer.step()

Batch: the loop's model-ready batch (``latents (B, 1, C, h, w)``, ``cond``) plus ``pose``: one
:class:`~vitruvian.core.pose.PoseFrame` per sample (or a ``PoseBatch``) in the coordinates of the
training crop, after the same flip/crop as the image (``trainers.data.poses`` does this).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...core.errors import ConfigError, DatasetError
from ...core.pose import PoseBatch
from ...core.pose_adapter.losses import pose_masked_error, pose_perception_loss, skeleton_mask
from ...core.pose_adapter.pose_encoder import prepare_pose_condition
from ..config_values import setting, show
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, sample_noise

__all__ = ["PoseAdapterOptions", "PoseAdapterObjective", "AdapterStep", "MODULE"]

#: The name of the trained module in ``modules`` / ``ctx.modules``.
MODULE = "pose_adapter"


def _unwrap(module):
    return getattr(module, "module", module)  # DDP / accelerate wrappers


@dataclass(frozen=True, kw_only=True)
class PoseAdapterOptions:
    """pose-adapter's settings, merged into ``TrainConfig`` (``pose_*``, ``perception_weight``)."""

    pose_mask_alpha: float = setting(5.0, "Loss weight alpha on the latent cells the blurred skeleton covers (1 "
                                     "elsewhere; GRPose: 5).", group="pose", ge=1)
    pose_mask_kernel: int = setting(13, "Gaussian blur kernel (odd, pixels) applied to the rendered skeleton "
                                    "before it becomes the latent mask (GRPose: 13).", group="pose", ge=1)
    pose_mask_sigma: float = setting(3.0, "Gaussian blur sigma (pixels) of that mask (GRPose: 3).", group="pose",
                                     gt=0)
    perception_weight: float = setting(0.0, "lambda_p of the pose perception loss ||phi(D(x0_hat)) - phi(D(x0))||^2 "
                                       "weighted by alpha_bar_t; 0 = off, no pose network needed (GRPose: 0.5).",
                                       group="pose", ge=0)
    pose_net: str = setting("", "Pose network phi of the perception loss: a vitruvian.pose_net .safetensors file "
                            "(see docs/methods.md); required when perception_weight > 0.", group="pose", path=True)
    pose_graph: bool = setting(True, "Train the pose-graph adapter (GRPose's graph layers); false = a plain "
                               "ControlNet of the same depth.", group="pose")
    pose_graph_levels: tuple[int, ...] = setting((), "UNet levels whose first res block is a graph integrator "
                                                 "(comma-separated; empty = every level).", group="pose")
    pose_graph_reduction: int = setting(4, "The graph layers run at width C / this (1 = GRPose's full width; 4 keeps "
                                        "the adapter near a ControlNet's cost).", group="pose", ge=1)
    pose_knn: int = setting(9, "Neighbours k of the dynamic kNN graph (GRPose: 9).", group="pose", ge=1)
    pose_knn_chunk: int = setting(1024, "kNN query rows per chunk (memory: chunk x latent positions).",
                                  group="pose", ge=1)
    pose_skeleton_dim: int = setting(32, "Channels of the skeleton-graph embedding (joint and bone identities).",
                                     group="pose", ge=1)
    pose_channels: tuple[int, ...] = setting((), "Pose-encoder width per UNet level (comma-separated; empty = "
                                             "GRPose's 192,256,384,512).", group="pose")

    def option_problems(self) -> list[str]:
        """Cross-field rules of these settings (``TrainConfig`` calls it)."""
        problems = []
        if self.pose_mask_kernel % 2 == 0:
            problems.append(f"pose_mask_kernel must be an odd integer >= 1, got {self.pose_mask_kernel}; "
                            f"fix: --set pose_mask_kernel={self.pose_mask_kernel + 1}")
        if self.objective == "pose-adapter" and self.perception_weight > 0 and not self.pose_net:
            problems.append(f"pose_net must be set when perception_weight > 0 (got {self.perception_weight}), got ''; "
                            "fix: --set pose_net=<phi.safetensors> or --set perception_weight=0")
        if any(lv < 0 for lv in self.pose_graph_levels) or (self.pose_graph_levels and not self.pose_graph):
            problems.append(f"pose_graph_levels must be level indices >= 0 and empty when pose_graph is false, got "
                            f"{self.pose_graph_levels!r} (pose_graph={show(self.pose_graph)}); fix: --set "
                            "pose_graph_levels=")
        if any(c < 1 for c in self.pose_channels):
            problems.append(f"pose_channels must be positive widths, one per UNet level, got {self.pose_channels!r}; "
                            "fix: --set pose_channels=192,256,384,512")
        return problems


class AdapterStep(nn.Module):
    """One adapter evaluation in a single ``forward``: pose features, then the residuals.

    Everything that uses adapter weights runs inside this ``forward``, so accelerate's autocast and DDP's
    gradient bookkeeping (which wrap ``forward``) see every parameter.

    Shape:
        x_t ``(B, 4, h, w)``, t ``(B,)``, context ``(B, L, D)``, condition a :class:`PoseCondition` for
        ``(h, w)``, added SDXL ``added_cond_kwargs`` or None → ``{"down_block_additional_residuals": (...),
        "mid_block_additional_residual": ...}`` (keyword arguments of the diffusers UNet)
    """

    def __init__(self, adapter: nn.Module):
        super().__init__()
        self.adapter = adapter

    def forward(self, x_t, t, context, condition, added=None) -> dict:
        a = self.adapter
        feats = a.encode_pose(condition)
        residuals = a(x_t, t, context, feats, added_embeds=a.added_embeds(**added) if added else None)
        return residuals.to_diffusers()


@dataclass
class PoseAdapterObjective:
    """Pose-masked denoising loss plus an optional differentiable pose perception loss.

    Args:
        alpha: weight of the skeleton's latent cells (GRPose: 5).
        mask_kernel, mask_sigma: the Gaussian blur of the skeleton mask (GRPose: 13, 3).
        perception_weight: λ_p (GRPose's pose-loss config: 0.5; 0 disables the term).
        pose_net: frozen torch pose network φ, images ``(B, 3, H, W)`` in [0, 1] → features.
        decode: latents ``(B, 4, h, w)`` → images ``(B, 3, H, W)`` in [-1, 1], differentiable (the VAE decoder);
            :meth:`prepare_base` sets it from the loop's base model.
        proportion_empty_prompts: GRPose drops half the prompts.
        pose_options: config fields of a new adapter (``graph_reduction``, ``skeleton_dim``, …).
        adapter: the trainable adapter (set by :meth:`setup`, or given).
    """

    alpha: float = 5.0
    mask_kernel: int = 13
    mask_sigma: float = 3.0
    perception_weight: float = 0.0
    pose_net: torch.nn.Module | None = None
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    proportion_empty_prompts: float = 0.5
    pose_options: dict = field(default_factory=dict)
    adapter: Any = None

    name = "pose-adapter"
    images_per_sample = 1
    needs_reference = False
    #: the loop's hooks for objectives that own their trainable modules (see ``base``)
    wants_lora = False
    export_name = "pose_adapter.safetensors"
    output_kind = "pose adapter"
    output_file = "{name}.safetensors"
    #: settings that shape the adapter: a resumed run must keep them
    resume_identity = ("pose_graph", "pose_graph_levels", "pose_graph_reduction", "pose_skeleton_dim", "pose_channels")

    def __post_init__(self):
        if self.alpha < 1:
            raise ConfigError(f"pose-adapter: alpha must be >= 1 (the skeleton weighs more), got {self.alpha}")
        if self.perception_weight < 0:
            raise ConfigError(f"pose-adapter: perception_weight must be >= 0, got {self.perception_weight}")
        if self.perception_weight > 0 and self.pose_net is None:
            raise ConfigError("pose-adapter: perception_weight > 0 needs pose_net (a torch pose network, see "
                              "vitruvian.core.pose_adapter.pose_net); pass one or set perception_weight = 0")

    @classmethod
    def from_config(cls, config: Any = None) -> "PoseAdapterObjective":
        """Pose-masked denoising loss plus an optional differentiable pose perception loss (GRPose adapter)."""
        if config is None:
            return cls()
        pose_net = None
        if config.perception_weight > 0:
            from ...core.pose_adapter.pose_net import load_pose_net

            pose_net = load_pose_net(config.pose_net)  # checked here, before any model loads
        options = dict(graph=config.pose_graph, skeleton_dim=config.pose_skeleton_dim,
                       graph_reduction=config.pose_graph_reduction, knn=config.pose_knn, knn_chunk=config.pose_knn_chunk)
        if config.pose_graph_levels:
            options["graph_levels"] = tuple(config.pose_graph_levels)
        if config.pose_channels:
            options["pose_channels"] = tuple(config.pose_channels)
        return cls(alpha=config.pose_mask_alpha, mask_kernel=config.pose_mask_kernel, mask_sigma=config.pose_mask_sigma,
                   perception_weight=config.perception_weight, pose_net=pose_net,
                   proportion_empty_prompts=config.proportion_empty_prompts, pose_options=options)

    # -- the loop's hooks -------------------------------------------------------------------------------

    def check_dataset(self, records: Sequence[Any]) -> None:
        """Every record must carry a ``pose`` (called with ``validate_dataset``'s records, before models load)."""
        if not records:
            raise DatasetError("pose-adapter: data must be a metadata.jsonl folder of single images with a 'pose' "
                               "field, got a Pick-a-Pic parquet folder (no keypoints); fix: see "
                               "vitruvian.trainers.data.poses")
        missing = [r.line for r in records if r.pose is None and r.pose_json is None]
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (f", ... ({len(missing)} lines)" if len(missing) > 20 else "")
            raise DatasetError(f"pose-adapter: every record must carry a 'pose' (the keypoints of its image), got "
                               f"{len(missing)} without one: line(s) {shown}; fix: add \"pose\": \"poses/<file>.json\" "
                               "(or inline keypoint JSON) to single-image records, see vitruvian.trainers.data.poses")

    def prepare_base(self, base: Any) -> None:
        """Before :meth:`setup`: take the base's VAE decoder for φ and move φ to the VAE's device."""
        if self.perception_weight <= 0:
            return
        from ..models import decode_latents

        p = next(base.vae.parameters())
        if self.decode is None:
            self.decode = lambda z: decode_latents(base, z.to(p.dtype)).float()
        self.pose_net.to(p.device)

    def setup(self, unet: torch.nn.Module) -> list[torch.nn.Parameter]:
        """Build the adapter from ``unet`` (its encoder copied, outputs at zero) and return its parameters."""
        from ...core.pose_adapter import PoseGraphAdapter

        unet = _unwrap(unet)
        self.adapter = PoseGraphAdapter.from_unet(unet, **self.pose_options).to(unet.device).float().train()
        if self.pose_net is not None:
            self.pose_net.requires_grad_(False).eval()
        return [p for p in self.adapter.parameters() if p.requires_grad]

    @property
    def modules(self) -> dict[str, nn.Module]:
        """``{"pose_adapter": AdapterStep}`` after :meth:`setup`, else ``{}``."""
        if self.adapter is None:
            return {}
        if getattr(self, "_step", None) is None or self._step.adapter is not self.adapter:
            self._step = AdapterStep(self.adapter)
        return {MODULE: self._step}

    def export(self, path: str | os.PathLike, *, config: Mapping[str, Any], step: int) -> Path:
        """Write the adapter as a pose-adapter file (``core.pose_adapter.io``, fp32, atomic)."""
        from ...core.pose_adapter.io import save_pose_adapter

        return save_pose_adapter(path, self.adapter, source=f"vitruvian-train pose-adapter, base {config.get('base', '')}",
                                 metadata={"vitruvian_config": json.dumps(dict(config), sort_keys=True),
                                           "vitruvian_step": str(step)})

    def restore(self, path: str | os.PathLike) -> None:
        """Copy the weights of an exported file into the adapter in place (fp32: bit-exact)."""
        from ...core.pose_adapter.io import load_pose_adapter

        loaded = load_pose_adapter(path)
        if loaded.config != self.adapter.config:
            raise ConfigError(f"pose-adapter: the checkpoint's adapter {Path(path)} must have this run's shape, got "
                              f"{loaded.config} vs {self.adapter.config}; fix: resume with the checkpoint's settings")
        self.adapter.load_state_dict(loaded.state_dict())  # copies into the existing tensors

    # -- the loss ---------------------------------------------------------------------------------------

    def _poses(self, batch: Mapping[str, Any]) -> PoseBatch:
        pose = batch.get("pose")
        if pose is None or (not isinstance(pose, PoseBatch) and any(p is None for p in pose)):
            raise ConfigError("pose-adapter: batch must carry 'pose' (one PoseFrame per sample, in the training "
                              "crop's coordinates), got none; the dataset records need a 'pose' field")
        return pose if isinstance(pose, PoseBatch) else PoseBatch(tuple(pose))

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        if self.adapter is None:
            raise ConfigError("pose-adapter: call objective.setup(unet) before the first step; it creates the "
                              "adapter and returns the parameters to optimise")
        if self.perception_weight > 0 and self.decode is None:
            raise ConfigError("pose-adapter: perception_weight > 0 needs decode (the VAE decoder), got none; pass "
                              "decode= or call objective.prepare_base(base) first")
        adapter = self.adapter
        step = ctx.modules.get(MODULE)  # the loop's prepared (autocast / DDP) wrapper
        if step is None:
            step = AdapterStep(adapter)
        x0 = batch["latents"][:, 0]  # (B, C, h, w)
        b, size = x0.shape[0], tuple(x0.shape[-2:])
        poses = self._poses(batch)
        if len(poses) != b:
            raise ConfigError(f"pose-adapter: batch must have one pose per sample ({b}), got {len(poses)}")
        t = ctx.process.sample_t(b, ctx.generator)
        noise = sample_noise(x0, ctx.generator)
        cond = drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts, ctx.generator)
        x_t, target = ctx.process.add_noise(x0, noise, t)

        condition = prepare_pose_condition(poses, size, adapter.skeleton, where="pose-adapter objective")
        residuals = step(x_t, t.to(x_t.device), cond["encoder_hidden_states"], condition, cond.get("added_cond_kwargs"))
        pred = ctx.process.predict(ctx.unet, x_t, t, {**cond, **residuals})

        mask = skeleton_mask(condition.hint, size, kernel=self.mask_kernel, sigma=self.mask_sigma).to(x0.device)
        err = pose_masked_error(pred, target, mask, alpha=self.alpha)  # (B,)
        per_sample = err
        metrics = {"mse_masked": err.mean().detach(), "mask_fraction": mask.mean().detach()}
        if self.perception_weight > 0:
            x0_hat = ctx.process.predicted_x0(x_t, pred, t)
            image = (self.decode(x0_hat) + 1) / 2  # [-1, 1] → [0, 1]; no clamp: it would cut the gradient
            with torch.no_grad():
                reference = ((self.decode(x0) + 1) / 2).clamp(0, 1)
            percept = pose_perception_loss(self.pose_net, image, reference)  # (B,)
            weight = ctx.process.signal_level(t, x0.device)
            per_sample = err + self.perception_weight * weight * percept
            metrics["pose_perception"] = percept.mean().detach()
        loss = per_sample.mean()
        return ObjectiveOutput(loss=loss, per_sample=per_sample.detach(), metrics=metrics)
