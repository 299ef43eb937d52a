"""``pose-adapter``: train a pose-graph adapter (GRPose, methods.md §5) beside the frozen UNet.

Per sample: draw (t, ε), noise the latent, drop the prompt with probability ``proportion_empty_prompts``
(GRPose: 0.5), run the adapter on the pose and feed its residuals to the UNet, then

    loss = mean((α·M + (1 − M)) ⊙ (ε̂ − ε)²) + λ_p · ᾱ_t · ‖φ(D(x̂0)) − φ(D(x0))‖²

with M the blurred-skeleton latent mask (α = 5) and, when ``perception_weight`` λ_p > 0, a pose
perception term through a *torch* pose network φ on the VAE-decoded x̂0, so the term has a real gradient
(GRPose's released code has none; methods.md §5(g)). The reference image is the decoded clean latent
D(x0) (no pixels are carried past the latent cache); ᾱ_t makes low-noise steps count more.

Only the adapter trains: :meth:`PoseAdapterObjective.setup` builds it from the UNet and returns its
parameters for the optimizer. The training loop (``trainers.loop``) optimises LoRA parameters only and
does not call ``setup`` yet, so this objective is not in the CLI registry; use it from Python::

    objective = PoseAdapterObjective(alpha=5.0, perception_weight=0.5, pose_net=net, decode=decode)
    params = objective.setup(unet)                 # the adapter, initialised from the UNet's encoder
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    out = objective(batch, ctx); out.loss.backward(); optimizer.step()

Batch: the loop's model-ready batch (``latents (B, 1, C, h, w)``, ``cond``) plus ``pose``: one
:class:`~vitruvian.core.pose.PoseFrame` per sample (or a ``PoseBatch``) in the coordinates of the
training crop, after the same flip/crop as the image (a flip must also swap left/right labels).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ...core.errors import ConfigError
from ...core.pose import PoseBatch
from ...core.pose_adapter.losses import pose_masked_error, pose_perception_loss, predicted_x0, skeleton_mask
from ...core.pose_adapter.pose_encoder import prepare_pose_condition
from .base import ObjectiveContext, ObjectiveOutput
from .noising import drop_prompts, noisy_latents_and_target, predict, sample_noise, sample_timesteps

__all__ = ["PoseAdapterObjective"]


def _unwrap(module):
    return getattr(module, "module", module)  # DDP / accelerate wrappers


@dataclass
class PoseAdapterObjective:
    """Pose-masked denoising loss plus an optional differentiable pose perception loss.

    Args:
        alpha: weight of the skeleton's latent cells (GRPose: 5).
        mask_kernel, mask_sigma: the Gaussian blur of the skeleton mask (GRPose: 13, 3).
        perception_weight: λ_p (GRPose's pose-loss config: 0.5; 0 disables the term).
        pose_net: frozen torch pose network φ, images ``(B, 3, H, W)`` in [0, 1] → features.
        decode: latents ``(B, 4, h, w)`` → images ``(B, 3, H, W)`` in [-1, 1], differentiable (the VAE decoder).
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

    def __post_init__(self):
        if self.alpha < 1:
            raise ConfigError(f"pose-adapter: alpha must be >= 1 (the skeleton weighs more), got {self.alpha}")
        if self.perception_weight < 0:
            raise ConfigError(f"pose-adapter: perception_weight must be >= 0, got {self.perception_weight}")
        if self.perception_weight > 0 and (self.pose_net is None or self.decode is None):
            raise ConfigError("pose-adapter: perception_weight > 0 needs pose_net (a torch pose network) and decode "
                              "(the VAE decoder); pass both or set perception_weight = 0")

    def setup(self, unet: torch.nn.Module) -> list[torch.nn.Parameter]:
        """Build the adapter from ``unet`` (its encoder copied, outputs at zero) and return its parameters."""
        from ...core.pose_adapter import PoseGraphAdapter

        unet = _unwrap(unet)
        self.adapter = PoseGraphAdapter.from_unet(unet, **self.pose_options).to(unet.device).train()
        if self.pose_net is not None:
            self.pose_net.requires_grad_(False).eval()
        return [p for p in self.adapter.parameters() if p.requires_grad]

    def _poses(self, batch: Mapping[str, Any]) -> PoseBatch:
        pose = batch.get("pose")
        if pose is None:
            raise ConfigError("pose-adapter: batch must carry 'pose' (one PoseFrame per sample, in the training "
                              "crop's coordinates), got none; the dataset records need a 'pose' field")
        return pose if isinstance(pose, PoseBatch) else PoseBatch(tuple(pose))

    def __call__(self, batch: Mapping[str, Any], ctx: ObjectiveContext) -> ObjectiveOutput:
        if self.adapter is None:
            raise ConfigError("pose-adapter: call objective.setup(unet) before the first step; it creates the "
                              "adapter and returns the parameters to optimise")
        adapter = self.adapter
        x0 = batch["latents"][:, 0]  # (B, C, h, w)
        b, size = x0.shape[0], tuple(x0.shape[-2:])
        poses = self._poses(batch)
        if len(poses) != b:
            raise ConfigError(f"pose-adapter: batch must have one pose per sample ({b}), got {len(poses)}")
        t = sample_timesteps(b, ctx.scheduler, ctx.generator)
        noise = sample_noise(x0, ctx.generator)
        cond = drop_prompts(batch["cond"], ctx.empty_cond, self.proportion_empty_prompts, ctx.generator)
        x_t, target = noisy_latents_and_target(ctx.scheduler, x0, noise, t)

        condition = prepare_pose_condition(poses, size, adapter.skeleton, where="pose-adapter objective")
        feats = adapter.encode_pose(condition)
        added = cond.get("added_cond_kwargs")
        residuals = adapter(x_t, t.to(x_t.device), cond["encoder_hidden_states"], feats,
                            added_embeds=adapter.added_embeds(**added) if added else None)
        pred = predict(ctx.unet, x_t, t, {**cond, **residuals.to_diffusers()})

        mask = skeleton_mask(condition.hint, size, kernel=self.mask_kernel, sigma=self.mask_sigma).to(x0.device)
        err = pose_masked_error(pred, target, mask, alpha=self.alpha)  # (B,)
        per_sample = err
        metrics = {"mse_masked": err.mean().detach(), "mask_fraction": mask.mean().detach()}
        if self.perception_weight > 0:
            kind = ctx.scheduler.config.prediction_type
            x0_hat = predicted_x0(ctx.scheduler.alphas_cumprod, x_t, pred, t, kind)
            image = (self.decode(x0_hat) + 1) / 2  # [-1, 1] → [0, 1]; no clamp: it would cut the gradient
            with torch.no_grad():
                reference = ((self.decode(x0) + 1) / 2).clamp(0, 1)
            percept = pose_perception_loss(self.pose_net, image, reference)  # (B,)
            weight = ctx.scheduler.alphas_cumprod.to(x0.device)[t.to(x0.device)].float()
            per_sample = err + self.perception_weight * weight * percept
            metrics["pose_perception"] = percept.mean().detach()
        loss = per_sample.mean()
        return ObjectiveOutput(loss=loss, per_sample=per_sample.detach(), metrics=metrics)
