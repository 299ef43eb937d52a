"""Input checks shared by core's entry points (detection, scoring, refinement, pairs) and the nodes.

Each check raises with the message the house style asks for: where it happened, which input, what was
expected, what came and the fix. They are written once here so that every caller refuses the same
things with the same words:

- :func:`check_image`: a channels-first image batch, float, finite, not empty;
- :func:`check_regions`: a ``RegionBatch`` that describes this image batch (one entry per image, each
  found on an image of this size);
- :func:`check_names`: labels or score names typed by a user, refused when the regions can never carry
  them (the words come from :mod:`.regions.names`).

Nothing here imports ``.regions`` at module level: ``.regions`` imports this module (its detectors check
their images), so the region types are imported when a check runs.

Shape:
    - image: ``(B, C, H, W)`` float in [0, 1], C in ``channels`` (default 1, 3 or 4); returned as
      ``(B, 3, H, W)`` (grey repeated, alpha dropped).
"""

from __future__ import annotations

import torch

from .errors import NodeInputError

__all__ = ["IMAGE_CHANNELS", "check_image", "check_regions", "check_names"]

#: Channels an image batch may have: grey (repeated to RGB), RGB, RGBA (alpha dropped).
IMAGE_CHANNELS = (1, 3, 4)


def _layout(channels: tuple[int, ...]) -> str:
    if tuple(channels) == (3,):
        return "(B, 3, H, W)"
    return f"(B, C, H, W) with C = {', '.join(map(str, channels[:-1]))} or {channels[-1]}"


def check_image(image, where: str, name: str = "image", *, channels: tuple[int, ...] = IMAGE_CHANNELS) -> torch.Tensor:
    """``image`` as ``(B, 3, H, W)``: TypeError / ValueError naming ``where`` and ``name`` unless it is a
    non-empty float tensor ``(B, C, H, W)`` with C in ``channels`` and finite values; a hint for the usual
    mistakes (ComfyUI's ``(B, H, W, C)`` layout, a missing batch dimension). Grey is repeated to 3
    channels and alpha dropped; the dtype is kept.

    Example:
        >>> check_image(torch.zeros(2, 1, 8, 8), "f").shape
        torch.Size([2, 3, 8, 8])
        >>> check_image(torch.zeros(1, 8, 8, 3), "f")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: f: image must be (B, C, H, W) with C = 1, 3 or 4, got shape (1, 8, 8, 3); this looks like ...
    """
    layout = _layout(channels)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a float tensor {layout} in [0, 1], got {type(image).__name__}")
    shape = tuple(image.shape)
    if image.ndim != 4 or shape[1] not in channels:
        hint = ""
        if image.ndim == 4 and shape[-1] in channels:
            hint = "; this looks like ComfyUI's IMAGE layout (B, H, W, C): use image.movedim(-1, 1)"
        elif image.ndim == 3:
            hint = f"; add the batch dimension with {name}[None]"
        raise ValueError(f"{where}: {name} must be {layout}, got shape {shape}{hint}")
    if 0 in shape:
        raise ValueError(f"{where}: {name} batch is empty (shape {shape}); give at least one image of at least "
                         "1×1 pixels")
    if not image.is_floating_point():
        raise TypeError(f"{where}: {name} must be a float tensor {layout} in [0, 1], got dtype {image.dtype}; "
                        "convert 8-bit images with image.float() / 255")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{where}: {name} must hold finite values, got NaN or inf; the step that made the image "
                         "produced them (check its settings)")
    if shape[1] == 1:
        return image.expand(-1, 3, -1, -1)
    return image[:, :3]


def check_regions(regions, image: torch.Tensor, where: str, name: str = "regions", image_name: str = "image"):
    """``regions`` unchanged when it is a ``RegionBatch`` that describes ``image`` ``(B, C, H, W)``: one
    entry per image, each found on an ``H × W`` image; TypeError / ValueError naming ``where`` and both
    inputs otherwise (regions found on a resized or other batch would point outside the image).

    Example:
        >>> from vitruvian.core.regions import RegionBatch
        >>> check_regions(RegionBatch(((),), ((8, 8),)), torch.zeros(2, 3, 8, 8), "f")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: f: regions must describe the 2 image(s) of the batch, got regions for 1 image(s); ...
    """
    from .regions.types import RegionBatch

    if not isinstance(regions, RegionBatch):
        raise TypeError(f"{where}: {name} must be a RegionBatch (VITRUVIAN_REGIONS), got {type(regions).__name__}")
    b, _, h, w = (int(v) for v in image.shape)
    batch = "the batch" if image_name == "image" else image_name
    if len(regions) != b:
        raise ValueError(f"{where}: {name} must describe the {b} image(s) of {batch}, got {name} for {len(regions)} "
                         f"image(s); detect the regions on this same IMAGE batch")
    for i, (rh, rw) in enumerate(regions.image_sizes):
        if (rh, rw) != (h, w):
            raise ValueError(f"{where}: {name} of image {i} were found on a {rw}×{rh} image, but the {image_name} is "
                             f"{w}×{h}; detect the regions on this same IMAGE (resize or crop before detecting, not "
                             "after)")
    return regions


def check_names(where: str, name: str, regions, text, kind: str = "label") -> tuple[str, ...] | None:
    """The comma list of labels (``kind`` ``"label"``) or score names (``"score"``) typed into input ``name``,
    parsed (None when empty: all); :class:`~.errors.NodeInputError` when one of them is a name ``regions``
    can never match (the message lists what the regions carry). Names the regions know but no region
    carries are the caller's to warn about (:func:`vitruvian.core.regions.absent_warning`)."""
    from .regions.names import parse_names, unknown_problem

    wanted = parse_names(text)
    problem = unknown_problem(regions, wanted, kind)
    if problem:
        raise NodeInputError(where, name, problem)
    return wanted
