"""Flag types and checks the subcommands share: finite floats, output paths checked before any work, guidance flags."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pipelines import MnistDiffusionPipeline

#: The extensions named in errors about image outputs (PIL writes more; any of them is accepted).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def finite_float(value: str) -> float:
    """An argparse `type`: a finite float (`nan` and `inf` are refused with the flag named by argparse)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number")
    return number


#: The largest `--seed` of the sampling commands: image i uses seed + i, which must stay a 64-bit torch seed.
MAX_SEED = 2**63 - 1


def seed_number(value: str) -> int:
    """An argparse `type`: a seed in 0..MAX_SEED (a larger one overflows torch's generator with no flag named)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if not 0 <= number <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{number} is out of range; expected an integer in 0..{MAX_SEED}")
    return number


def _check_parent(flag: str, path: Path) -> None:
    """Refuse `path` when its nearest existing ancestor is a file or cannot be written to."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is inside {str(parent)!r}, which is a file; expected a folder path.")
    # A file created and removed proves the folder writable where permission bits do not (/proc, read-only mounts).
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-check-"):
            pass
    except OSError as error:
        raise ValueError(
            f"{flag} {str(path)!r}: cannot write in {str(parent)!r} ({error.strerror}); expected a writable location."
        ) from None


def check_image_output(flag: str, path: str | os.PathLike) -> Path:
    """Check, before any work, that an image can be written to `path` (not a folder, an image extension PIL saves)."""
    import PIL.Image

    output = Path(path)
    if output.is_dir():
        raise ValueError(f"{flag} {str(output)!r} is a folder; expected an image file path such as samples.png.")
    formats = PIL.Image.registered_extensions()
    if formats.get(output.suffix.lower()) not in PIL.Image.SAVE:
        saveable = sorted(ext for ext, fmt in formats.items() if fmt in PIL.Image.SAVE and ext in IMAGE_EXTENSIONS)
        raise ValueError(f"{flag} {str(output)!r} has no image extension PIL can write; expected one of {saveable}.")
    _check_parent(flag, output)
    return output


def check_output_folder(flag: str, path: str | os.PathLike) -> Path:
    """Check, before any work, that `path` is a folder or can be created as one."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} is a file; expected a folder (new or existing).")
    _check_parent(flag, folder)
    return folder


def add_guidance_interval_arguments(parser: argparse.ArgumentParser) -> None:
    """`--guidance-start` / `--guidance-stop`, the pipeline's guidance interval, for the commands that sample."""
    parser.add_argument(
        "--guidance-start",
        type=finite_float,
        default=0.0,
        help="Start guiding after this fraction of the steps (default 0.0); unguided steps cost half.",
    )
    parser.add_argument(
        "--guidance-stop",
        type=finite_float,
        default=1.0,
        help="Stop guiding after this fraction of the steps (default 1.0: guide to the end).",
    )


def check_model_flags(args: argparse.Namespace) -> None:
    """`--fast` and `--model` exclude each other, and `--model` is a folder here or a Hub id (checked before work)."""
    from ..loading import check_model_argument

    if args.fast and args.model is not None:
        raise ValueError(f"--fast uses the shipped few-step model; got --model {args.model!r} too. Pass one of them.")
    check_model_argument(args.model)


def open_sampling_model(args: argparse.Namespace) -> tuple[MnistDiffusionPipeline, str, int, float]:
    r"""
    The pipeline of `--model` or `--fast` (with `--scheduler`), its name for reports and dataset cards, and the
    `--steps` and `--guidance-scale` to sample it with: 50 and 3.0 by default, with `--fast` the student's (its UNet
    the one distilled for the steps).
    """
    from ..loading import open_fast_pipeline, open_pipeline
    from ..pretrained import FAST_GUIDANCE_SCALE, FAST_STEPS, fast_unet_subfolder

    steps = args.steps if args.steps is not None else FAST_STEPS if args.fast else 50
    guidance_scale = (
        args.guidance_scale if args.guidance_scale is not None else FAST_GUIDANCE_SCALE if args.fast else 3.0
    )
    if args.fast:
        name = f"mnist-diffusion-fast ({fast_unet_subfolder(steps)})"
        return open_fast_pipeline(steps, args.scheduler), name, steps, guidance_scale
    return open_pipeline(args.model, args.scheduler), args.model or "mnist-diffusion (released)", steps, guidance_scale


class RefuseToken(argparse.Action):
    """`--token`: refused without repeating its value (the Hub token comes from `HF_TOKEN` or `hf auth login`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"{option_string} is not accepted: a token on the command line shows in process lists and shell "
            "history; set HF_TOKEN or run `hf auth login`."
        )
