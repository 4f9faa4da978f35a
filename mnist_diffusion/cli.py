"""The `mnist-diffusion` command line: one subcommand per module of `mnist_diffusion.commands`."""

from __future__ import annotations

import argparse
import sys

from .commands import analyze, demo, evaluate, generate, generate_dataset, img2img, inpaint, push, visualize

# Each module adds its subcommand with `register(subparsers)`; the order is the order of `mnist-diffusion --help`.
COMMANDS = [generate, generate_dataset, img2img, inpaint, evaluate, analyze, visualize, push, demo]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `mnist-diffusion` command."""
    parser = argparse.ArgumentParser(
        prog="mnist-diffusion",
        description="Generate, evaluate, visualise, share and demo MNIST-family diffusion models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mnist-diffusion` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        print(f"mnist-diffusion: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
