"""Where load_base finds CLIP tokenizer files offline, in order; the shipped files; the error when they are gone."""
from __future__ import annotations

import pytest

from vitruvian.core.errors import ModelNotFoundError
from vitruvian.core.tokenizer_files import write_clip_tokenizer_files

from ..tiny import tiny_diffusers_folder, tiny_merges


def test_explicit_folder_first(tmp_path):
    from vitruvian.trainers.tokenizer_search import find_tokenizer_dirs

    mine = write_clip_tokenizer_files(tmp_path / "mine", tiny_merges())
    base = tiny_diffusers_folder("sdxl")
    assert find_tokenizer_dirs(1, tokenizer=mine, base_dir=base)[0] == [mine]
    assert find_tokenizer_dirs(2, tokenizer=base)[0] == [base / "tokenizer", base / "tokenizer_2"]
    assert find_tokenizer_dirs(2, base_dir=base)[0] == [base / "tokenizer", base / "tokenizer_2"]
    with pytest.raises(ModelNotFoundError, match="tokenizer=.*must be a folder with vocab.json"):
        find_tokenizer_dirs(1, tokenizer=tmp_path / "empty")


def test_shipped_files_serve_single_file_checkpoints(tmp_path):
    """A base without tokenizer folders (a single .safetensors) gets the shipped CLIP files, whatever the machine
    has (no ComfyUI, no open_clip): both SDXL tokenizers, the second padding with "!" (id 0)."""
    from vitruvian.trainers.tokenizer_search import SHIPPED_TOKENIZER, find_tokenizer_dirs, load_tokenizers

    folders, searched = find_tokenizer_dirs(2, base_dir=tmp_path / "base")
    assert folders == [SHIPPED_TOKENIZER] * 2 and searched[-1] == str(SHIPPED_TOKENIZER)
    tok1, tok2 = load_tokenizers("sdxl", base_dir=tmp_path / "base")
    assert tok1.pad_token == "<|endoftext|>" and tok2.pad_token == "!"
    assert tok1.model_max_length == tok2.model_max_length == 77
    ids = tok2(["a person"], padding="max_length", max_length=77).input_ids[0]
    assert ids[:4] == [49406, 320, 2533, 49407] and set(ids[4:]) == {0}


def test_nothing_found(tmp_path, monkeypatch):
    from vitruvian.trainers import tokenizer_search

    monkeypatch.setattr(tokenizer_search, "SHIPPED_TOKENIZER", tmp_path / "removed")  # a broken install
    with pytest.raises(ModelNotFoundError) as info:
        tokenizer_search.load_tokenizers("sd15", base_dir=tmp_path / "base")
    message = str(info.value)
    assert "reinstall the pack" in message and "tokenizer=<folder" in message
    for where in ("base/tokenizer", "removed"):
        assert where in message
