"""CLIP tokenizer files rebuilt from a merge list (open_clip's .txt.gz) match ComfyUI's sd1_tokenizer."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from vitruvian.core.tokenizer_files import (
    BOS,
    EOS,
    byte_symbols,
    clip_vocab,
    convert_open_clip_bpe,
    read_open_clip_merges,
    write_clip_tokenizer_files,
)

def _comfy_tokenizer() -> Path:
    """ComfyUI's ``comfy/sd1_tokenizer`` of the test host (tests/comfy_host.py's lookup), or skip."""
    from ..comfy_host import HostUnavailable, find_host

    try:
        folder = find_host()[0] / "comfy" / "sd1_tokenizer"
    except HostUnavailable as e:
        pytest.skip(str(e))
    if not (folder / "merges.txt").is_file():
        pytest.skip(f"no ComfyUI sd1_tokenizer at {folder}")
    return folder


def _comfy_merges() -> list[tuple[str, str]]:
    COMFY_TOKENIZER = _comfy_tokenizer()
    lines = (COMFY_TOKENIZER / "merges.txt").read_text(encoding="utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1:] if line]


def _open_clip_gz(path: Path, merges) -> Path:
    """A file in open_clip's layout: a header line, the merges, then unused trailing lines."""
    text = "\n".join(["bpe_simple_vocab_16e6.txt#version: 0.2"] + [f"{a} {b}" for a, b in merges] + ["x y"] * 3)
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


def test_byte_symbols():
    symbols = byte_symbols()
    assert len(symbols) == len(set(symbols)) == 256
    assert symbols[0] == "!" and "Ġ" in symbols  # space is shifted to U+0120
    assert all(not s.isspace() for s in symbols)


def test_small_vocab():
    vocab = clip_vocab([("h", "i</w>"), ("t", "h")])
    assert len(vocab) == 512 + 2 + 2
    assert vocab["hi</w>"] == 512 and vocab["th"] == 513 and vocab[BOS] == 514 and vocab[EOS] == 515
    with pytest.raises(ValueError, match=r"merges\[0\] must be a pair"):
        clip_vocab([("a",)])


def test_tokenizer_folder_loads(tmp_path):
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer_files(tmp_path, [("h", "i</w>")])
    tok = CLIPTokenizer.from_pretrained(str(folder))
    assert tok("hi HI")["input_ids"] == [513, 512, 512, 514]  # BOS, "hi" twice (lower-cased), EOS
    assert tok.model_max_length == 77


def test_matches_comfyui(tmp_path):
    """Converting the 48 894 merges gives ComfyUI's vocab.json and the standard CLIP ids."""
    from transformers import CLIPTokenizer

    merges, COMFY_TOKENIZER = _comfy_merges(), _comfy_tokenizer()
    folder = convert_open_clip_bpe(_open_clip_gz(tmp_path / "bpe.txt.gz", merges), tmp_path / "tok")
    ours = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert ours == json.loads((COMFY_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    assert (ours[BOS], ours[EOS], len(ours)) == (49406, 49407, 49408)
    text = "A photo of a person, hands visible! 2 people"
    a = CLIPTokenizer.from_pretrained(str(folder))(text)["input_ids"]
    b = CLIPTokenizer.from_pretrained(str(COMFY_TOKENIZER))(text)["input_ids"]
    assert a == b and a[0] == 49406 and a[-1] == 49407


def test_read_open_clip_merges_exception(tmp_path):
    (tmp_path / "plain.txt.gz").write_text("not gzip")
    with pytest.raises(ValueError, match="gzip-compressed UTF-8 BPE merge list"):
        read_open_clip_merges(tmp_path / "plain.txt.gz")
    (tmp_path / "bad.txt.gz").write_bytes(gzip.compress(b"header\na b c\n"))
    with pytest.raises(ValueError, match="line 2 .* must be two symbols"):
        read_open_clip_merges(tmp_path / "bad.txt.gz")


def test_shipped_files_are_the_clip_vocabulary():
    """The files the trainer ships (trainers/assets/clip_tokenizer) rebuild from their own merges, give the
    standard CLIP ids, and equal ComfyUI's sd1_tokenizer where a host is around."""
    from transformers import CLIPTokenizer

    from vitruvian.trainers.tokenizer_search import SHIPPED_TOKENIZER

    lines = (SHIPPED_TOKENIZER / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:] if line]
    vocab = json.loads((SHIPPED_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    assert len(merges) == 48894 and vocab == clip_vocab(merges)
    assert "MIT License" in (SHIPPED_TOKENIZER / "LICENSE").read_text() and "OpenAI" in (SHIPPED_TOKENIZER / "LICENSE").read_text()
    tok = CLIPTokenizer.from_pretrained(str(SHIPPED_TOKENIZER), local_files_only=True)
    assert tok("a photo of a person").input_ids == [49406, 320, 1125, 539, 320, 2533, 49407]
    comfy = _comfy_tokenizer()
    assert vocab == json.loads((comfy / "vocab.json").read_text(encoding="utf-8"))
    assert (SHIPPED_TOKENIZER / "merges.txt").read_bytes() == (comfy / "merges.txt").read_bytes()
