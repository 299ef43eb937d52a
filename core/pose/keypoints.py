"""The lossless keypoint type: a batch of frames, each a list of people made of parts.

Everything a reader found is kept: real confidences (never binarised), every part (feet
included), and the coordinate space the data came in. Converting between spaces is explicit
(:meth:`PoseFrame.to_pixels`, :meth:`PoseFrame.to_normalized`); nothing guesses later.

Shape:
    - :class:`Part`: ``keypoints (K, 3)`` float32 rows ``x, y, confidence``, confidence in [0, 1];
      a missing point is ``(0, 0, 0)`` (OpenPose convention).
    - :class:`PoseBatch`: B frames (one per image); frame b holds P_b people.

The dataclasses are frozen; the tensors inside are not copied on access, so treat them as
read-only (every method here returns new objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Literal

import torch

from ..errors import PoseFormatError
from .formats import PART_KINDS, PART_NAMES, convert_body, get_format

__all__ = ["Part", "Person", "PoseFrame", "PoseBatch", "SPACES", "Space", "check_canvas"]

Space = Literal["pixels", "normalized"]
#: Coordinate spaces: pixels of the canvas, or 0-1 fractions of its width and height.
SPACES = ("pixels", "normalized")


@dataclass(frozen=True, eq=False)
class Part:
    """One part of one person in one keypoint format.

    Attributes:
        format: a name from :data:`~vitruvian.core.pose.formats.FORMATS`.
        keypoints: ``(K, 3)`` float32 ``x, y, confidence``; K = the format's keypoint count.

    Example:
        >>> Part("hand21", torch.zeros(21, 3)).keypoints.shape
        torch.Size([21, 3])
    """

    format: str
    keypoints: torch.Tensor

    def __post_init__(self):
        fmt = get_format(self.format)
        k = self.keypoints
        if not isinstance(k, torch.Tensor):
            raise PoseFormatError(f"Part: keypoints must be a torch.Tensor, got {type(k).__name__}")
        if k.shape != (fmt.num_keypoints, 3):
            raise PoseFormatError(
                f"Part: keypoints for {self.format} must be ({fmt.num_keypoints}, 3), got {tuple(k.shape)}"
            )
        if k.dtype != torch.float32:
            object.__setattr__(self, "keypoints", k.float())
        k = self.keypoints
        if not torch.isfinite(k).all():
            i = int((~torch.isfinite(k)).any(dim=1).nonzero()[0])
            raise PoseFormatError(f"Part: {self.format} keypoint {i} is {k[i].tolist()}; keypoints must be finite")
        c = k[:, 2]
        if ((c < 0) | (c > 1)).any():
            i = int(((c < 0) | (c > 1)).nonzero()[0])
            raise PoseFormatError(f"Part: {self.format} keypoint {i} has confidence {float(c[i])}, expected [0, 1]")

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[0]

    def scaled(self, sx: float, sy: float) -> "Part":
        """A copy with x multiplied by ``sx`` and y by ``sy``; confidences unchanged."""
        k = self.keypoints.clone()
        k[:, 0] *= sx
        k[:, 1] *= sy
        return Part(self.format, k)

    def equal(self, other: "Part") -> bool:
        """Same format and bit-identical keypoints."""
        return self.format == other.format and torch.equal(self.keypoints, other.keypoints)


@dataclass(frozen=True, eq=False)
class Person:
    """One person: up to five parts, each None when absent.

    ``body`` holds any body format (coco18, body25, coco17, mediapipe33); ``feet`` feet6;
    ``face`` face68 or face70; ``left_hand`` / ``right_hand`` hand21 (the person's own left
    and right, as the detectors label them).
    """

    body: Part | None = None
    feet: Part | None = None
    face: Part | None = None
    left_hand: Part | None = None
    right_hand: Part | None = None

    def __post_init__(self):
        for name in PART_NAMES:
            part = getattr(self, name)
            if part is None:
                continue
            if not isinstance(part, Part):
                raise PoseFormatError(f"Person: {name} must be a Part or None, got {type(part).__name__}")
            kind = get_format(part.format).kind
            if kind != PART_KINDS[name]:
                raise PoseFormatError(
                    f"Person: {name} must hold a {PART_KINDS[name]} format, got {part.format!r} (a {kind} format)"
                )

    def parts(self) -> Iterator[tuple[str, Part]]:
        """``(part name, Part)`` for each present part, in :data:`PART_NAMES` order."""
        for name in PART_NAMES:
            part = getattr(self, name)
            if part is not None:
                yield name, part

    def scaled(self, sx: float, sy: float) -> "Person":
        return Person(**{name: part.scaled(sx, sy) for name, part in self.parts()})

    def body_as(self, fmt: str = "coco18") -> torch.Tensor | None:
        """The body converted to body format ``fmt`` (feet joints taken from ``feet`` if the body
        lacks them; ``neck``/``mid_hip`` synthesised, confidence = min). ``-> (K, 3)`` or None."""
        if self.body is None:
            return None
        extra = {}
        if self.feet is not None:
            extra = dict(zip(get_format(self.feet.format).joints, self.feet.keypoints))
        return convert_body(self.body.keypoints, self.body.format, fmt, extra=extra)

    def equal(self, other: "Person") -> bool:
        for name in PART_NAMES:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None) or (a is not None and not a.equal(b)):
                return False
        return True


def check_canvas(width, height, *, where: str) -> None:
    """PoseFormatError unless both are positive integers (pixels). ``where`` prefixes the message."""
    for name, value in (("canvas_width", width), ("canvas_height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PoseFormatError(
                f"{where} has {name} = {value!r}, expected a positive integer (pixels); "
                "pass canvas=(width, height) if the data has none"
            )


@dataclass(frozen=True, eq=False)
class PoseFrame:
    """The people found in one image.

    Attributes:
        people: tuple of :class:`Person` (may be empty).
        canvas_width, canvas_height: the image size in pixels (positive ints).
        space: ``"pixels"`` or ``"normalized"`` (x / canvas_width, y / canvas_height).
    """

    people: tuple[Person, ...]
    canvas_width: int
    canvas_height: int
    space: Space = "pixels"

    def __post_init__(self):
        object.__setattr__(self, "people", tuple(self.people))
        check_canvas(self.canvas_width, self.canvas_height, where="PoseFrame")
        if self.space not in SPACES:
            raise PoseFormatError(f"PoseFrame: space must be one of {', '.join(SPACES)}, got {self.space!r}")
        for i, person in enumerate(self.people):
            if not isinstance(person, Person):
                raise PoseFormatError(f"PoseFrame: people[{i}] must be a Person, got {type(person).__name__}")

    def to_pixels(self) -> "PoseFrame":
        """This frame in pixel coordinates (a no-op copy when already in pixels)."""
        if self.space == "pixels":
            return self
        people = tuple(p.scaled(self.canvas_width, self.canvas_height) for p in self.people)
        return replace(self, people=people, space="pixels")

    def to_normalized(self) -> "PoseFrame":
        """This frame in 0-1 coordinates (x / canvas_width, y / canvas_height)."""
        if self.space == "normalized":
            return self
        people = tuple(p.scaled(1 / self.canvas_width, 1 / self.canvas_height) for p in self.people)
        return replace(self, people=people, space="normalized")

    def to_space(self, space: Space) -> "PoseFrame":
        if space not in SPACES:
            raise PoseFormatError(f"PoseFrame.to_space: space must be one of {', '.join(SPACES)}, got {space!r}")
        return self.to_pixels() if space == "pixels" else self.to_normalized()

    def resized(self, width: int, height: int) -> "PoseFrame":
        """The same poses on a ``width`` × ``height`` canvas (pixel coordinates scaled to match)."""
        check_canvas(width, height, where="PoseFrame.resized")
        if (width, height) == (self.canvas_width, self.canvas_height):
            return self
        frame = self.to_normalized()
        frame = replace(frame, canvas_width=width, canvas_height=height)
        return frame.to_pixels() if self.space == "pixels" else frame

    def equal(self, other: "PoseFrame") -> bool:
        return (
            (self.canvas_width, self.canvas_height, self.space)
            == (other.canvas_width, other.canvas_height, other.space)
            and len(self.people) == len(other.people)
            and all(a.equal(b) for a, b in zip(self.people, other.people))
        )


@dataclass(frozen=True, eq=False)
class PoseBatch:
    """B frames, one per image of an IMAGE batch. The pack's ``VITRUVIAN_POSE`` value.

    Example:
        >>> person = Person(body=Part("coco17", torch.rand(17, 3)))
        >>> batch = PoseBatch((PoseFrame((person,), 512, 512),))
        >>> len(batch), batch.to_normalized().frames[0].space
        (1, 'normalized')
    """

    frames: tuple[PoseFrame, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "frames", tuple(self.frames))
        for i, frame in enumerate(self.frames):
            if not isinstance(frame, PoseFrame):
                raise PoseFormatError(f"PoseBatch: frames[{i}] must be a PoseFrame, got {type(frame).__name__}")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> PoseFrame:
        return self.frames[i]

    def __iter__(self) -> Iterator[PoseFrame]:
        return iter(self.frames)

    def to_pixels(self) -> "PoseBatch":
        return PoseBatch(tuple(f.to_pixels() for f in self.frames))

    def to_normalized(self) -> "PoseBatch":
        return PoseBatch(tuple(f.to_normalized() for f in self.frames))

    def to_space(self, space: Space) -> "PoseBatch":
        return PoseBatch(tuple(f.to_space(space) for f in self.frames))

    @property
    def num_people(self) -> int:
        return sum(len(f.people) for f in self.frames)

    def equal(self, other: "PoseBatch") -> bool:
        """Bit-identical frames, people, formats and keypoints."""
        return len(self) == len(other) and all(a.equal(b) for a, b in zip(self.frames, other.frames))

    def allclose(self, other: "PoseBatch", *, atol: float = 1e-4) -> bool:
        """Same structure and keypoints within ``atol`` (for checks across a space conversion)."""
        if len(self) != len(other):
            return False
        for fa, fb in zip(self.frames, other.frames):
            if (fa.canvas_width, fa.canvas_height, fa.space) != (fb.canvas_width, fb.canvas_height, fb.space):
                return False
            if len(fa.people) != len(fb.people):
                return False
            for pa, pb in zip(fa.people, fb.people):
                da, db = dict(pa.parts()), dict(pb.parts())
                if da.keys() != db.keys():
                    return False
                for name in da:
                    if da[name].format != db[name].format or not torch.allclose(
                        da[name].keypoints, db[name].keypoints, atol=atol, rtol=0
                    ):
                        return False
        return True

    def summary(self) -> str:
        """One line, e.g. ``"1 image, 1 person (body mediapipe33), 512×512, normalized"``."""
        people = [p for f in self.frames for p in f.people]
        parts = sorted({f"{name} {part.format}" for p in people for name, part in p.parts()})
        sizes = sorted({f"{f.canvas_width}×{f.canvas_height}" for f in self.frames})
        spaces = sorted({f.space for f in self.frames})
        n, m = len(self.frames), len(people)
        return (
            f"{n} image{'s' * (n != 1)}, {m} {'person' if m == 1 else 'people'}"
            + (f" ({', '.join(parts)})" if parts else "")
            + (f", {', '.join(sizes)}, {'/'.join(spaces)}" if n else "")
        )

