"""``tools/setup_comfyui_host.py``: tree extraction and requirement filtering (no package is installed here)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest

from .comfy_host import REPO_ROOT


@pytest.fixture(scope="module")
def setup_tool():
    spec = importlib.util.spec_from_file_location("setup_comfyui_host", REPO_ROOT / "tools" / "setup_comfyui_host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def partial_mirror(tmp_path):
    """A git checkout of a fake ComfyUI whose ``sub/big.bin`` blob was removed (like a partial mirror)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "src"
    (repo / "sub").mkdir(parents=True)
    (repo / "main.py").write_text("print('comfy')\n")
    (repo / "sub" / "big.bin").write_text("large example file\n")
    (repo / "requirements.txt").write_text("torch\ntorchvision>=0.1\ntorchaudio\nnumpy>=1.25  # arrays\nkornia\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD:sub/big.bin"], capture_output=True, text=True,
                         check=True).stdout.strip()
    (repo / ".git" / "objects" / sha[:2] / sha[2:]).unlink()
    return repo / ".git"


def test_extract_git_skips_missing_blobs(setup_tool, partial_mirror, tmp_path):
    dest = tmp_path / "host"
    assert setup_tool.main([str(partial_mirror), "--dest", str(dest), "--no-install"]) == 0
    assert (dest / "main.py").read_text() == "print('comfy')\n"
    assert not (dest / "sub" / "big.bin").exists()
    assert (dest / ".vitruvian-missing-blobs.txt").read_text().split() == ["sub/big.bin"]


def test_filtered_requirements_drop_torch(setup_tool, partial_mirror, tmp_path):
    kept = setup_tool.filtered_requirements(partial_mirror.parent / "requirements.txt")
    assert kept == ["numpy>=1.25  # arrays", "kornia"]


def test_never_overwrites_and_dry_run_changes_nothing(setup_tool, partial_mirror, tmp_path, capsys):
    dest = tmp_path / "existing"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        setup_tool.main([str(partial_mirror), "--dest", str(dest)])
    assert "exists and is not empty" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert setup_tool.main([str(partial_mirror), "--dest", str(fresh), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not fresh.exists()
    assert "torch==2.14.1 torchvision==0.29.1" in out and "-m venv" in out and "requests" in out


def test_safe_extract_refuses_members_outside_dest(setup_tool, tmp_path):
    """The host is extracted safely on every Python (``filter="data"`` is missing before 3.11.4 / 3.10.12)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("ok/a.txt", "../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar, pytest.raises((ValueError, tarfile.TarError)):
        setup_tool.safe_extract(tar, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists()
