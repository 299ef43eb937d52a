"""Rebuild ``trainers/assets/clip_tokenizer`` (vocab.json, merges.txt, configs) from CLIP's BPE merge list.

    python tools/ship_clip_tokenizer.py PATH/TO/bpe_simple_vocab_16e6.txt.gz

The ``.txt.gz`` is OpenAI CLIP's (MIT); the ``open-clip-torch`` wheel carries a copy
(``pip download --no-deps open-clip-torch`` and unzip ``open_clip/bpe_simple_vocab_16e6.txt.gz``). The
result is identical to ComfyUI's ``comfy/sd1_tokenizer`` (tests/core/test_tokenizer_files.py checks it
when a host is around). The LICENSE file beside the shipped files is kept.
"""
from __future__ import annotations

import argparse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bpe_gz", type=Path, help="bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "trainers" / "assets" / "clip_tokenizer")
    args = parser.parse_args(argv)
    from vitruvian.core.tokenizer_files import convert_open_clip_bpe

    folder = convert_open_clip_bpe(args.bpe_gz, args.out)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
