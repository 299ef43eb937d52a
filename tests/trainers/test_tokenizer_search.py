"""Where load_base finds CLIP tokenizer files offline, in order, and the error when there are none."""
from __future__ import annotations

import gzip
import sys

import pytest

from vitruvian.core.errors import ModelNotFoundError
from vitruvian.core.tokenizer_files import write_clip_tokenizer_files

from ..tiny import tiny_diffusers_folder, tiny_merges


@pytest.fixture
def no_defaults(tmp_path, monkeypatch):
    """No ComfyUI, no converted cache, no open_clip: only what a test adds."""
    monkeypatch.setenv("COMFYUI_DIR", str(tmp_path / "no-comfy"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delitem(sys.modules, "comfy", raising=False)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else real(name, *a))
    return tmp_path


def test_explicit_folder_first(no_defaults):
    from vitruvian.trainers.tokenizer_search import find_tokenizer_dirs

    mine = write_clip_tokenizer_files(no_defaults / "mine", tiny_merges())
    base = tiny_diffusers_folder("sdxl")
    assert find_tokenizer_dirs(1, tokenizer=mine, base_dir=base)[0] == [mine]
    assert find_tokenizer_dirs(2, tokenizer=base)[0] == [base / "tokenizer", base / "tokenizer_2"]
    assert find_tokenizer_dirs(2, base_dir=base)[0] == [base / "tokenizer", base / "tokenizer_2"]
    with pytest.raises(ModelNotFoundError, match="tokenizer=.*must be a folder with vocab.json"):
        find_tokenizer_dirs(1, tokenizer=no_defaults / "empty")


def test_comfyui_folder(no_defaults, monkeypatch):
    from vitruvian.trainers.tokenizer_search import find_tokenizer_dirs, load_tokenizers

    comfy = write_clip_tokenizer_files(no_defaults / "ComfyUI" / "comfy" / "sd1_tokenizer", tiny_merges())
    monkeypatch.setenv("COMFYUI_DIR", str(no_defaults / "ComfyUI"))
    assert find_tokenizer_dirs(1)[0] == [comfy]
    tok1, tok2 = load_tokenizers("sdxl")
    assert tok1.pad_token == "<|endoftext|>" and tok2.pad_token == "!"  # SDXL's second one pads with id 0
    assert tok1.model_max_length == tok2.model_max_length == 77


def test_open_clip_conversion(no_defaults, monkeypatch):
    from vitruvian.trainers.tokenizer_search import find_tokenizer_dirs

    pkg = no_defaults / "site" / "open_clip"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    lines = ["header"] + [f"{a} {b}" for a, b in tiny_merges()]
    (pkg / "bpe_simple_vocab_16e6.txt.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    monkeypatch.undo()  # restore find_spec, then re-apply the other isolation with open_clip on the path
    monkeypatch.setenv("COMFYUI_DIR", str(no_defaults / "no-comfy"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(no_defaults / "cache"))
    monkeypatch.syspath_prepend(str(no_defaults / "site"))
    folders, _ = find_tokenizer_dirs(1)
    assert folders == [no_defaults / "cache" / "vitruvian" / "tokenizers" / "clip"]
    assert (folders[0] / "vocab.json").is_file() and (folders[0] / "merges.txt").is_file()


def test_nothing_found(no_defaults):
    from vitruvian.trainers.tokenizer_search import load_tokenizers

    with pytest.raises(ModelNotFoundError) as info:
        load_tokenizers("sd15", base_dir=no_defaults / "base")
    message = str(info.value)
    assert "tokenizer=<folder" in message and "pip install open-clip-torch" in message
    for where in ("base/tokenizer", "no-comfy/comfy/sd1_tokenizer", "tokenizers/clip", "open_clip package"):
        assert where in message
