"""Region labels and score names that a user asks of a :class:`~.types.RegionBatch`: parsed in one
place, and told apart into *unknown* names (nothing in the batch can ever match them: a typo, a label
no detector here makes) and *absent* ones (known, but no region of some image carries them).

A name is **known** when a region of the batch carries it, or when the batch records that it could
have: labels the detection looked for (``RegionBatch.searched``; when not recorded, the pack's own
labels face, hand and person), score names a scorer computed (``RegionBatch.scored``). An unknown name
can only give an empty result, so nodes refuse it (:func:`unknown_problem`, which lists what the
batch carries); an absent one is a legitimate outcome (nobody in the picture, no hand visible) that
nodes report as a warning (:func:`absent_warning`).

Example:
    >>> from vitruvian.core.regions import Region, RegionBatch
    >>> batch = RegionBatch(((Region("face", (0, 0, 4, 4), 0.9),), ()), ((8, 8), (8, 8)))
    >>> problem = unknown_problem(batch, parse_names("face, fcae"), LABEL)
    >>> problem[problem.index("got"):problem.index(". ")]
    'got an unknown label fcae; the regions carry face'
    >>> absent_warning(batch, ("face",), LABEL)
    'warning: no region labelled face in image 1 (of 2)'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: What the functions below read a batch as: a ``RegionBatch`` (``.types``; not imported here, since ``.types``
#: imports :func:`parse_names` from this module).
RegionBatchLike = Any

__all__ = ["LABEL", "SCORE", "parse_names", "present_names", "known_names", "unknown_problem", "absent_images",
           "absent_warning"]

LABEL, SCORE = "label", "score"
#: The pack's own labels (:data:`.types.LABELS`), known to a batch that records no search.
_DEFAULT_LABELS = ("face", "hand", "person")
_SHOWN = 6  # names listed in a message at most
_NAME_CHARS = 40  # characters of one name shown at most (a fuzzed 1 MB "label" must not flood the UI)


def parse_names(names: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"face, hand"`` / ``["face"]`` → ``("face", "hand")`` (order kept, repeats dropped); None, ``""``
    or only commas and blanks → None (meaning: all).

    >>> parse_names(" face,,hand , face"), parse_names(" , "), parse_names(None)
    (('face', 'hand'), None, None)
    """
    if names is None:
        return None
    raw = names.split(",") if isinstance(names, str) else names
    out = tuple(dict.fromkeys(str(s).strip() for s in raw if str(s).strip()))
    return out or None


def present_names(batch: RegionBatchLike, kind: str) -> set[str]:
    """Labels (``kind`` :data:`LABEL`) or score names (:data:`SCORE`) some region of ``batch`` carries."""
    _check_kind(kind)
    if kind == LABEL:
        return {r.label for _, _, r in batch.flat()}
    return {n for _, _, r in batch.flat() for n in r.scores}


def known_names(batch: RegionBatchLike, kind: str) -> set[str]:
    """The names a query of ``kind`` may use on ``batch`` (module docstring)."""
    present = present_names(batch, kind)
    if kind == LABEL:
        return present | set(batch.searched or _DEFAULT_LABELS)
    return present | set(batch.scored)


def _cut(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "…"


def _show(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = [_cut(n) for n in names[:_SHOWN]]
    return ", ".join(shown) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _check_kind(kind: str) -> None:
    if kind not in (LABEL, SCORE):
        raise ValueError(f"names: kind must be {LABEL!r} or {SCORE!r}, got {kind!r}")


def unknown_problem(batch: RegionBatchLike, wanted: Iterable[str] | None, kind: str) -> str:
    """What is wrong with the names of ``wanted`` that ``batch`` does not know, or ``""`` when there are
    none (``wanted`` None = all: always fine). The text says what was expected, what came, what the
    regions carry and the fix, for a node error."""
    if wanted is None:
        return ""
    known = known_names(batch, kind)
    unknown = [n for n in wanted if n not in known]
    if not unknown:
        return ""
    present = present_names(batch, kind)
    got = f"got {'an unknown ' + kind if len(unknown) == 1 else 'unknown ' + kind + 's'} {_show(unknown)}"
    if kind == LABEL:
        carried = f"the regions carry {_show(present) if present else 'no regions'}"
        searched = f"; their detection looked for {_show(batch.searched)}" if batch.searched else ""
        return (f"a label the regions carry (or that their detection looked for) is expected, {got}; {carried}"
                f"{searched}. Check the spelling, or detect that label first (Detect Regions' labels, or a "
                "detector that makes it); leave empty for all")
    carried = f"the regions carry {_show(present) if present else 'no scores'}"
    computed = sorted(set(batch.scored) - present)
    if computed:
        carried += f" (and {_show(computed)} was computed, on no region)"
    return (f"a score name the regions carry is expected, {got}; {carried}. Score them first with Score "
            "Regions, and link its score_name output here to get the name right")


def absent_images(batch: RegionBatchLike, wanted: Iterable[str] | None, kind: str) -> list[int]:
    """Indices of the images where no region carries any name of ``wanted`` (None: any label / any score)."""
    _check_kind(kind)
    wanted = None if wanted is None else set(wanted)

    def carries(r) -> bool:
        names = {r.label} if kind == LABEL else set(r.scores)
        return bool(names) and (wanted is None or bool(names & wanted))

    return [b for b, per_image in enumerate(batch.regions) if not any(carries(r) for r in per_image)]


def absent_warning(batch: RegionBatchLike, wanted: Iterable[str] | None, kind: str) -> str:
    """One ``"warning: …"`` line naming the images where no region carries ``wanted``, or ``""``."""
    missing = absent_images(batch, wanted, kind)
    if not missing:
        return ""
    either = None if wanted is None else " or ".join(_cut(n) for n in wanted)
    what = ("region" if wanted is None else f"region labelled {either}") if kind == LABEL else (
        "scored region" if wanted is None else f"region with a {either} score")
    images = ", ".join(map(str, missing[:20])) + (", …" if len(missing) > 20 else "")
    where = "any image" if len(missing) == len(batch) and len(batch) > 1 else (
        f"image{'s' * (len(missing) > 1)} {images} (of {len(batch)})")
    return f"warning: no {what} in {where}"
