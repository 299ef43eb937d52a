"""A test-only ComfyUI custom node pack (V1 API, torch only) that makes malformed upstream values for the
fuzz test: images and masks with NaN/inf, empty batches, odd shapes, and arbitrary objects under any
socket type. The fuzz test's own host loads it beside the Vitruvian pack; it is never shipped.

- ``FuzzImage`` (IMAGE) and ``FuzzMask`` (MASK): ``kind`` picks the defect, ``width``/``height`` the size.
- ``FuzzValue`` (any type): ``kind`` picks a Python object that is *not* what the socket type promises.
- ``FuzzSink`` (output node, any input): consumes a value so that a node without an output node runs, and
  describes it in its UI output (``fuzz``: :func:`describe`), so the fuzz test can review what an accepted
  case produced: NaN, empty, all-zero.
"""

import torch


class AnyType(str):
    """A socket type equal to every other (ComfyUI compares types with ``!=``; see validate_node_input)."""

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


ANY = AnyType("*")

IMAGE_KINDS = ("valid", "nan", "inf", "neg_inf", "empty_batch", "one_pixel", "one_channel", "four_channel",
               "channels_first", "out_of_range", "float64", "huge", "batch_of_two")
MASK_KINDS = ("valid", "nan", "inf", "empty_batch", "one_pixel", "two_d", "four_d", "out_of_range")
VALUE_KINDS = ("none", "int", "string", "empty_list", "empty_dict", "list_of_none", "nan_tensor", "float_nan")


def _sized():
    return {"width": ("INT", {"default": 64, "min": 1, "max": 4096}),
            "height": ("INT", {"default": 64, "min": 1, "max": 4096})}


class FuzzImage:
    CATEGORY = "testing/fuzz"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (list(IMAGE_KINDS),), **_sized()}}

    def make(self, kind, width, height):
        generator = torch.Generator().manual_seed(width * 4096 + height)
        image = torch.rand(1, height, width, 3, generator=generator)
        if kind == "nan":
            image[:, : height // 2] = float("nan")
        elif kind == "inf":
            image[:, : height // 2] = float("inf")
        elif kind == "neg_inf":
            image[:, : height // 2] = float("-inf")
        elif kind == "empty_batch":
            image = image[:0]
        elif kind == "one_pixel":
            image = image[:, :1, :1]
        elif kind == "one_channel":
            image = image[..., :1]
        elif kind == "four_channel":
            image = torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)
        elif kind == "channels_first":
            image = image.movedim(-1, 1)
        elif kind == "out_of_range":
            image = image * 10 - 5
        elif kind == "float64":
            image = image.double()
        elif kind == "huge":
            image = torch.rand(1, 2048, 2048, 3, generator=generator)
        elif kind == "batch_of_two":
            image = torch.cat([image, image.flip(1)])
        return (image,)


class FuzzMask:
    CATEGORY = "testing/fuzz"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (list(MASK_KINDS),), **_sized()}}

    def make(self, kind, width, height):
        mask = torch.zeros(1, height, width)
        mask[:, height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1.0
        if kind == "nan":
            mask[:, : height // 2] = float("nan")
        elif kind == "inf":
            mask[:, : height // 2] = float("inf")
        elif kind == "empty_batch":
            mask = mask[:0]
        elif kind == "one_pixel":
            mask = mask[:, :1, :1]
        elif kind == "two_d":
            mask = mask[0]
        elif kind == "four_d":
            mask = mask[..., None]
        elif kind == "out_of_range":
            mask = mask * 7 - 3
        return (mask,)


class FuzzValue:
    CATEGORY = "testing/fuzz"
    RETURN_TYPES = (ANY,)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (list(VALUE_KINDS),)}}

    def make(self, kind):
        values = {"none": None, "int": 7, "string": "not the right type", "empty_list": [], "empty_dict": {},
                  "list_of_none": [None], "nan_tensor": torch.full((1, 8, 8, 3), float("nan")),
                  "float_nan": float("nan")}
        return (values[kind],)


def _tensor_flags(t) -> list:
    flags = []
    if t.numel() == 0:
        flags.append("empty")
    elif t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            flags.append("nan")
        elif not bool(t.any()):
            flags.append("zero")
    return flags


def describe(value) -> dict:
    """``{"kind": ..., "flags": [...]}`` of a value a node output: flags ``nan`` (NaN/inf numbers or pixels),
    ``empty`` (no elements, no regions, no SEGS, no crops, an empty text), ``zero`` (an all-zero tensor: an
    empty mask). Pack types are recognised by their attributes (this pack never imports the Vitruvian one)."""
    if value is None:
        return {"kind": "None", "flags": ["none"]}
    if isinstance(value, torch.Tensor):
        return {"kind": f"tensor {list(value.shape)}", "flags": _tensor_flags(value)}
    if isinstance(value, bool) or isinstance(value, int):
        return {"kind": "int", "flags": []}
    if isinstance(value, float):
        return {"kind": "float", "flags": [] if value == value and abs(value) != float("inf") else ["nan"]}
    if isinstance(value, str):
        return {"kind": "str", "flags": [] if value.strip() else ["empty"]}
    if hasattr(value, "regions") and hasattr(value, "image_sizes"):  # VITRUVIAN_REGIONS
        count = sum(len(r) for r in value.regions)
        return {"kind": f"regions of {len(value.regions)} image(s), {count} region(s)", "flags": [] if count else ["empty"]}
    if hasattr(value, "plans") and hasattr(value, "size"):  # VITRUVIAN_CROPS
        return {"kind": f"crops ({len(value.plans)})", "flags": [] if value.plans else ["empty"]}
    if hasattr(value, "frames"):  # VITRUVIAN_POSE
        people = sum(len(f.people) for f in value.frames)
        return {"kind": f"pose of {len(value.frames)} frame(s), {people} people", "flags": [] if people else ["empty"]}
    if isinstance(value, dict) and isinstance(value.get("samples"), torch.Tensor):  # LATENT
        return {"kind": f"latent {list(value['samples'].shape)}", "flags": _tensor_flags(value["samples"])}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], list):  # SEGS
        return {"kind": f"SEGS ({len(value[1])})", "flags": [] if value[1] else ["empty"]}
    if isinstance(value, (list, tuple, dict)):
        return {"kind": type(value).__name__, "flags": [] if value else ["empty"]}
    return {"kind": type(value).__name__, "flags": []}


class FuzzSink:
    CATEGORY = "testing/fuzz"
    RETURN_TYPES = ()
    FUNCTION = "consume"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (ANY,)}}

    def consume(self, value):
        return {"ui": {"fuzz": [describe(value)]}}


NODE_CLASS_MAPPINGS = {"FuzzImage": FuzzImage, "FuzzMask": FuzzMask, "FuzzValue": FuzzValue, "FuzzSink": FuzzSink}
