"""HG-DPO's curriculum: pair folders per stage (pools, reconstructions, real winners) and the stage runner."""
from __future__ import annotations

from .runner import HGDPOCurriculum, build_stage_pairs, combine_lora_files, stage_plan

__all__ = ["HGDPOCurriculum", "build_stage_pairs", "combine_lora_files", "stage_plan"]
