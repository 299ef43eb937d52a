"""CLIP BPE tokenizer files (``vocab.json`` + ``merges.txt``) written from a merge list.

Stable Diffusion's text encoders use OpenAI's CLIP BPE vocabulary. No model hub is reachable
offline, but the same vocabulary ships in two places this module can read:

- the ``open_clip`` package's ``bpe_simple_vocab_16e6.txt.gz`` (a header line, then merges), and
- ComfyUI's ``comfy/sd1_tokenizer`` folder (already in the Hugging Face format).

The Hugging Face layout is rebuilt here from the merge list alone: the 256 byte symbols, the same
symbols with the end-of-word marker ``</w>``, one token per merge in merge order, then
``<|startoftext|>`` and ``<|endoftext|>``. With the full open_clip list that gives the standard
ids (49406, 49407) and files identical to ComfyUI's.

Only the standard library is used, so this module is cheap to import.
"""
from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .atomic import atomic_write_text

__all__ = [
    "BOS",
    "EOS",
    "OPEN_CLIP_BPE_NAME",
    "byte_symbols",
    "clip_vocab",
    "write_clip_tokenizer_files",
    "read_open_clip_merges",
    "convert_open_clip_bpe",
]

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
OPEN_CLIP_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# open_clip keeps 49152 - 256 - 2 merges after the header line; the rest of the file is unused.
_CLIP_MERGES = 49152 - 256 - 2
_END_OF_WORD = "</w>"


def byte_symbols() -> list[str]:
    """The 256 printable symbols that stand for the 256 byte values, in CLIP's vocabulary order.

    Printable Latin-1 bytes map to themselves; the others (controls, space, …) are shifted to
    code points from 256 upwards, so every byte has a visible, whitespace-free symbol.

    Returns
    -------
    list of str
        ``symbols[i]`` is the vocabulary symbol of byte ``order[i]`` (printable bytes first).
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    symbols = [chr(b) for b in printable]
    shifted = 0
    for b in range(256):
        if b not in printable:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def clip_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Build CLIP's token → id table from a merge list.

    Parameters
    ----------
    merges : sequence of (str, str)
        BPE merges in priority order, e.g. ``[("i", "n"), ("t", "h"), ...]``.

    Returns
    -------
    dict
        ``{token: id}``: bytes (256), bytes + ``</w>`` (256), one token per merge, BOS, EOS.

    Raises
    ------
    ValueError
        If a merge is not a pair of non-empty strings.
    """
    tokens = byte_symbols()
    tokens += [s + _END_OF_WORD for s in tokens]
    for i, pair in enumerate(merges):
        if len(pair) != 2 or not all(pair):
            raise ValueError(f"clip_vocab: merges[{i}] must be a pair of non-empty strings, got {pair!r}")
        tokens.append(pair[0] + pair[1])
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:  # a duplicate merge result keeps its first id, as CLIP's own table does
        vocab.setdefault(token, len(vocab))
    return vocab


def write_clip_tokenizer_files(
    folder: str | os.PathLike, merges: Sequence[tuple[str, str]], *, model_max_length: int = 77
) -> Path:
    """Write a Hugging Face ``CLIPTokenizer`` folder (vocab.json, merges.txt, configs).

    Parameters
    ----------
    folder : path
        Created if missing; existing files of the same names are replaced atomically.
    merges : sequence of (str, str)
        BPE merges in priority order.
    model_max_length : int
        Sequence length the tokenizer pads/truncates to (77 for Stable Diffusion).

    Returns
    -------
    Path
        ``folder``, loadable with ``CLIPTokenizer.from_pretrained(folder)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = clip_vocab(merges)
    atomic_write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    atomic_write_text(folder / "merges.txt", "\n".join(lines) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "model_max_length": model_max_length,
    }
    atomic_write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    atomic_write_text(folder / "special_tokens_map.json", json.dumps(special, indent=2))
    return folder


def read_open_clip_merges(gz_path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read the merge list from open_clip's ``bpe_simple_vocab_16e6.txt.gz``.

    The file holds a header line, then one ``"a b"`` merge per line; open_clip (and CLIP) use the
    first 48 894 of them.

    Raises
    ------
    ValueError
        If the file is not a gzip text file of merges.
    """
    gz_path = Path(gz_path)
    try:
        lines = gzip.decompress(gz_path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"read_open_clip_merges: gz_path must be a gzip-compressed UTF-8 BPE merge list, "
            f"got {str(gz_path)!r} ({exc})"
        ) from exc
    merges = []
    for n, line in enumerate(lines[1 : _CLIP_MERGES + 1], start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(
                f"read_open_clip_merges: line {n} of {str(gz_path)!r} must be two symbols, got {line!r}"
            )
        merges.append((parts[0], parts[1]))
    return merges


def convert_open_clip_bpe(gz_path: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Convert open_clip's BPE merge file into a Hugging Face ``CLIPTokenizer`` folder.

    Returns
    -------
    Path
        ``folder`` with vocab.json (49 408 tokens), merges.txt and tokenizer configs.
    """
    return write_clip_tokenizer_files(folder, read_open_clip_merges(gz_path))
