"""Whether the operating system can take a path at all, asked before any work: a clear reason, or "".

A path typed into a node or a ``--set`` may be one the OS refuses outright — a NUL character, a name or
path over the file system's limits, a "folder" that is a file. Python reports those as ``ValueError`` or
``OSError [Errno 36]`` deep inside whatever first touches the path; :func:`os_path_problem` says it up
front, in words, so the caller can name its input.

    >>> os_path_problem("a\\x00b")
    'contains a NUL character'
    >>> os_path_problem("x" * 5000).startswith("is too long")
    True
    >>> os_path_problem("/nonexistent/folder")   # missing is fine: the caller decides
    ''
    >>> os_path_problem("/nonexistent/" + "n" * 300).startswith("has a name of 300 bytes")  # ... unless unmakeable
    True
"""
from __future__ import annotations

import errno
import os

__all__ = ["os_path_problem"]


def os_path_problem(path: str | os.PathLike) -> str:
    """Why the OS refuses ``path`` ("contains a NUL character", "is too long …", "goes through a file …"),
    or "" when it takes it (it may still not exist)."""
    text = os.fspath(path)
    if "\x00" in str(text):
        return "contains a NUL character"
    try:
        os.stat(text)
    except FileNotFoundError:
        return _name_too_long(str(text))
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            longest = max((len(os.fsencode(p)) for p in str(text).replace("\\", "/").split("/")), default=0)
            return (f"is too long for the file system ({len(os.fsencode(text))} bytes, its longest name {longest}; "
                    "names may hold 255 bytes)")
        if e.errno == errno.ENOTDIR:
            return "goes through a file as if it were a folder"
        if e.errno == errno.ELOOP:
            return "has a loop of symbolic links"
        return f"is refused by the system ({e.strerror})"
    except ValueError as e:  # e.g. "embedded null byte" in another spelling, or a path Windows cannot hold
        return f"is refused by the system ({e})"
    return ""


def _name_too_long(path: str) -> str:
    """For a path that does not exist yet: a name longer than its file system allows (which the OS only reports
    once something tries to create it), or ""."""
    existing = path
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        name_max = os.pathconf(existing if os.path.isdir(existing) else os.path.dirname(existing) or ".", "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf
        name_max = 255
    longest = max((len(os.fsencode(p)) for p in path.replace("\\", "/").split("/")), default=0)
    if longest > name_max:
        return f"has a name of {longest} bytes, longer than the {name_max} its file system allows"
    return ""
