"""Shared onnxruntime sessions: provider choice, cache by (path, mtime, size), clear errors."""

from __future__ import annotations

import os

import pytest
import torch

from vitruvian.core.errors import ModelNotFoundError
from vitruvian.core.onnx_runtime import PROVIDERS_ENV, choose_providers, clear_sessions, get_session


def _export(path, scale: float) -> None:
    class Scale(torch.nn.Module):
        def forward(self, x):
            return x * scale

    torch.onnx.export(Scale(), (torch.ones(1, 3),), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)


def _run(session, value=1.0) -> float:
    return float(session.run(None, {"x": torch.full((1, 3), value).numpy()})[0][0, 0])


@pytest.fixture(autouse=True)
def _fresh():
    clear_sessions()
    yield
    clear_sessions()


def test_value_provider_choice(monkeypatch):
    import onnxruntime

    monkeypatch.delenv(PROVIDERS_ENV, raising=False)
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else None
    assert choose_providers()[-1] == "CPUExecutionProvider"
    assert (choose_providers()[0] == expected) if expected else choose_providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv(PROVIDERS_ENV, "CPUExecutionProvider")
    assert choose_providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv(PROVIDERS_ENV, "NoSuchExecutionProvider")
    with pytest.raises(ValueError, match="must name providers this onnxruntime offers .* got NoSuchExecutionProvider"):
        choose_providers()


def test_value_cached_and_reloaded_when_rewritten(tmp_path, caplog):
    path = tmp_path / "scale.onnx"
    _export(path, 2.0)
    with caplog.at_level("INFO", logger="vitruvian"):
        first, provider = get_session(path)
        again, _ = get_session(path)
    assert first is again and _run(first) == 2.0
    assert provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert sum("onnxruntime runs on" in r.message for r in caplog.records) <= 1  # logged once at most
    _export(path, 3.0)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new mtime even on coarse clocks
    fresh, _ = get_session(path)
    assert fresh is not first and _run(fresh) == 3.0


def test_exception_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"ONNX model 'nope.onnx' not found; searched:"):
        get_session(tmp_path / "nope.onnx")
