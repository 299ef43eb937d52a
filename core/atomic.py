"""Atomic file writes: a temp file beside the target, then ``os.replace``.

A reader (ComfyUI listing LoRAs, a resumed trainer, the jobs panel) sees the old file or the whole new
one, never a part; a crash or an exception leaves the old file as it was and removes the temp file.
Every file the pack writes for a user goes through :func:`atomic_path`.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(folder / "a.txt", "hello").read_text()
    'hello'
    >>> sorted(p.name for p in folder.iterdir())  # no temp file left behind
    ['a.txt']
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_copy", "atomic_save_safetensors"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder to write to; on a clean exit it replaces ``path``.

    The temp name starts with ``.`` and ends with ``.tmp`` (ComfyUI's file lists skip neither, but no
    model extension matches it). On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _new_file_mode())  # not mkstemp's 0600: the mode open() would have given the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def _new_file_mode() -> int:
    """0o666 less the process umask (read once: ``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str, *, sync: bool = True) -> Path:
    """Write ``text`` (UTF-8) atomically; ``sync`` flushes it to disk before the rename. Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data, *, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON (plus a newline) atomically, synced. Returns ``path``."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically, creating ``dst``'s folder. Returns ``dst``."""
    with atomic_path(dst, make_parents=True) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def atomic_save_safetensors(tensors: Mapping, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` atomically. Returns ``path``."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)
