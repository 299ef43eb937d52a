"""Create the ComfyUI host the pack's tests run against (the way ``~/.cache/vitruvian/ComfyUI`` was made).

    python tools/setup_comfyui_host.py SOURCE [--dest DIR] [--rev REV] [--reuse] [--dry-run] [--no-install]

SOURCE is either a ComfyUI working tree (a folder with ``main.py``; copied without ``.git``, ``.venv`` and
caches) or a git directory (a bare mirror or a checkout's ``.git``; its tree at REV, default HEAD, is
extracted with ``git archive``; blobs absent from a partial mirror, such as large example files, are skipped
and listed). Then, in ``DEST/.venv`` (DEST defaults to ``~/.cache/vitruvian/ComfyUI``):

1. ``pip install torch==2.14.1 torchvision==0.29.1`` (ComfyUI imports torchvision at module level, and PyPI's
   torchvision only imports beside the torch it was built with; override with ``--torch``/``--torchvision``);
2. ComfyUI's ``requirements.txt`` without torch, torchvision and torchaudio (no torchaudio: only the audio
   nodes then fail to import, which is harmless);
3. ``requests`` (ComfyUI imports it but does not list it; transformers 5 no longer brings it);
4. this pack's ``requirements.txt``.

The tests find a host at the default DEST; for another DEST set ``COMFYUI_DIR`` (and ``COMFYUI_PYTHON`` for
another Python). Nothing runs through a shell. An
existing non-empty DEST is never overwritten: ``--reuse`` keeps its tree and only (re)installs packages.
Measured here: extract 1.3 s, venv 3.8 s, torch + torchvision 56–87 s, the rest ~40 s; ~2.5 min in all.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = Path.home() / ".cache" / "vitruvian" / "ComfyUI"
SKIPPED_REQUIREMENTS = ("torch", "torchvision", "torchaudio")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache")


def _run(cmd: list[str], *, dry_run: bool, **kwargs) -> subprocess.CompletedProcess | None:
    print("$ " + " ".join(cmd), flush=True)
    if dry_run:
        return None
    return subprocess.run(cmd, check=True, **kwargs)


def is_git_dir(path: Path) -> bool:
    """True for a bare repository or a ``.git`` folder (not for a working tree)."""
    done = subprocess.run(["git", "--git-dir", str(path), "rev-parse", "--is-bare-repository"],
                          capture_output=True, text=True)
    return done.returncode == 0 and (path / "HEAD").is_file()


def present_paths(git_dir: Path, rev: str) -> tuple[list[str], list[str]]:
    """``(present, missing)`` file paths of ``rev``'s tree: a partial mirror may lack some blobs."""
    listing = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "-z", "--full-tree", rev],
                             capture_output=True, check=True).stdout
    entries = []  # (sha, path) of blobs; submodules ("commit") are skipped
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, path = record.split(b"\t", 1)
        _mode, kind, sha = meta.split()
        if kind == b"blob":
            entries.append((sha.decode(), path.decode("utf-8", "surrogateescape")))
    check = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "--batch-check"],
                           input="".join(f"{sha}\n" for sha, _ in entries).encode(), capture_output=True,
                           check=True).stdout.decode().splitlines()
    present, missing = [], []
    for (sha, path), line in zip(entries, check, strict=True):
        (missing if line.endswith("missing") else present).append(path)
    return present, missing


def extract_git(git_dir: Path, rev: str, dest: Path, *, dry_run: bool) -> list[str]:
    """Extract ``rev`` of ``git_dir`` into ``dest`` with ``git archive``; returns the skipped (missing) paths."""
    present, missing = present_paths(git_dir, rev)
    print(f"$ git --git-dir {git_dir} archive --format=tar {rev} -- <{len(present)} paths> | extract to {dest}")
    if missing:
        print(f"  skipping {len(missing)} blobs absent from the mirror: {', '.join(missing[:10])}"
              + (" …" if len(missing) > 10 else ""))
    if dry_run:
        return missing
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", rev, "--", *present],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        safe_extract(tar, dest)
    return missing


def safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """``extractall`` refusing members that would land outside ``dest`` (absolute paths, ``..``, links out).

    Python >= 3.11.4 / 3.10.12 has this as ``filter="data"``; older patch releases (Debian 12 ships 3.11.2) do
    not know the argument, so the same rule is checked here first.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        link = (target.parent / member.linkname).resolve() if member.issym() or member.islnk() else root
        if root not in (target, *target.parents) or root not in (link, *link.parents) or member.isdev():
            raise ValueError(f"setup_comfyui_host: archive member {member.name!r} would be written outside {dest}")
    tar.extractall(dest)


def copy_tree(source: Path, dest: Path, *, dry_run: bool) -> None:
    print(f"$ copy {source} → {dest} (without .git, .venv, caches)")
    if not dry_run:
        shutil.copytree(source, dest, ignore=COPY_IGNORE, symlinks=True, dirs_exist_ok=True)


def filtered_requirements(comfy_requirements: Path) -> list[str]:
    """ComfyUI's requirements without torch/torchvision/torchaudio (the pinned pair is installed first)."""
    kept = []
    for line in comfy_requirements.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", " "):
            name = name.split(sep, 1)[0]
        if name.strip().lower() not in SKIPPED_REQUIREMENTS:
            kept.append(line)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("source", type=Path, help="a ComfyUI working tree, or a git directory (bare or .git)")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"host folder (default {DEFAULT_DEST})")
    parser.add_argument("--rev", default="HEAD", help="revision to extract from a git directory (default HEAD)")
    parser.add_argument("--python", default=sys.executable, help="Python that creates the venv (default: this one)")
    parser.add_argument("--torch", default="torch==2.14.1", help="torch requirement (default torch==2.14.1)")
    parser.add_argument("--torchvision", default="torchvision==0.29.1", help="default torchvision==0.29.1")
    parser.add_argument("--reuse", action="store_true", help="DEST already holds ComfyUI: only (re)install packages")
    parser.add_argument("--no-install", action="store_true", help="only extract/copy the tree")
    parser.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    args = parser.parse_args(argv)

    source, dest = args.source.expanduser().resolve(), args.dest.expanduser().resolve()
    started = time.monotonic()
    if args.reuse:
        if not (dest / "main.py").is_file():
            parser.error(f"--reuse: {dest} has no main.py; drop --reuse to create the host there")
    else:
        if dest.exists() and any(dest.iterdir()):
            parser.error(f"{dest} exists and is not empty; pass --reuse to keep its tree and only install "
                         f"packages, or choose another --dest (this tool never deletes a host)")
        if (source / "main.py").is_file():
            copy_tree(source, dest, dry_run=args.dry_run)
            missing = []
        elif is_git_dir(source):
            missing = extract_git(source, args.rev, dest, dry_run=args.dry_run)
        else:
            parser.error(f"source {source} is neither a ComfyUI working tree (no main.py) nor a git directory")
        if not args.dry_run and not (dest / "main.py").is_file():
            print(f"error: {dest} has no main.py after extraction: is {source} a ComfyUI tree?", file=sys.stderr)
            return 1
        if missing and not args.dry_run:
            (dest / ".vitruvian-missing-blobs.txt").write_text("\n".join(missing) + "\n", encoding="utf-8")

    if args.no_install:
        print(f"done in {time.monotonic() - started:.1f} s (tree only): {dest}")
        return 0

    venv_python = dest / ".venv" / "bin" / "python"
    if not venv_python.is_file():
        _run([args.python, "-m", "venv", str(dest / ".venv")], dry_run=args.dry_run)
    pip = [str(venv_python), "-m", "pip", "install", "--disable-pip-version-check"]
    _run([*pip, args.torch, args.torchvision], dry_run=args.dry_run)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "comfyui-requirements.txt"
        comfy_requirements = (dest if not args.dry_run or dest.exists() else source) / "requirements.txt"
        if comfy_requirements.is_file():
            requirements.write_text("\n".join(filtered_requirements(comfy_requirements)) + "\n", encoding="utf-8")
            _run([*pip, "-r", str(requirements)], dry_run=args.dry_run)
        else:
            print(f"  ({comfy_requirements} not found: skipping ComfyUI's requirements)")
    _run([*pip, "requests"], dry_run=args.dry_run)
    _run([*pip, "-r", str(REPO_ROOT / "requirements.txt")], dry_run=args.dry_run)

    if not args.dry_run:
        record = {"source": str(source), "rev": args.rev, "torch": args.torch, "torchvision": args.torchvision,
                  "seconds": round(time.monotonic() - started, 1)}
        (dest / ".vitruvian-host.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"done in {time.monotonic() - started:.1f} s: COMFYUI_DIR={dest} COMFYUI_PYTHON={venv_python}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
