"""Find the CLIP tokenizer files offline; the CLIP vocabulary ships with the pack.

Search order (first hit wins):

1. the ``tokenizer`` option: a folder with ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``),
   or a diffusers-style folder holding ``tokenizer/`` (and ``tokenizer_2/``);
2. the ``tokenizer/`` (``tokenizer_2/``) folders of a diffusers base model;
3. the files shipped in ``trainers/assets/clip_tokenizer`` (OpenAI CLIP's BPE vocabulary, MIT; identical
   to ComfyUI's ``comfy/sd1_tokenizer`` and to a diffusers SD folder's ``tokenizer/``), so a single-file
   checkpoint trains on a machine with neither ComfyUI nor open_clip.

SD1.5's CLIP-L and SDXL's two encoders share one BPE vocabulary; SDXL's second tokenizer only pads
with ``"!"`` (id 0) instead of ``<|endoftext|>``, which ``load_tokenizers`` sets when a single
folder serves both.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ModelNotFoundError

__all__ = ["SHIPPED_TOKENIZER", "find_tokenizer_dirs", "load_tokenizers"]

SHIPPED_TOKENIZER = Path(__file__).resolve().parent / "assets" / "clip_tokenizer"
SDXL_PAD = "!"
MAX_LENGTH = 77


def _is_tokenizer_dir(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )


def find_tokenizer_dirs(n: int, *, tokenizer: str | os.PathLike = "", base_dir: Path | None = None) -> tuple[list[Path], list[str]]:
    """Folders for ``n`` CLIP tokenizers (1 for SD1.5, 2 for SDXL).

    Returns
    -------
    (folders, searched)
        ``folders`` has length ``n`` (the same folder may repeat) or is empty; ``searched`` lists
        every place looked at, for the error message.

    Raises
    ------
    ModelNotFoundError
        If ``tokenizer`` is set but holds no tokenizer files (an explicit choice is never skipped).
    """
    searched: list[str] = []
    if tokenizer:
        folder = Path(tokenizer).expanduser()
        subs = [folder / "tokenizer", folder / "tokenizer_2"][:n]
        if all(_is_tokenizer_dir(s) for s in subs):
            return subs, searched
        if _is_tokenizer_dir(folder / "tokenizer"):
            return [folder / "tokenizer"] * n, searched
        if _is_tokenizer_dir(folder):
            return [folder] * n, searched
        raise ModelNotFoundError(
            f"load_base: tokenizer={str(tokenizer)!r} must be a folder with vocab.json + merges.txt "
            "(or tokenizer.json, or a tokenizer/ subfolder); CLIP tokenizer files",
            [str(folder), str(folder / "tokenizer")],
        )
    if base_dir is not None:
        subs = [base_dir / "tokenizer", base_dir / "tokenizer_2"][:n]
        searched += [str(s) for s in subs]
        if all(_is_tokenizer_dir(s) for s in subs):
            return subs, searched
        if _is_tokenizer_dir(subs[0]):
            return [subs[0]] * n, searched
    searched.append(str(SHIPPED_TOKENIZER))
    if _is_tokenizer_dir(SHIPPED_TOKENIZER):
        return [SHIPPED_TOKENIZER] * n, searched
    return [], searched


def load_tokenizers(kind: str, *, tokenizer: str | os.PathLike = "", base_dir: Path | None = None) -> tuple:
    """Load the ``CLIPTokenizer``(s) for ``kind`` ("sd15" → 1, "sdxl" → 2), padding to 77 tokens.

    Raises
    ------
    ModelNotFoundError
        Listing every folder searched and how to provide the files.
    """
    from transformers import CLIPTokenizer

    n = 2 if kind == "sdxl" else 1
    folders, searched = find_tokenizer_dirs(n, tokenizer=tokenizer, base_dir=base_dir)
    if not folders:
        raise ModelNotFoundError(
            "load_base: CLIP tokenizer files (vocab.json + merges.txt; the pack ships them in "
            f"{SHIPPED_TOKENIZER}, which is missing: reinstall the pack, or set tokenizer=<folder with them>, "
            "e.g. a diffusers SD folder's tokenizer/ or ComfyUI's comfy/sd1_tokenizer)",
            searched,
        )
    out = []
    for i, folder in enumerate(folders):
        kwargs = {"model_max_length": MAX_LENGTH}
        if i == 1 and folder == folders[0]:
            kwargs["pad_token"] = SDXL_PAD  # SDXL's OpenCLIP tokenizer pads with "!" (id 0)
        out.append(CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs))
    return tuple(out)
