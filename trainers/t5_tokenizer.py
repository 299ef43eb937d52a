"""Google's T5 tokenizer offline: the vocabulary of the T5-XXL text encoder of Flux.1, SD3.5 and Chroma.

The pack ships it in ``trainers/assets/t5_tokenizer`` (``tokenizer.json`` + ``tokenizer_config.json``, 1.4 MB,
Apache-2.0: see the ``LICENSE`` beside them; rebuilt by ``tools/ship_t5_tokenizer.py`` from ComfyUI's
``comfy/text_encoders/t5_tokenizer``, whose token ids it gives), so prompts are tokenized with no hub download.

A user-given folder is used instead when set: a T5 tokenizer folder (``tokenizer.json`` or ``spiece.model``),
or a diffusers model folder whose ``tokenizer_3/`` (SD3), ``tokenizer_2/`` (Flux) or ``tokenizer/`` holds one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import ConfigError, ModelNotFoundError

__all__ = ["SHIPPED_T5_TOKENIZER", "T5_PAD_ID", "T5_EOS_ID", "find_t5_tokenizer_dir", "load_t5_tokenizer"]

SHIPPED_T5_TOKENIZER = Path(__file__).resolve().parent / "assets" / "t5_tokenizer"
T5_PAD_ID, T5_EOS_ID, T5_UNK_ID = 0, 1, 2
#: diffusers layouts: SD3's T5 is tokenizer_3/, Flux's tokenizer_2/, a T5-only pipeline's (Chroma) tokenizer/.
SUBFOLDERS = ("tokenizer_3", "tokenizer_2", "tokenizer")
EXPECTED = ("a T5 tokenizer folder with tokenizer.json (+ tokenizer_config.json) or spiece.model, or a diffusers "
            "model folder with one in tokenizer_3/, tokenizer_2/ or tokenizer/ (e.g. ComfyUI's "
            "comfy/text_encoders/t5_tokenizer)")


def _has_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()


def _is_t5_subfolder(folder: Path) -> bool:
    """A diffusers subfolder that holds T5 (not CLIP) files: spiece.model, or a T5 tokenizer_class."""
    if (folder / "spiece.model").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and str(config.get("tokenizer_class", "")).startswith("T5") and _has_files(folder)


def find_t5_tokenizer_dir(folder: str | os.PathLike = "") -> Path:
    """The folder :func:`load_t5_tokenizer` reads: ``folder`` (or its T5 subfolder) when set, else the shipped one.

    Raises
    ------
    ModelNotFoundError
        ``folder`` is set but holds no T5 tokenizer files (an explicit choice is never skipped), or nothing is
        set and the shipped files are gone (a broken install).
    """
    if folder:
        root = Path(folder).expanduser()
        if _has_files(root):
            return root
        for sub in SUBFOLDERS:
            if _is_t5_subfolder(root / sub):
                return root / sub
        raise ModelNotFoundError(f"load_t5_tokenizer: folder={str(folder)!r} must be {EXPECTED}; T5 tokenizer files",
                                 [str(root)] + [str(root / sub) for sub in SUBFOLDERS])
    if not _has_files(SHIPPED_T5_TOKENIZER):
        raise ModelNotFoundError(
            "load_t5_tokenizer: the T5 tokenizer files the pack ships (tokenizer.json + tokenizer_config.json; "
            "reinstall the pack, or pass folder=<" + EXPECTED + ">)", [str(SHIPPED_T5_TOKENIZER)])
    return SHIPPED_T5_TOKENIZER


def load_t5_tokenizer(folder: str | os.PathLike = ""):
    """Google's T5 tokenizer (T5-XXL of Flux.1 / SD3.5 / Chroma), loaded offline (``local_files_only=True``).

    Parameters
    ----------
    folder : str or path, optional
        A T5 tokenizer folder or a diffusers model folder (see the module docstring); empty: the shipped files.

    Returns
    -------
    transformers.T5TokenizerFast
        (In transformers ≥ 5 the same class as ``T5Tokenizer``.) 32,100 tokens; no BOS, every sequence ends with
        ``</s>`` (id 1) and pads with ``<pad>`` (id 0): ``tok(["a photo of a cat"]).input_ids`` is
        ``[[3, 9, 1202, 13, 3, 9, 1712, 1]]``. ``tok(prompts, padding="max_length", max_length=L, truncation=True,
        return_tensors="pt")`` gives ``input_ids`` and ``attention_mask``, LongTensors of shape ``(B, L)``. The
        maximum length is the caller's (Flux.1-dev 512, schnell 256, SD3.5 256 or 77); ``model_max_length`` is
        the folder's (512 for the shipped files) and is not enforced here.

    Raises
    ------
    ModelNotFoundError
        No T5 tokenizer files where expected (see :func:`find_t5_tokenizer_dir`).
    ConfigError
        The files are there but transformers cannot load them, or they are not T5's vocabulary (e.g. a CLIP
        tokenizer: ``</s>`` must be id 1 and ``<pad>`` id 0).
    """
    from transformers import T5TokenizerFast

    path = find_t5_tokenizer_dir(folder)
    try:
        tokenizer = T5TokenizerFast.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, tokenizers' Exception, ...
        raise ConfigError(f"load_t5_tokenizer: {path} must hold T5 tokenizer files that transformers loads "
                          f"({EXPECTED}), got {type(exc).__name__}: {exc}") from exc
    ids = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<unk>"))
    if ids != (T5_PAD_ID, T5_EOS_ID, T5_UNK_ID):
        raise ConfigError(f"load_t5_tokenizer: {path} must hold T5's vocabulary (<pad> = 0, </s> = 1, <unk> = 2), "
                          f"got ids {ids}; is it another model's tokenizer (CLIP's, say)?")
    return tokenizer
