"""What happens to each region, and why: the settings, the per-region decision and the report.

Every region of every image gets one :class:`RegionReport` with a status:

- ``refined``: cropped, re-diffused and pasted (with the chosen variant and the seam metric);
- ``skipped``: with the reason: its label is not selected, it is **too small** (shorter box side
  below ``min_size``), **too large** (its longer side is above ``target_size``, so sampling it would
  shrink it and lose detail), or its **score is above the threshold** (``score_name`` ≥
  ``score_below``);
- ``failed``: the sampler gave no usable pixels (NaN/inf, a wrong shape) or no conditioning covers
  the region; the image keeps its original pixels there.

A region without the gating score is refined and the report says so (score the regions first to
gate them). Nothing is skipped silently: the report is a node output and the node's text.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from ..errors import ConfigError
from ..regions import Region, parse_names
from .crop import MIN_SIDE, CropPlan, plan_crop

__all__ = ["PICKS", "STATUSES", "RefineSettings", "RegionReport", "RefineReport", "decide", "parse_region_prompts"]

#: How the best of several variants is picked: highest sharpness inside the region's shape, lowest
#: seam (colour + gradient after pasting), or the first (variant 0, which starts from the noise a single
#: variant would get).
PICKS = ("sharpness", "seam", "first")
STATUSES = ("refined", "skipped", "failed")
MAX_SIZE = 8192
MAX_VARIANTS = 64


def _int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"RefineSettings: {name} must be an int in [{lo}, {hi}], got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class RefineSettings:
    """Per-region refinement settings (the node's widgets), validated on creation.

    Attributes:
        labels: region labels to refine (a tuple or a comma list; None or empty = all).
        context_factor: context around the box, × its size (≥ 1).
        target_size: pixels the region's longer side is sampled at.
        max_size: largest crop side (≥ target_size); the context is cut to fit.
        min_size: regions whose shorter side is below this many pixels are skipped.
        mask_dilation: grow (> 0) or shrink (< 0) the paste mask, pixels.
        mask_feather: blur radius of the paste mask's edge, pixels.
        score_name: gate on this region score ("" = no gate).
        score_below: refine only regions whose ``score_name`` is below this.
        variants: samples per region; the best is kept (``pick``).
        pick: one of :data:`PICKS`.
        square: every crop the same square size (the split crop → sampler → paste form).

    Example:
        >>> RefineSettings(target_size=256, max_size=512).variants
        1
    """

    labels: tuple[str, ...] | None = ("face", "hand")
    context_factor: float = 2.0
    target_size: int = 512
    max_size: int = 1024
    min_size: int = 16
    mask_dilation: int = 4
    mask_feather: int = 8
    score_name: str = ""
    score_below: float = 0.0
    variants: int = 1
    pick: str = "sharpness"
    square: bool = False

    def __post_init__(self):
        object.__setattr__(self, "labels", parse_names(self.labels))
        cf = float(self.context_factor)
        if not 1.0 <= cf <= 100.0:
            raise ConfigError(f"RefineSettings: context_factor must be in [1, 100] (× the region's box), got {self.context_factor!r}")
        object.__setattr__(self, "context_factor", cf)
        _int(self.target_size, "target_size", MIN_SIDE, MAX_SIZE)
        _int(self.max_size, "max_size", MIN_SIDE, MAX_SIZE)
        if self.max_size < self.target_size:
            raise ConfigError(f"RefineSettings: max_size must be ≥ target_size, got max_size {self.max_size} < "
                              f"target_size {self.target_size}; raise max_size")
        _int(self.min_size, "min_size", 1, MAX_SIZE)
        _int(self.mask_dilation, "mask_dilation", -512, 512)
        _int(self.mask_feather, "mask_feather", 0, 512)
        _int(self.variants, "variants", 1, MAX_VARIANTS)
        if self.pick not in PICKS:
            raise ConfigError(f"RefineSettings: pick must be one of {', '.join(PICKS)}, got {self.pick!r}")
        if not isinstance(self.score_name, str):
            raise ConfigError(f"RefineSettings: score_name must be a str ('' = no gate), got {type(self.score_name).__name__}")
        object.__setattr__(self, "score_name", self.score_name.strip())
        object.__setattr__(self, "score_below", float(self.score_below))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels) if self.labels is not None else None
        return d


@dataclass
class RegionReport:
    """What happened to one region. JSON-safe through :meth:`to_dict`.

    Attributes:
        image, region: indices in the batch (``RegionBatch.flat()`` order); ``index`` is the global
            position, so the region's seed is ``seed + index``.
        status: ``refined`` / ``skipped`` / ``failed``; reason: why (empty when refined plainly).
        crop: the crop geometry (:meth:`CropPlan.to_dict`), when it got that far.
        seam: ``{"colour_before", "colour_after", "gradient_before", "gradient_after"}``.
        variant_scores: the pick score of each variant; chosen: the index kept.
        seconds: time per phase: crop, sampler (all of the sampler call), pick, paste, seam, plus the
            sampler's own phases (the node's: encode, sample, decode).
    """

    image: int
    region: int
    index: int
    label: str
    box: list[float]
    status: str = "skipped"
    reason: str = ""
    seed: int | None = None
    crop: dict | None = None
    variants: int = 0
    chosen: int | None = None
    pick: str | None = None
    variant_scores: list[float | None] = field(default_factory=list)
    seam: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [], {})}


@dataclass
class RefineReport:
    """The report of one refinement run: one :class:`RegionReport` per region, in batch order."""

    images: int
    regions: list[RegionReport] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for r in self.regions if r.status == s) for s in STATUSES}

    def to_dict(self) -> dict:
        return {"images": self.images, "counts": self.counts(), "regions": [r.to_dict() for r in self.regions],
                "settings": self.settings, "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def summary(self) -> str:
        """Node text: a count line, then one line per region.

        Example:
            >>> r = RefineReport(1, [RegionReport(0, 0, 0, "face", [0, 0, 4, 4], "skipped", "too small: 4×4 px")])
            >>> print(r.summary())
            1 image, 1 region: 0 refined, 1 skipped, 0 failed
            warning: nothing was refined, the images are unchanged
            image 0 face #0: skipped (too small: 4×4 px)
        """
        c = self.counts()
        n = len(self.regions)
        lines = [f"{self.images} image{'s' * (self.images != 1)}, {n} region{'s' * (n != 1)}: "
                 f"{c['refined']} refined, {c['skipped']} skipped, {c['failed']} failed"]
        if not c["refined"]:
            lines.append("warning: nothing was refined, the images are unchanged")
        lines += self.notes
        for r in self.regions:
            text = f"image {r.image} {r.label} #{r.region}: {r.status}"
            if r.status == "refined":
                extra = []
                if r.variants > 1:
                    extra.append(f"variant {r.chosen} of {r.variants} by {r.pick}")
                before, after = r.seam.get("colour_before"), r.seam.get("colour_after")
                if before is not None and after is not None:
                    extra.append(f"seam colour {before:.3f} → {after:.3f}")
                if extra:
                    text += " (" + ", ".join(extra) + ")"
            elif r.reason:
                text += f" ({r.reason})"
            lines.append(text)
        return "\n".join(lines)


def decide(region: Region, image_size: tuple[int, int], settings: RefineSettings, *, image_index: int = 0,
           region_index: int = 0) -> tuple[CropPlan | None, str, list[str]]:
    """Refine this region or not: ``(plan, reason, notes)``; ``plan`` is None when skipped, with the
    reason (see the module docstring for the order of the checks).

    Example:
        >>> s = RefineSettings(target_size=64, max_size=128, min_size=8)
        >>> decide(Region("face", (0, 0, 4, 20), 1.0), (32, 32), s)[1]
        'too small: 4×20 px, the shorter side is below min_size 8'
        >>> decide(Region("face", (0, 0, 16, 16), 1.0), (32, 32), s)[0].size
        (128, 128)
    """
    notes: list[str] = []
    if settings.labels is not None and region.label not in settings.labels:
        return None, f"label {region.label!r} is not in labels ({', '.join(settings.labels)})", notes
    w, h = region.width, region.height
    size = f"{w:.0f}×{h:.0f} px"
    if min(w, h) < settings.min_size:
        return None, f"too small: {size}, the shorter side is below min_size {settings.min_size}", notes
    if max(w, h) > settings.target_size:
        return None, (f"too large: {size} is above target_size {settings.target_size} (sampling would shrink it); "
                      f"raise target_size (and max_size) to refine it"), notes
    if settings.score_name:
        value = region.scores.get(settings.score_name)
        if value is None:
            notes.append(f"no {settings.score_name!r} score on this region, refined without the gate "
                         f"(score the regions first)")
        elif not value < settings.score_below:
            return None, (f"score above threshold: {settings.score_name} {value:.4g} ≥ "
                          f"refine_if_score_below {settings.score_below:g}"), notes
    plan = plan_crop(region.box, image_size, context_factor=settings.context_factor, target_size=settings.target_size,
                     max_size=settings.max_size, square=settings.square, image_index=image_index,
                     region_index=region_index)
    return plan, "", notes



_PROMPT_LINE = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*:\s*(.*)$")


def parse_region_prompts(text: str, labels) -> dict[str | None, str]:
    r"""Per-label prompts from a region prompt: a line ``face: …`` (for a label in ``labels``) is the
    prompt of that label; the other lines together are the prompt of every other label (key None).
    Empty text → ``{}`` (use the positive conditioning as it is).

    Example:
        >>> parse_region_prompts("sharp photo\nhand: a hand with five fingers", ["face", "hand"])
        {'hand': 'a hand with five fingers', None: 'sharp photo'}
        >>> parse_region_prompts("portrait: detailed", ["face"])
        {None: 'portrait: detailed'}
    """
    known = set(labels)
    out: dict[str | None, str] = {}
    rest = []
    for line in (text or "").splitlines():
        match = _PROMPT_LINE.match(line)
        if match and match.group(1) in known:
            out[match.group(1)] = match.group(2).strip()
        elif line.strip():
            rest.append(line.strip())
    if rest:
        out[None] = "\n".join(rest)
    return out
