"""The shipped T5 tokenizer (Flux.1 / SD3.5 / Chroma's T5-XXL): offline loading, known ids, ComfyUI parity, the tool."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vitruvian.core.errors import ConfigError, ModelNotFoundError

from ..comfy_host import REPO_ROOT

SHIPPED = REPO_ROOT / "trainers" / "assets" / "t5_tokenizer"
TOOL = REPO_ROOT / "tools" / "ship_t5_tokenizer.py"

#: Token ids of Google's T5 vocabulary (no BOS; </s> = 1 ends every sequence; unknown characters are <unk> = 2).
KNOWN_IDS = {
    "a photo of a cat": [3, 9, 1202, 13, 3, 9, 1712, 1],
    "A photo of a cat": [71, 1202, 13, 3, 9, 1712, 1],
    "": [1],
    "a woman holding an umbrella in the rain, cinematic lighting, 35mm film":
        [3, 9, 2335, 3609, 46, 18598, 16, 8, 3412, 6, 10276, 1225, 3598, 6, 3097, 635, 814, 1],
    "  leading, trailing  and   repeated   spaces  ": [1374, 6, 5032, 53, 11, 12171, 4856, 1],
    "日本語のプロンプト、中文提示词, 한국어 프롬프트": [3, 2, 6, 3, 2, 3, 2, 1],
}

#: Varied prompts for the ComfyUI comparison: unicode, normalisation, whitespace, punctuation, special-token text, long.
PROMPTS = [
    *KNOWN_IDS,
    " ",
    'A neon sign that reads "OPEN 24/7" above a diner; reflections on wet asphalt at night.',
    "Ünïcödé café naïve — “curly quotes” and ‘single’ ones",
    "emoji 😀🎨🐈 and symbols © ® ™ € £ ¥ § ¶ • … ½ ²",
    "full-width ＡＢＣ１２３ and ligature ﬁ ﬂ (NFKC)",
    "tabs\tand\nnewlines\r\nmixed",
    "punctuation!!! ??? ... --- ((weighted:1.3)) [bracket] {brace} <angle> |pipe| \\back/slash",
    "8k, ultra-detailed, masterpiece, best quality, HDR, f/1.8, 1/250s, ISO-400",
    "<extra_id_0> sentinel, </s> eos and <pad> pad written in the prompt",
    "CamelCaseWords and snake_case_words and kebab-case-words",
    "http://example.com/path?query=1&x=y #hashtag @mention",
    "numbers 0123456789 3.14159 -42 1e10 1,000,000",
    "Straße, Œuvre, Ångström, Ørsted, Ðáñïêl, İstanbul, ǅ",
    "Кириллица и ελληνικά και עברית و العربية",
    " ".join(["a very long prompt about a crowded market at dusk with lanterns, vendors and children"] * 12),
]


@pytest.fixture(scope="module")
def tok():
    from vitruvian.trainers.t5_tokenizer import load_t5_tokenizer

    return load_t5_tokenizer()


def _run_tool(*args, cwd=None):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


# ------------------------------------------------------------------------------------------ the shipped files


def test_shipped_files_are_small_licensed_and_packaged():
    import tomllib
    from fnmatch import fnmatch

    names = sorted(p.name for p in SHIPPED.iterdir())
    assert names == ["LICENSE", "tokenizer.json", "tokenizer_config.json"]
    total = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert total < 1_500_000, f"{SHIPPED} grew to {total:,} bytes"
    note = (SHIPPED / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in note and "comfy/text_encoders/t5_tokenizer" in note and "Google" in note
    globs = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vitruvian"]
    for path in SHIPPED.iterdir():
        assert any(fnmatch(path.relative_to(REPO_ROOT).as_posix(), g) for g in globs), path


def test_loads_offline_in_a_fresh_process(tmp_path):
    """HF_HUB_OFFLINE=1, an empty HF cache and an unreachable hub: the shipped files alone are enough."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    code = ("import json; from vitruvian.trainers.t5_tokenizer import load_t5_tokenizer; t = load_t5_tokenizer(); "
            "print(json.dumps([type(t).__name__, t.model_max_length, t('a photo of a cat').input_ids]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    name, max_length, ids = json.loads(done.stdout.splitlines()[-1])
    assert name.startswith("T5Tokenizer") and max_length == 512 and ids == KNOWN_IDS["a photo of a cat"]
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.json"))  # nothing fetched


@pytest.mark.parametrize("prompt", list(KNOWN_IDS))
def test_known_ids(tok, prompt):
    assert tok(prompt).input_ids == KNOWN_IDS[prompt]


def test_special_tokens_and_padding(tok):
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, len(tok)) == (0, 1, 2, 32100)
    assert tok.convert_tokens_to_ids("<extra_id_0>") == 32099 and tok.convert_tokens_to_ids("<extra_id_99>") == 32000
    batch = tok(["a photo of a cat", "A photo of a cat"], padding="max_length", max_length=10, truncation=True,
                return_tensors="pt")
    assert tuple(batch.input_ids.shape) == tuple(batch.attention_mask.shape) == (2, 10)
    assert batch.input_ids[0].tolist() == KNOWN_IDS["a photo of a cat"] + [0, 0]
    assert batch.input_ids[1].tolist() == KNOWN_IDS["A photo of a cat"] + [0, 0, 0]
    assert batch.attention_mask.sum(1).tolist() == [8, 7]
    long = tok(PROMPTS[-1], max_length=16, truncation=True).input_ids
    assert len(long) == 16 and long[-1] == 1  # truncation keeps the closing </s>


# ------------------------------------------------------------------------------------------ other folders, errors


def test_user_folder_and_diffusers_layout(tmp_path):
    from vitruvian.trainers.t5_tokenizer import find_t5_tokenizer_dir, load_t5_tokenizer

    flux = tmp_path / "flux"  # diffusers Flux: CLIP in tokenizer/, T5 in tokenizer_2/
    shutil.copytree(REPO_ROOT / "trainers" / "assets" / "clip_tokenizer", flux / "tokenizer")
    shutil.copytree(SHIPPED, flux / "tokenizer_2")
    assert find_t5_tokenizer_dir(flux) == flux / "tokenizer_2"
    assert find_t5_tokenizer_dir(flux / "tokenizer_2") == flux / "tokenizer_2"
    assert load_t5_tokenizer(flux)("a photo of a cat").input_ids == KNOWN_IDS["a photo of a cat"]


def test_folder_without_t5_files_names_what_was_expected(tmp_path):
    from vitruvian.trainers.t5_tokenizer import load_t5_tokenizer

    for folder in (tmp_path / "missing", REPO_ROOT / "trainers" / "assets" / "clip_tokenizer"):
        with pytest.raises(ModelNotFoundError) as info:
            load_t5_tokenizer(folder)
        message = str(info.value)
        assert "tokenizer.json" in message and "spiece.model" in message and "tokenizer_2" in message
        assert str(folder / "tokenizer_3") in info.value.searched


def test_files_that_are_not_t5_are_a_config_error(tmp_path):
    from transformers import CLIPTokenizerFast

    from vitruvian.trainers.t5_tokenizer import load_t5_tokenizer

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold T5 tokenizer files that transformers loads"):
        load_t5_tokenizer(broken)
    clip = tmp_path / "clip"  # CLIP's files with a tokenizer.json: found, but not T5's vocabulary
    CLIPTokenizerFast.from_pretrained(str(REPO_ROOT / "trainers" / "assets" / "clip_tokenizer"),
                                      local_files_only=True).save_pretrained(str(clip))
    with pytest.raises(ConfigError, match=r"load_t5_tokenizer: .*clip must hold T5"):
        load_t5_tokenizer(clip)


def test_missing_shipped_files(tmp_path, monkeypatch):
    from vitruvian.trainers import t5_tokenizer

    monkeypatch.setattr(t5_tokenizer, "SHIPPED_T5_TOKENIZER", tmp_path / "removed")  # a broken install
    with pytest.raises(ModelNotFoundError) as info:
        t5_tokenizer.load_t5_tokenizer()
    assert "reinstall the pack" in str(info.value) and str(tmp_path / "removed") in info.value.searched


# ------------------------------------------------------------------------------------------ ComfyUI parity


def _host_t5_folder() -> tuple[Path, Path]:
    """``(folder, python)``: the host's ``comfy/text_encoders/t5_tokenizer`` and its Python, or skip."""
    from ..comfy_host import HostUnavailable, find_host

    try:
        comfy_dir, python = find_host()
    except HostUnavailable as e:
        print(f"[t5 tokenizer] skipping: {e}")
        pytest.skip(str(e))
    folder = comfy_dir / "comfy" / "text_encoders" / "t5_tokenizer"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"no ComfyUI T5 tokenizer at {folder}")
    return folder, python


def test_ids_equal_comfyui_t5_tokenizer(tok):
    """ComfyUI's own folder, loaded with transformers in the host's Python (as its Flux/SD3 t5xxl tokenizer does),
    and read by the `tokenizers` library directly, gives the same ids for every prompt."""
    from tokenizers import Tokenizer

    folder, python = _host_t5_folder()
    code = ("import json, sys; from transformers import T5TokenizerFast; "
            "t = T5TokenizerFast.from_pretrained(sys.argv[1], local_files_only=True); "
            "print(json.dumps([t(p).input_ids for p in json.load(sys.stdin)]))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([str(python), "-c", code, str(folder)], input=json.dumps(PROMPTS), capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.splitlines()[-1])
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert len(PROMPTS) >= 20
    for prompt, host_ids in zip(PROMPTS, theirs):
        ours = tok(prompt).input_ids
        assert ours == host_ids, prompt
        assert ours == raw.encode(prompt).ids, prompt
    assert len(theirs[-1]) > 200  # the long prompt really is long (no truncation by default)


def test_tool_reproduces_the_shipped_files_from_comfyui(tmp_path):
    folder, _ = _host_t5_folder()
    done = _run_tool(folder.parents[2], "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verified" in done.stdout
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the LICENSE names the host's ComfyUI version
        assert (tmp_path / "out" / name).read_bytes() == (SHIPPED / name).read_bytes(), name


# ------------------------------------------------------------------------------------------ the tool


def test_tool_rebuilds_from_a_tokenizer_folder(tmp_path):
    """The tool also takes the tokenizer folder itself; on already-compact files it writes identical bytes."""
    done = _run_tool(SHIPPED, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (SHIPPED / "tokenizer.json").read_bytes()
    assert "Apache License" in (tmp_path / "out" / "LICENSE").read_text(encoding="utf-8")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def _fake_comfy(root: Path, tokenizer_json: str) -> Path:
    folder = root / "comfy" / "text_encoders" / "t5_tokenizer"
    folder.mkdir(parents=True)
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}', encoding="utf-8")
    return root


@pytest.mark.parametrize("case, expected", [
    ("missing", "is not a folder"),
    ("empty", "it has no comfy/ folder"),
    ("no_t5", "expected comfy/text_encoders/t5_tokenizer/ with tokenizer.json + tokenizer_config.json"),
    ("bad_json", "is not valid JSON"),
    ("wrong_vocab", "is not T5's SentencePiece vocabulary: expected a Unigram model with 32100 tokens"),
])
def test_tool_refuses_a_wrong_folder(tmp_path, case, expected):
    source = tmp_path / "src"
    if case == "empty":
        source.mkdir()
    elif case == "no_t5":
        (source / "comfy" / "sd1_tokenizer").mkdir(parents=True)
    elif case == "bad_json":
        _fake_comfy(source, "{oops")
    elif case == "wrong_vocab":  # e.g. a BPE (CLIP-like) tokenizer.json
        _fake_comfy(source, json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}))
    out = tmp_path / "out"
    done = _run_tool(source, "--out", out)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("ship_t5_tokenizer: ") and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
