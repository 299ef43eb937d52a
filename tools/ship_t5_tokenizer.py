"""Rebuild ``trainers/assets/t5_tokenizer`` (Google's T5 vocabulary: Flux.1, SD3.5 and Chroma's T5-XXL) from ComfyUI.

    python tools/ship_t5_tokenizer.py PATH/TO/ComfyUI        # or PATH/TO/ComfyUI/comfy/text_encoders/t5_tokenizer

ComfyUI's ``comfy/text_encoders/t5_tokenizer`` holds Google's T5 SentencePiece vocabulary (Apache-2.0) in the
Hugging Face ``tokenizers`` format; ComfyUI tokenizes t5xxl prompts for Flux and SD3 with it. Only data files are
taken, no ComfyUI code: ``tokenizer.json`` (re-serialised without indentation: the same JSON, 2.4 MB → 1.4 MB)
and ``tokenizer_config.json`` (verbatim: special tokens, ``model_max_length`` 512, ``legacy`` false) are all that
``transformers.T5TokenizerFast.from_pretrained(folder, local_files_only=True)`` needs; ``special_tokens_map.json``
repeats the config's special tokens and is left out. A ``LICENSE`` note saying where the files come from is
written beside them. Every file is written atomically. When transformers is installed the shipped folder is
loaded and must give the source folder's token ids for a set of prompts.

Exit status 0 on success, 2 (with a one-line reason on stderr) for a folder that is not T5's tokenizer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "trainers" / "assets" / "t5_tokenizer"
COMFY_SUBFOLDER = Path("comfy") / "text_encoders" / "t5_tokenizer"
FILES = ("tokenizer.json", "tokenizer_config.json")
#: T5's vocabulary: 32,000 SentencePiece pieces (<pad>=0, </s>=1, <unk>=2) then 100 sentinels <extra_id_99>…<extra_id_0>.
VOCAB_SIZE = 32100
HEAD = ("<pad>", "</s>", "<unk>")
CHECK_PROMPTS = (
    "a photo of a cat",
    "A portrait of a woman, 85mm, f/1.8, golden hour -- bokeh!",
    "Ünïcödé café naïve — “quotes” 日本語 😀",
    "  two  spaces\tand a tab\nand a newline ",
    "<extra_id_0> sentinel and </s> inside",
)

LICENSE_TEXT = """\
The files tokenizer.json and tokenizer_config.json in this folder are Google's T5 SentencePiece vocabulary
(32,000 pieces plus the 100 sentinel tokens <extra_id_0> ... <extra_id_99>; <pad> = 0, </s> = 1, <unk> = 2),
from google-research/text-to-text-transfer-transformer, converted from its sentencepiece model to the
Hugging Face `tokenizers` format. The T5-XXL text encoder of Flux.1, Stable Diffusion 3 / 3.5 and Chroma
uses this vocabulary.

They were copied from comfy/text_encoders/t5_tokenizer of ComfyUI{version} (data files only, no ComfyUI
code) by `python tools/ship_t5_tokenizer.py <ComfyUI folder>`; tokenizer.json was re-serialised without
indentation (the same JSON content). sha256 of the source files:
{hashes}

Licence of the vocabulary:

Copyright The T5 Authors (Google LLC).

Licensed under the Apache License, Version 2.0 (the "License");
you may not use these files except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
"""


class ShipError(Exception):
    """The source folder is not ComfyUI's T5 tokenizer; ``str(exc)`` says what was expected."""


def find_source(path: Path) -> Path:
    """The tokenizer folder: ``path/comfy/text_encoders/t5_tokenizer``, or ``path`` itself if it holds the files."""
    if not path.is_dir():
        raise ShipError(f"{path} is not a folder; give a ComfyUI folder (the one with main.py and comfy/)")
    for folder in (path / COMFY_SUBFOLDER, path):
        if all((folder / name).is_file() for name in FILES):
            return folder
    missing = [name for name in FILES if not (path / COMFY_SUBFOLDER / name).is_file()]
    hint = "" if (path / "comfy").is_dir() else " (it has no comfy/ folder: is it a ComfyUI checkout?)"
    raise ShipError(f"{path} is not a ComfyUI folder with the T5 tokenizer{hint}: expected "
                    f"{COMFY_SUBFOLDER.as_posix()}/ with {' + '.join(FILES)}; missing {', '.join(missing)}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShipError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ShipError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_source(folder: Path) -> tuple[dict, dict]:
    """Parse and check ``tokenizer.json`` and ``tokenizer_config.json``: a Unigram model with T5's 32,100 tokens."""
    tokenizer, config = _read_json(folder / "tokenizer.json"), _read_json(folder / "tokenizer_config.json")
    model = tokenizer.get("model") if isinstance(tokenizer.get("model"), dict) else {}
    vocab = model.get("vocab") if isinstance(model.get("vocab"), list) else []
    pieces = [entry[0] if isinstance(entry, list) and entry else None for entry in vocab]
    found = f"a {model.get('type', 'model-less')} tokenizer with {len(vocab)} tokens starting {pieces[:3]}"
    if (model.get("type") != "Unigram" or len(vocab) != VOCAB_SIZE or tuple(pieces[:3]) != HEAD
            or pieces[-1] != "<extra_id_0>"):
        raise ShipError(f"{folder / 'tokenizer.json'} is not T5's SentencePiece vocabulary: expected a Unigram "
                        f"model with {VOCAB_SIZE} tokens starting {list(HEAD)} and ending <extra_id_0>, got {found}")
    if not str(config.get("tokenizer_class", "")).startswith("T5Tokenizer"):
        raise ShipError(f"{folder / 'tokenizer_config.json'}: tokenizer_class must be T5Tokenizer, "
                        f"got {config.get('tokenizer_class')!r}")
    return tokenizer, config


def _comfy_version(folder: Path) -> str:
    for root in folder.parents[:3]:
        version_file = root / "comfyui_version.py"
        if version_file.is_file():
            match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text(encoding="utf-8"))
            return f" {match.group(1)}" if match else ""
    return ""


def ship(source: Path, out: Path) -> list[Path]:
    """Check ``source`` and write the shipped files into ``out``; returns the paths written."""
    from vitruvian.core.atomic import atomic_copy, atomic_write_text

    tokenizer, _ = check_source(source)
    compact = json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":"))
    if json.loads(compact) != tokenizer:  # cannot happen with Python's json (floats round-trip), but cheap
        raise ShipError("re-serialising tokenizer.json changed its content")
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out / "tokenizer.json", compact),
               atomic_copy(source / "tokenizer_config.json", out / "tokenizer_config.json")]
    hashes = "\n".join(f"  {hashlib.sha256((source / name).read_bytes()).hexdigest()}  {name}" for name in FILES)
    written.append(atomic_write_text(out / "LICENSE", LICENSE_TEXT.format(version=_comfy_version(source),
                                                                          hashes=hashes)))
    return written


def verify(source: Path, out: Path) -> str:
    """Load both folders with transformers (offline) and compare token ids; returns a one-line result."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import T5TokenizerFast
    except ImportError:
        return "transformers is not installed: skipped loading the shipped folder"
    ours = T5TokenizerFast.from_pretrained(str(out), local_files_only=True)
    theirs = T5TokenizerFast.from_pretrained(str(source), local_files_only=True)
    for prompt in CHECK_PROMPTS:
        if ours(prompt).input_ids != theirs(prompt).input_ids:
            raise ShipError(f"the shipped folder tokenizes {prompt!r} differently from {source}")
    return f"verified: {len(CHECK_PROMPTS)} prompts give the source's ids; 'a photo of a cat' -> {ours(CHECK_PROMPTS[0]).input_ids}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comfyui", type=Path, help="a ComfyUI folder (or its comfy/text_encoders/t5_tokenizer)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        source = find_source(args.comfyui.expanduser())
        written = ship(source, args.out)
        result = verify(source, args.out)
    except ShipError as exc:
        print(f"ship_t5_tokenizer: {exc}", file=sys.stderr)
        return 2
    extra = sorted(p.name for p in args.out.iterdir() if p.is_file() and p not in written)
    total = sum(p.stat().st_size for p in written)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"{args.out}: {total:,} bytes in all; {result}")
    if extra:
        print(f"note: {args.out} also holds {extra}, which this tool does not write; remove them if stale")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
