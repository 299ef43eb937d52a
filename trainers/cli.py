"""``vitruvian-train <objective> [--config FILE.toml] [--set key=value ...]``."""

import argparse


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="vitruvian-train", description="Vitruvian headless trainer.")


def main(argv=None) -> int:
    build_parser().parse_args(argv)
    return 0
