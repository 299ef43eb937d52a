"""Pure objective math: per-sample diffusion losses (``(B,)`` tensors), no models, no I/O."""
from .losses import CONVENTIONS, NORMS, denoise_error, dpo_loss, weighted_mse

__all__ = ["CONVENTIONS", "NORMS", "denoise_error", "dpo_loss", "weighted_mse"]
