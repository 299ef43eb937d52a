"""Atomic writes: a failed write leaves the old file and no temp file; a reader never sees a part."""
from __future__ import annotations

import doctest

import pytest
import torch

from vitruvian.core import atomic
from vitruvian.core.atomic import atomic_copy, atomic_path, atomic_save_safetensors, atomic_write_json, atomic_write_text


def test_doctests():
    assert doctest.testmod(atomic).failed == 0


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = atomic_write_text(tmp_path / "lora.safetensors", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            assert target.read_text() == "old"  # not replaced while writing
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


def test_value_json_copy_and_safetensors(tmp_path):
    from safetensors.torch import load_file, safe_open

    assert atomic_write_json(tmp_path / "a.json", {"x": 1}).read_text() == '{\n "x": 1\n}\n'
    copied = atomic_copy(tmp_path / "a.json", tmp_path / "new" / "folder" / "b.json")
    assert copied.read_bytes() == (tmp_path / "a.json").read_bytes()
    path = atomic_save_safetensors({"w": torch.ones(2)}, tmp_path / "w.safetensors", {"k": "v"})
    assert torch.equal(load_file(str(path))["w"], torch.ones(2))
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"k": "v"}
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_files_get_the_mode_open_would_give(tmp_path):
    """mkstemp's 0600 must not leak: a LoRA written for ComfyUI (maybe another user, a container) is readable
    as any file the user creates is."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)  # read it back
    for path in (atomic_write_text(tmp_path / "a.txt", "x"), atomic_save_safetensors({"w": torch.ones(1)}, tmp_path / "w.safetensors"),
                 atomic_copy(tmp_path / "a.txt", tmp_path / "b.txt")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
